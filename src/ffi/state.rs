//! Decoding states through the C ABI (docs/decoding.md): create from a context, append
//! tokens to several sequences at once (the output is a forward output over the new
//! positions), copy, remove and truncate sequences, read their lengths.
use super::abi_struct::*;
use super::args::*;
use super::buffers::*;
use super::context::*;
use super::enums::*;
use super::forward::*;
use super::model::*;
use super::status::*;
use crate::error::{err, ErrorKind, Result};
use crate::model::decode::{Append, DecodeState};
use crate::model::Experiment;
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard, TryLockError};

/// A decoding state (opaque): up to `n_seq_max` sequences with their keys and values at
/// every layer. It keeps the model alive (the context may be freed first). Used by one thread
/// at a time: a call while another thread's call runs fails with `MC_ERR_INVALID_ARGUMENT`.
/// Free with `mc_state_free`.
pub struct mc_state {
    inner: Mutex<DecodeState>,
}

/// New tokens for several sequences of a state; fill with
/// `mc_append_request_init(&r, sizeof r)`. Every pointer is only read during the call.
#[repr(C)]
pub struct mc_append_request {
    /// The size the caller was compiled with, written by `mc_append_request_init`.
    pub struct_size: u32,
    /// The type of `tokens`' elements: `MC_TOKENS_INT64` (default) or `MC_TOKENS_UINT32`.
    pub token_type: mc_token_type,
    /// One sequence id per row, distinct, each in `0 .. n_seq_max`.
    pub seq_ids: *const i32,
    pub n_seq_ids: usize,
    /// Every row's new tokens, concatenated: row `r`'s are `tokens[offsets[r] .. offsets[r + 1]]`
    /// (at least one each).
    pub tokens: *const c_void,
    pub n_tokens: usize,
    /// `n_seq_ids + 1` offsets: 0, non-decreasing, the last equal to `n_tokens`.
    pub offsets: *const usize,
    pub n_offsets: usize,
    /// Activations to keep, as in `mc_forward_request`; they cover the new positions only.
    pub activations: *const mc_activation,
    pub layers: *const i32,
    pub n_activations: usize,
    /// Edits of the new positions, as in `mc_forward_request`; edited keys and values are
    /// what the state caches.
    pub edits: *const mc_edit,
    pub n_edits: usize,
    /// `MC_LOGITS_ALL` (default): `[rows, T_max, vocab]`; `MC_LOGITS_LAST`: each row's last new
    /// position, `[rows, 1, vocab]`; `MC_LOGITS_NONE`.
    pub logits: mc_logits_choice,
    /// Must be zero.
    pub reserved: u32,
}

impl AbiStruct for mc_append_request {
    const NAME: &'static str = "mc_append_request";
    const MIN_SIZE: usize = 104;
    unsafe fn write_defaults(p: *mut Self) {
        (&raw mut (*p).struct_size).write(std::mem::size_of::<Self>() as u32);
        (&raw mut (*p).token_type).write(MC_TOKENS_INT64);
        (&raw mut (*p).seq_ids).write(std::ptr::null());
        (&raw mut (*p).n_seq_ids).write(0);
        (&raw mut (*p).tokens).write(std::ptr::null());
        (&raw mut (*p).n_tokens).write(0);
        (&raw mut (*p).offsets).write(std::ptr::null());
        (&raw mut (*p).n_offsets).write(0);
        (&raw mut (*p).activations).write(std::ptr::null());
        (&raw mut (*p).layers).write(std::ptr::null());
        (&raw mut (*p).n_activations).write(0);
        (&raw mut (*p).edits).write(std::ptr::null());
        (&raw mut (*p).n_edits).write(0);
        (&raw mut (*p).logits).write(MC_LOGITS_ALL);
        (&raw mut (*p).reserved).write(0);
    }
}

/// The state, locked for this call; a call already running on another thread is an error.
///
/// # Safety
/// `state` is NULL or a live state for `'a`.
unsafe fn lock<'a>(state: *mut mc_state) -> Result<MutexGuard<'a, DecodeState>> {
    let s: &'a mc_state = arg_ref(state, "state")?;
    match s.inner.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(err(
            ErrorKind::InvalidArgument,
            "the state is in use by another thread (a state is used by one thread at a time)",
        )),
    }
}

fn seq_arg(seq: i32, what: &str) -> Result<usize> {
    usize::try_from(seq).map_err(|_| {
        err(
            ErrorKind::InvalidArgument,
            format!("{what}: sequence id {seq} is negative"),
        )
    })
}

/// Fills `*req` for the caller's `size` (pass `sizeof *req`): zeroes all `size` bytes, writes
/// the defaults (no rows, int64 ids, every position's logits) and sets `struct_size = size`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`req`), `MC_ERR_INVALID_ARGUMENT` (`size` below the struct's
/// first size; nothing is written), `MC_ERR_PANIC`.
///
/// # Safety
/// `req` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_append_request_init(
    req: *mut mc_append_request,
    size: usize,
) -> mc_status {
    init_struct(req, size)
}

/// Creates a decoding state for up to `n_seq_max` sequences (1 ..= 4096; ids `0 ..
/// n_seq_max`) on the context's model (created with the defaults if the context has none).
/// Nothing is allocated per token until tokens are appended: each costs
/// `n_layers * n_heads * (d_head_qk + d_head_v)` elements of the model's dtype per sequence,
/// in buffers that double as a sequence grows (at most its window). Free with `mc_state_free`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `out`), `MC_ERR_INVALID_ARGUMENT` (`n_seq_max` out of
/// range), `MC_ERR_UNSUPPORTED` (a tokenizer-only context), the errors of `mc_create_model`,
/// `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`.
///
/// # Safety
/// `ctx` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_state_new(
    ctx: *const mc_context,
    n_seq_max: usize,
    out: *mut *mut mc_state,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let ctx = ctx_arg(ctx)?;
        let state = DecodeState::new(ctx.get_or_create_model(None)?, n_seq_max)?;
        let boxed = Box::new(mc_state {
            inner: Mutex::new(state),
        });
        write_out(out, Box::into_raw(boxed));
        Ok(())
    })
}

/// Frees a state and every sequence's cache (NULL: no-op). Forward outputs and tensors taken
/// from it stay valid.
///
/// Returns no status; never fails.
///
/// # Safety
/// `state` is NULL or from `mc_state_new`, not freed before, and no call on it is running.
#[no_mangle]
pub unsafe extern "C" fn mc_state_free(state: *mut mc_state) {
    if !state.is_null() {
        let _ =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(Box::from_raw(state))));
    }
}

/// Appends each row's tokens to its sequence (different counts per row; an empty or removed
/// sequence starts at position 0) and returns, in `*out` (free with `mc_forward_output_free`),
/// the logits as `req->logits` chooses and the requested activations, each over the new
/// positions `[rows, T_max, ...]` with rows right-padded to the longest (padding positions
/// are not meaningful); `attn.k`/`attn.v` are the new keys and values, `attn.qk_logits`/
/// `attn.qk_probs` the new queries over every key `[rows, T_max, S, heads]` with
/// `S = max(cached length) + T_max`, key `s` being position `s` of the row's sequence. Edits
/// select new positions only (an index past `T_max` on a position axis is an error) and what
/// they change is cached. A sequence that would pass the context window is an error naming it,
/// and nothing is appended to any row.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`state`, `req`, `out`, an array NULL with a non-zero
/// length), `MC_ERR_INVALID_ARGUMENT` (`req->struct_size` below the first size; no rows; a
/// sequence id negative, out of range or repeated; a row without tokens; offsets not one more
/// than the rows, not starting at 0, decreasing or not ending at `n_tokens`; a sequence passing the
/// window; the state in use by another thread; every argument error of `mc_forward`'s
/// activations and edits), `MC_ERR_TOKEN` (an id outside the vocabulary), `MC_ERR_SHAPE`,
/// `MC_ERR_DEVICE` (an edit's operand), `MC_ERR_UNSUPPORTED` (a non-zero byte past the
/// library's size of `req` or an edit), `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`. On every error
/// the state is unchanged.
///
/// # Safety
/// `state` NULL or live; `req` NULL or valid with the arrays it points to; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_state_append(
    state: *mut mc_state,
    req: *const mc_append_request,
    out: *mut *mut mc_forward_output,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let mut st = lock(state)?;
        let r = read_request(req, "request")?;
        let seqs = arg_slice(r.seq_ids, r.n_seq_ids, "request->seq_ids")?;
        let offsets = arg_slice(r.offsets, r.n_offsets, "request->offsets")?;
        let ids = ids_arg_typed(r.tokens, r.n_tokens, r.token_type)?;
        let rows = split_rows(&ids, offsets, seqs.len(), "request")?;
        let rows = seqs
            .iter()
            .zip(rows)
            .enumerate()
            .map(|(i, (&s, tokens))| {
                Ok(Append {
                    seq: seq_arg(s, &format!("request->seq_ids[{i}]"))?,
                    tokens,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let n_layers = st.model().config().n_layers;
        let acts = (r.activations, r.layers, r.n_activations);
        let wanted = keys_arg(acts, 0..n_layers, ("activations", "layers"))?;
        let x = Experiment {
            edits: edits_arg(r.edits, r.n_edits)?,
            logits: logits_arg(r.logits, r.reserved)?,
            ..Default::default()
        };
        let inner = st.append(&rows, &wanted, &x)?;
        write_out(out, Box::into_raw(Box::new(mc_forward_output { inner })));
        Ok(())
    })
}

/// Copies sequence `src` into `dst` (a fork; whatever `dst` held is replaced). The copy is
/// full: it costs `length(src)` tokens of cache, and the two evolve independently.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`state`), `MC_ERR_INVALID_ARGUMENT` (an id negative or out
/// of range, `src` empty or removed, the state in use by another thread),
/// `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`.
///
/// # Safety
/// `state` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mc_state_copy(state: *mut mc_state, src: i32, dst: i32) -> mc_status {
    guard(|| {
        lock(state)?.copy(
            seq_arg(src, "copy source")?,
            seq_arg(dst, "copy destination")?,
        )
    })
}

/// Empties a sequence and frees its cache (removing an empty one is allowed).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`state`), `MC_ERR_INVALID_ARGUMENT` (`seq` negative or out
/// of range, the state in use by another thread), `MC_ERR_PANIC`.
///
/// # Safety
/// `state` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mc_state_remove(state: *mut mc_state, seq: i32) -> mc_status {
    guard(|| lock(state)?.remove(seq_arg(seq, "remove")?))
}

/// Keeps the first `length` tokens of a sequence (0 empties it); the next append continues
/// from there.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`state`), `MC_ERR_INVALID_ARGUMENT` (`seq` negative or out
/// of range, `length` negative or above the sequence's length, the state in use by another
/// thread), `MC_ERR_PANIC`.
///
/// # Safety
/// `state` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn mc_state_truncate(
    state: *mut mc_state,
    seq: i32,
    length: i64,
) -> mc_status {
    guard(|| lock(state)?.truncate(seq_arg(seq, "truncate")?, length))
}

/// The number of tokens sequence `seq` holds (0 when empty or removed).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`state`, `out`), `MC_ERR_INVALID_ARGUMENT` (`seq` negative or
/// out of range, the state in use by another thread), `MC_ERR_PANIC`.
///
/// # Safety
/// `state` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_state_length(
    state: *mut mc_state,
    seq: i32,
    out: *mut i64,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let n = lock(state)?.len(seq_arg(seq, "length")?)?;
        write_out(out, n);
        Ok(())
    })
}
