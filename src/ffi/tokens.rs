//! The token entry points. Every buffer is the caller's; nothing here hands
//! out memory to free. Texts are (pointer, length) pairs: they may contain NUL bytes, must be
//! UTF-8, and a NULL pointer with length 0 is the empty text.
//!
//! Size probe, for every output whose length is not known in advance: a NULL buffer with
//! capacity 0 returns `MC_OK` and writes the needed length; a capacity below the needed length
//! (or a NULL buffer with a non-zero capacity) returns `MC_ERR_BUFFER_TOO_SMALL` and writes the
//! needed length; the buffer itself is then untouched. Token ids never outnumber the input's
//! bytes, so a capacity of `text_len` tokens always suffices for `mc_encode`.
use super::args::*;
use super::buffers::*;
use super::context::*;
use super::status::*;
use crate::error::Result;
use crate::tokenizer::{Rank, Tokenizer};
use std::ffi::c_char;

/// The texts of a (pointers, lengths, count) triple.
///
/// # Safety
/// `texts` and `lens` are NULL or valid for `n` reads; each `texts[i]` is NULL or valid for
/// `lens[i]` bytes.
unsafe fn arg_texts<'a>(
    texts: *const *const c_char,
    lens: *const usize,
    n: usize,
) -> Result<Vec<&'a [u8]>> {
    let ptrs = arg_slice(texts, n, "texts")?;
    let lens = arg_slice(lens, n, "text_lens")?;
    ptrs.iter()
        .zip(lens)
        .enumerate()
        .map(|(i, (&p, &len))| {
            if p.is_null() && len > 0 {
                arg_slice(p as *const u8, len, &format!("texts[{i}]"))
            } else {
                arg_slice(p as *const u8, len, "texts[i]")
            }
        })
        .collect()
}

unsafe fn tokenizer<'a>(ctx: *const mc_context) -> Result<&'a Tokenizer> {
    ctx_arg(ctx)?.tokenizer()
}

/// Encodes `text` (`text_len` bytes of UTF-8) with the context's encoding, as
/// transformer-debugger's `encode`: the special token `<|endoftext|>` becomes its id; any other special token of the
/// encoding in the text fails with `MC_ERR_TOKEN` naming it (Python tiktoken raises there).
/// The ids are exactly Python tiktoken's. Long texts are encoded on all cores.
///
/// `tokens`: caller-owned, `capacity` ids; `*n_tokens` receives the count. Size probe: `tokens`
/// NULL with `capacity` 0 returns `MC_OK` and only the count; a smaller capacity returns
/// `MC_ERR_BUFFER_TOO_SMALL`, the count, and leaves `tokens` untouched. A capacity of
/// `text_len` always suffices (every token covers at least one byte).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `n_tokens`, or `text` NULL with `text_len` > 0),
/// `MC_ERR_INVALID_ARGUMENT` (not UTF-8; the message gives the offset of the first bad byte),
/// `MC_ERR_TOKEN`, `MC_ERR_BUFFER_TOO_SMALL`, `MC_ERR_OUT_OF_MEMORY` (the working buffer),
/// `MC_ERR_PANIC`. Nothing to free. Thread-safe: may run concurrently with any call on the same
/// context except `mc_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `text` is NULL or valid for `text_len` bytes; `tokens` is
/// NULL or valid for `capacity` writes; `n_tokens` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_encode(
    ctx: *const mc_context,
    text: *const c_char,
    text_len: usize,
    tokens: *mut u32,
    capacity: usize,
    n_tokens: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(n_tokens, "n_tokens")?;
        let tok = tokenizer(ctx)?;
        let ids = tok.encode_bytes(arg_slice(text as *const u8, text_len, "text")?)?;
        write_sized(&ids, tokens, capacity, n_tokens, "tokens")?;
        Ok(())
    })
}

/// Decodes `n` token ids to their exact bytes (Python's `decode_bytes`): no NUL terminator, no
/// replacement of partial UTF-8 sequences. An id outside the vocabulary (at or above
/// `MC_DIM_VOCAB_SIZE`, or one of the unused ids below it) fails with `MC_ERR_TOKEN` naming it
/// and its index.
///
/// `bytes`: caller-owned, `capacity` bytes; `*n_bytes` receives the length. Size probe as for
/// `mc_encode` (`bytes` NULL with `capacity` 0: `MC_OK` and the length only; too small:
/// `MC_ERR_BUFFER_TOO_SMALL`, the length, `bytes` untouched).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `n_bytes`, or `tokens` NULL with `n` > 0),
/// `MC_ERR_TOKEN`, `MC_ERR_BUFFER_TOO_SMALL`, `MC_ERR_OUT_OF_MEMORY` (the working buffer),
/// `MC_ERR_PANIC`. Nothing to free. Thread-safe: may run concurrently with any call on the same
/// context except `mc_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `tokens` is NULL or valid for `n` reads; `bytes` is NULL or
/// valid for `capacity` writes; `n_bytes` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_decode(
    ctx: *const mc_context,
    tokens: *const u32,
    n: usize,
    bytes: *mut c_char,
    capacity: usize,
    n_bytes: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(n_bytes, "n_bytes")?;
        let tok = tokenizer(ctx)?;
        let out = tok.decode(arg_slice(tokens, n, "tokens")?)?;
        let bytes = bytes as *mut u8;
        write_sized(&out, bytes, capacity, n_bytes, "bytes")?;
        Ok(())
    })
}

/// The exact bytes of one token id (Python's `decode_single_token_bytes`; transformer-debugger's
/// `decode_token` without its U+FFFD replacement): possibly a partial UTF-8 sequence, no NUL
/// terminator. An id outside the vocabulary fails with `MC_ERR_TOKEN` naming it.
///
/// `bytes`: caller-owned, `capacity` bytes; `*n_bytes` receives the length; size probe as for
/// `mc_decode`. Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `n_bytes`), `MC_ERR_TOKEN`,
/// `MC_ERR_BUFFER_TOO_SMALL`, `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`. Nothing to free.
/// Thread-safe: may run concurrently with any call on the same context except `mc_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `bytes` is NULL or valid for `capacity` writes; `n_bytes`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_decode_token(
    ctx: *const mc_context,
    token: u32,
    bytes: *mut c_char,
    capacity: usize,
    n_bytes: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(n_bytes, "n_bytes")?;
        let tok = tokenizer(ctx)?;
        let out = tok.decode_token(token)?;
        let bytes = bytes as *mut u8;
        write_sized(out, bytes, capacity, n_bytes, "bytes")?;
        Ok(())
    })
}

/// transformer-debugger's `encode_token_str`: the one id that `text` (`text_len` bytes of UTF-8) encodes
/// to. Text that encodes to zero or several ids fails with `MC_ERR_TOKEN`, the message showing
/// the ids; `<|endoftext|>` gives its id; other special tokens fail as in `mc_encode`.
///
/// `*token` is written only on success. Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `token`, or
/// `text` NULL with `text_len` > 0), `MC_ERR_INVALID_ARGUMENT` (not UTF-8, with the offset),
/// `MC_ERR_TOKEN`, `MC_ERR_PANIC`. Thread-safe: may run concurrently with any call on the
/// same context except `mc_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `text` is NULL or valid for `text_len` bytes; `token` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_encode_token_str(
    ctx: *const mc_context,
    text: *const c_char,
    text_len: usize,
    token: *mut u32,
) -> mc_status {
    guard(|| {
        arg_out(token, "token")?;
        let tok = tokenizer(ctx)?;
        let id = tok.encode_token_str_bytes(arg_slice(text as *const u8, text_len, "text")?)?;
        write_out(token, id);
        Ok(())
    })
}

/// transformer-debugger's `decode_token_list`: the exact bytes of each of `n` ids, back to back in `bytes`
/// (the same bytes as `mc_decode`), with `offsets` (caller-owned, `n + 1` entries) delimiting
/// them: id `i` is `bytes[offsets[i] .. offsets[i + 1]]`, `offsets[n]` = `*n_bytes`.
///
/// Size probe on `bytes` as for `mc_decode`; `offsets` (`n_offsets` entries, at least `n + 1`)
/// is written only when `bytes` is, but must never be NULL. An id outside the vocabulary fails
/// with `MC_ERR_TOKEN` naming it and its index.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `offsets`, `n_bytes`, or `tokens` NULL with `n` > 0),
/// `MC_ERR_TOKEN`, `MC_ERR_BUFFER_TOO_SMALL` (`bytes` too small: `*n_bytes` is the length
/// needed; or `n_offsets` below `n + 1`: nothing written), `MC_ERR_OUT_OF_MEMORY`,
/// `MC_ERR_PANIC`. Nothing to free.
/// Thread-safe: may run concurrently with any call on the same context except `mc_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `tokens` is NULL or valid for `n` reads; `bytes` is NULL or
/// valid for `capacity` writes; `offsets` is NULL or valid for `n_offsets` writes; `n_bytes` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_decode_token_list(
    ctx: *const mc_context,
    tokens: *const u32,
    n: usize,
    bytes: *mut c_char,
    capacity: usize,
    offsets: *mut usize,
    n_offsets: usize,
    n_bytes: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(n_bytes, "n_bytes")?;
        check_offsets(offsets, n_offsets, n)?;
        let tok = tokenizer(ctx)?;
        let parts = tok.decode_token_list(arg_slice(tokens, n, "tokens")?)?;
        let total = parts.iter().map(|p| p.len()).sum();
        let bytes = bytes as *mut u8;
        if fits(total, bytes, capacity, n_bytes, "bytes")? {
            let mut at = 0;
            for p in &parts {
                std::ptr::copy_nonoverlapping(p.as_ptr(), bytes.add(at), p.len());
                at += p.len();
            }
            write_offsets(parts.iter().map(|p| p.len()), offsets);
            write_out(n_bytes, total);
        }
        Ok(())
    })
}

/// transformer-debugger's `encode_token_str_list`: `tokens[i]` (caller-owned, `n` entries) receives the one
/// id of `texts[i]` (`text_lens[i]` bytes of UTF-8; NULL with length 0 is the empty text).
/// The first string that is not exactly one token fails the call with `MC_ERR_TOKEN`, the
/// message naming its index and the ids it encodes to; `tokens` is written only on success.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, or `texts`, `text_lens` or `tokens` NULL with `n` >
/// 0, or `texts[i]` NULL with a non-zero length), `MC_ERR_INVALID_ARGUMENT` (not UTF-8),
/// `MC_ERR_TOKEN`, `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`. Thread-safe: may run concurrently
/// with any call on the same context except `mc_free`.
///
/// # Safety
/// `ctx` is NULL or a live context; `texts` and `text_lens` are NULL or valid for `n` reads,
/// each `texts[i]` NULL or valid for `text_lens[i]` bytes; `tokens` NULL or valid for `n`
/// writes.
#[no_mangle]
pub unsafe extern "C" fn mc_encode_token_str_list(
    ctx: *const mc_context,
    texts: *const *const c_char,
    text_lens: *const usize,
    n: usize,
    tokens: *mut u32,
) -> mc_status {
    guard(|| {
        if n > 0 {
            arg_out(tokens, "tokens")?;
        }
        let tok = tokenizer(ctx)?;
        let ids: Vec<Rank> = tok.encode_token_str_list(&arg_texts(texts, text_lens, n)?)?;
        if n > 0 {
            std::ptr::copy_nonoverlapping(ids.as_ptr(), tokens, n);
        }
        Ok(())
    })
}

/// Encodes `n_texts` texts on all cores (for datasets); each text's ids are exactly those
/// `mc_encode` gives for it alone. `texts[i]` has `text_lens[i]` bytes of UTF-8 (NULL with
/// length 0 is the empty text).
///
/// Output: the ids of all texts back to back in `tokens` (caller-owned, `capacity` ids), and
/// `offsets` (caller-owned, `n_offsets` entries, at least `n_texts + 1`): text `i`'s ids are
/// `tokens[offsets[i] .. offsets[i + 1]]`, `offsets[n_texts]` = `*n_tokens`. Size probe on
/// `tokens` as for `mc_encode`; `offsets` is written only when `tokens` is, but must never be
/// NULL. A capacity of the sum of `text_lens` always suffices.
///
/// The first failing text (lowest index) fails the whole call, the message naming its index;
/// nothing but the size-probe count is written then.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `offsets`, `n_tokens`, or `texts` / `text_lens` NULL
/// with `n_texts` > 0, or `texts[i]` NULL with a non-zero length), `MC_ERR_INVALID_ARGUMENT`
/// (not UTF-8, with the offset), `MC_ERR_TOKEN`, `MC_ERR_BUFFER_TOO_SMALL` (`tokens` too small:
/// `*n_tokens` is the count needed; or `n_offsets` below `n_texts + 1`: nothing written),
/// `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`. Nothing to free. Thread-safe: may run concurrently with any call on the same
/// context except `mc_free`; the work runs on threads that live only for the call, one per
/// core (`MC_TOKENIZER_THREADS` caps their number).
///
/// # Safety
/// `ctx` is NULL or a live context; `texts` and `text_lens` are NULL or valid for `n_texts`
/// reads, each `texts[i]` NULL or valid for `text_lens[i]` bytes; `tokens` is NULL or valid for
/// `capacity` writes; `offsets` is NULL or valid for `n_offsets` writes; `n_tokens` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mc_encode_batch(
    ctx: *const mc_context,
    texts: *const *const c_char,
    text_lens: *const usize,
    n_texts: usize,
    tokens: *mut u32,
    capacity: usize,
    offsets: *mut usize,
    n_offsets: usize,
    n_tokens: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(n_tokens, "n_tokens")?;
        check_offsets(offsets, n_offsets, n_texts)?;
        let tok = tokenizer(ctx)?;
        let encoded = tok.encode_batch(&arg_texts(texts, text_lens, n_texts)?)?;
        let total = encoded.iter().map(Vec::len).sum();
        if fits(total, tokens, capacity, n_tokens, "tokens")? {
            let mut at = 0;
            for ids in &encoded {
                std::ptr::copy_nonoverlapping(ids.as_ptr(), tokens.add(at), ids.len());
                at += ids.len();
            }
            write_offsets(encoded.iter().map(Vec::len), offsets);
            write_out(n_tokens, total);
        }
        Ok(())
    })
}
