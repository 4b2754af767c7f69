//! The model through the C ABI: creation options, forward passes with activations, sampling.
//! Thread safety: `mc_create_model`, `mc_forward` and `mc_sample` may run concurrently on one
//! context (the model is created once and then only read); a forward output may be read from
//! several threads, and is freed once with `mc_forward_output_free`.
use super::abi_struct::*;
use super::context::*;
use super::dlpack::*;
use super::enums::*;
use super::status::*;
use crate::error::{err, ErrorKind};
use crate::model::sampling::SampleOptions;
use crate::model::ModelOptions;
use std::ffi::c_void;

/// The objective of a backward pass (docs/experiments.md), one scalar per row; the rows'
/// sum is differentiated, so each row's gradients are its own. Fill with
/// `mc_objective_init(&o, sizeof o)`. Per-row arrays have `batch` entries; a position of -1
/// is the row's last non-padding position.
#[repr(C)]
pub struct mc_objective {
    /// The size the caller was compiled with, written by `mc_objective_init`.
    pub struct_size: u32,
    /// `MC_OBJECTIVE_LOGIT` (default), `_LOGIT_DIFF`, `_LOG_PROB` or `_DIRECTION`.
    pub kind: mc_objective_kind,
    /// LOGIT, LOGIT_DIFF: the token per row.
    pub tokens: *const i64,
    pub n_tokens: usize,
    /// LOGIT_DIFF: the token subtracted, per row.
    pub other_tokens: *const i64,
    pub n_other_tokens: usize,
    /// LOGIT, LOGIT_DIFF, DIRECTION: the position per row; NULL with 0: -1 for every row.
    pub positions: *const i64,
    pub n_positions: usize,
    /// LOG_PROB: NULL (the next token; the last non-padding position has none) or
    /// `batch * seq_len` targets, -1 where a position has none.
    pub targets: *const i64,
    pub n_targets: usize,
    /// DIRECTION: the activation (any `MC_ACT_*` the request computes) and its layer.
    pub location: mc_activation,
    pub layer: i32,
    /// DIRECTION: float, broadcasting to `[batch, ...the location's per-position shape]`
    /// (for example `[d_model]` or `[batch, d_ff]`); borrowed for the call, as an operand.
    pub direction: *const DLManagedTensorVersioned,
}

/// The indices of one axis an edit touches: `indices` NULL with `n_indices` 0 is the whole
/// axis; otherwise `n_indices` (at least 1) indices, each in `0 .. size of the axis`. A
/// fixed struct (never extended).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mc_axis_selection {
    pub indices: *const i64,
    pub n_indices: usize,
}

/// One edit of an activation during `mc_forward` (docs/experiments.md); fill with
/// `mc_edit_init(&e, sizeof e)`. In an array, every element has the same `struct_size`, and
/// the library steps through the array by it.
#[repr(C)]
pub struct mc_edit {
    /// The size the caller was compiled with, written by `mc_edit_init`.
    pub struct_size: u32,
    /// Any `MC_ACT_*` but `MC_ACT_LOGITS` (the output: nothing downstream would see it).
    pub location: mc_activation,
    /// The layer of a per-layer location, `MC_LAYER_NONE` for a model-wide one.
    pub layer: i32,
    /// `MC_EDIT_SET` (default), `MC_EDIT_SCALE`, `MC_EDIT_ADD` or `MC_EDIT_REPLACE`.
    pub op: mc_edit_op,
    /// The constant of `MC_EDIT_SET` and the factor of `MC_EDIT_SCALE`.
    pub value: f64,
    /// The tensor of `MC_EDIT_ADD` / `MC_EDIT_REPLACE` (NULL for the others): float32, float16
    /// or bfloat16, on the CPU or the model's device, broadcasting (numpy's rules) to the
    /// selection's shape. Borrowed for the call: copied, its deleter never called.
    pub operand: *const DLManagedTensorVersioned,
    /// One entry per leading axis of the location's `[batch, ...per-sequence shape]`; axes
    /// past `n_selection` are whole. NULL with 0: the whole tensor.
    pub selection: *const mc_axis_selection,
    pub n_selection: usize,
}

/// Options of `mc_create_model`; fill with `mc_model_options_init(&o, sizeof o)`.
#[repr(C)]
pub struct mc_model_options {
    /// The size the caller was compiled with, written by `mc_model_options_init`.
    pub struct_size: u32,
    /// Fold each block's layer norms into the following weights (transformer-debugger's
    /// `simplify`).
    pub simplify: bool,
    /// `MC_DTYPE_FLOAT32` (default), `MC_DTYPE_FLOAT16` or `MC_DTYPE_BFLOAT16`.
    pub dtype: mc_dtype,
    /// In bfloat16 on the CPU the model keeps a second copy of each weight matrix reordered
    /// for oneDNN (the matrices' size in memory again; products of three or more rows, and of
    /// any rows on CPUs without AVX-512 BF16, 1.3-2x faster).
    /// True: no such copy (default false; also for callers built with the older 12-byte size).
    pub skip_reorder: bool,
    /// Must be zero.
    pub reserved: [u8; 3],
}

/// A forward pass request; fill with `mc_forward_request_init(&r, sizeof r)`. Every pointer is
/// only read during the call.
#[repr(C)]
pub struct mc_forward_request {
    /// The size the caller was compiled with, written by `mc_forward_request_init`.
    pub struct_size: u32,
    /// The type of `tokens`' elements: `MC_TOKENS_INT64` (default) or `MC_TOKENS_UINT32`.
    pub token_type: mc_token_type,
    /// `n_tokens` token ids, row-major `[batch, seq_len]`.
    pub tokens: *const c_void,
    /// Elements at `tokens`; must equal `batch * seq_len`.
    pub n_tokens: usize,
    /// Rows (at least 1).
    pub batch: i64,
    /// Positions per row (at least 1, at most the context window).
    pub seq_len: i64,
    /// NULL (no padding) or `n_pad` flags, true where a position is padding; rows must be
    /// right-padded. The inverse of Hugging Face's `attention_mask`.
    pub pad: *const bool,
    /// Must equal `batch * seq_len` when `pad` is given.
    pub n_pad: usize,
    /// `n_activations` requested locations; NULL only when `n_activations` is 0.
    /// Only these are kept; the logits always are.
    pub activations: *const mc_activation,
    /// `n_activations` layers, one per location: a layer index, `MC_LAYER_ALL` for every
    /// layer, or `MC_LAYER_NONE` for model-wide locations.
    pub layers: *const i32,
    /// Elements at `activations` and at `layers` (one count for both).
    pub n_activations: usize,
    /// `n_edits` edits, applied where each activation is produced, in list order, so
    /// everything downstream (and a capture of that location) sees the edited value.
    pub edits: *const mc_edit,
    pub n_edits: usize,
    /// NULL (default): start from the tokens' embeddings. Otherwise the residual stream
    /// `[batch, seq_len, d_model]` at the input of layer `start_layer` (float, on the CPU or
    /// the model's device; borrowed for the call); `tokens` may then be omitted.
    pub start_residual: *const DLManagedTensorVersioned,
    /// The layer `start_residual` enters (ignored without one).
    pub start_layer: i32,
    /// 0 (default): run every layer, the final norm and the unembedding. `k` in
    /// `1 ..= n_layers`: stop after layer `k - 1` (no later layer, final norm or logits).
    pub end_layer: i32,
    /// `MC_LOGITS_ALL` (default), `MC_LOGITS_LAST` or `MC_LOGITS_NONE`.
    pub logits: mc_logits_choice,
    /// Must be zero (keeps the struct free of tail padding).
    pub reserved: u32,
    /// NULL (default): no backward pass, nothing recorded for autograd. Otherwise the
    /// objective whose gradients are taken at `grad_activations`/`grad_layers`.
    pub objective: *const mc_objective,
    /// `n_grads` locations to take the gradient at, with `grad_layers` as `layers` is for
    /// `activations` (`MC_LAYER_ALL`: every layer run). The start residual's own location
    /// (`resid.post_mlp` of `start_layer - 1`, `resid.post_emb` at 0) is allowed.
    pub grad_activations: *const mc_activation,
    pub grad_layers: *const i32,
    pub n_grads: usize,
}

/// Options of `mc_sample`; fill with `mc_sample_options_init(&o, sizeof o)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mc_sample_options {
    /// The size the caller was compiled with, written by `mc_sample_options_init`.
    pub struct_size: u32,
    /// Most tokens to produce (default 16).
    pub max_new_tokens: u32,
    /// Stop after `<|endoftext|>` (default true).
    pub stop_at_end_of_text: bool,
    /// 0 (default): greedy; otherwise the softmax temperature.
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 (default) disables it.
    pub top_p: f64,
    /// Seed of the sampler's random stream (ChaCha8); equal seeds give equal samples.
    pub seed: u64,
    /// Keep the `top_k` most likely tokens before top-p; 0 (default) disables it.
    pub top_k: u32,
    /// Must be zero.
    pub reserved: u32,
}

impl AbiStruct for mc_model_options {
    const NAME: &'static str = "mc_model_options";
    const MIN_SIZE: usize = 12;
    unsafe fn write_defaults(p: *mut Self) {
        (&raw mut (*p).struct_size).write(std::mem::size_of::<Self>() as u32);
        (&raw mut (*p).simplify).write(false);
        (&raw mut (*p).dtype).write(MC_DTYPE_FLOAT32);
        (&raw mut (*p).skip_reorder).write(false);
        (&raw mut (*p).reserved).write([0; 3]);
    }
}

impl AbiStruct for mc_forward_request {
    const NAME: &'static str = "mc_forward_request";
    const MIN_SIZE: usize = 120;
    unsafe fn write_defaults(p: *mut Self) {
        (&raw mut (*p).struct_size).write(std::mem::size_of::<Self>() as u32);
        (&raw mut (*p).token_type).write(MC_TOKENS_INT64);
        (&raw mut (*p).tokens).write(std::ptr::null());
        (&raw mut (*p).n_tokens).write(0);
        (&raw mut (*p).batch).write(0);
        (&raw mut (*p).seq_len).write(0);
        (&raw mut (*p).pad).write(std::ptr::null());
        (&raw mut (*p).n_pad).write(0);
        (&raw mut (*p).activations).write(std::ptr::null());
        (&raw mut (*p).layers).write(std::ptr::null());
        (&raw mut (*p).n_activations).write(0);
        (&raw mut (*p).edits).write(std::ptr::null());
        (&raw mut (*p).n_edits).write(0);
        (&raw mut (*p).start_residual).write(std::ptr::null());
        (&raw mut (*p).start_layer).write(0);
        (&raw mut (*p).end_layer).write(0);
        (&raw mut (*p).logits).write(MC_LOGITS_ALL);
        (&raw mut (*p).reserved).write(0);
        (&raw mut (*p).objective).write(std::ptr::null());
        (&raw mut (*p).grad_activations).write(std::ptr::null());
        (&raw mut (*p).grad_layers).write(std::ptr::null());
        (&raw mut (*p).n_grads).write(0);
    }
}

impl AbiStruct for mc_objective {
    const NAME: &'static str = "mc_objective";
    const MIN_SIZE: usize = 88;
    unsafe fn write_defaults(p: *mut Self) {
        (&raw mut (*p).struct_size).write(std::mem::size_of::<Self>() as u32);
        (&raw mut (*p).kind).write(MC_OBJECTIVE_LOGIT);
        (&raw mut (*p).tokens).write(std::ptr::null());
        (&raw mut (*p).n_tokens).write(0);
        (&raw mut (*p).other_tokens).write(std::ptr::null());
        (&raw mut (*p).n_other_tokens).write(0);
        (&raw mut (*p).positions).write(std::ptr::null());
        (&raw mut (*p).n_positions).write(0);
        (&raw mut (*p).targets).write(std::ptr::null());
        (&raw mut (*p).n_targets).write(0);
        (&raw mut (*p).location).write(0);
        (&raw mut (*p).layer).write(MC_LAYER_NONE);
        (&raw mut (*p).direction).write(std::ptr::null());
    }
}

impl AbiStruct for mc_edit {
    const NAME: &'static str = "mc_edit";
    const MIN_SIZE: usize = 48;
    unsafe fn write_defaults(p: *mut Self) {
        (&raw mut (*p).struct_size).write(std::mem::size_of::<Self>() as u32);
        (&raw mut (*p).location).write(0);
        (&raw mut (*p).layer).write(MC_LAYER_NONE);
        (&raw mut (*p).op).write(MC_EDIT_SET);
        (&raw mut (*p).value).write(0.0);
        (&raw mut (*p).operand).write(std::ptr::null());
        (&raw mut (*p).selection).write(std::ptr::null());
        (&raw mut (*p).n_selection).write(0);
    }
}

impl AbiStruct for mc_sample_options {
    const NAME: &'static str = "mc_sample_options";
    const MIN_SIZE: usize = 40;
    unsafe fn write_defaults(p: *mut Self) {
        let d = SampleOptions::default();
        (&raw mut (*p).struct_size).write(std::mem::size_of::<Self>() as u32);
        (&raw mut (*p).max_new_tokens).write(d.max_new_tokens as u32);
        (&raw mut (*p).stop_at_end_of_text).write(true);
        (&raw mut (*p).temperature).write(d.temperature);
        (&raw mut (*p).top_p).write(d.top_p);
        (&raw mut (*p).seed).write(d.seed);
        (&raw mut (*p).top_k).write(d.top_k as u32);
        (&raw mut (*p).reserved).write(0);
    }
}

/// Fills `*opts` for the caller's `size` (pass `sizeof *opts`): zeroes all `size` bytes, writes
/// the defaults (float32, not simplified) and sets `struct_size = size`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`opts`), `MC_ERR_INVALID_ARGUMENT` (`size` below the 0.2
/// size of the struct; nothing is written), `MC_ERR_PANIC`.
///
/// # Safety
/// `opts` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_model_options_init(
    opts: *mut mc_model_options,
    size: usize,
) -> mc_status {
    init_struct(opts, size)
}

/// Fills `*req` for the caller's `size` (pass `sizeof *req`): zeroes all `size` bytes, writes
/// the defaults (no tokens, int64 ids, no padding, no activations) and sets `struct_size = size`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`req`), `MC_ERR_INVALID_ARGUMENT` (`size` below the 0.2 size
/// of the struct; nothing is written), `MC_ERR_PANIC`.
///
/// # Safety
/// `req` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_forward_request_init(
    req: *mut mc_forward_request,
    size: usize,
) -> mc_status {
    init_struct(req, size)
}

/// Fills `*edit` for the caller's `size` (pass `sizeof *edit`): zeroes all `size` bytes, writes
/// the defaults (location 0, `MC_LAYER_NONE`, `MC_EDIT_SET` to 0, no operand, the whole
/// tensor) and sets `struct_size = size`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`edit`), `MC_ERR_INVALID_ARGUMENT` (`size` below the 0.2
/// size of the struct; nothing is written), `MC_ERR_PANIC`.
///
/// # Safety
/// `edit` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_edit_init(edit: *mut mc_edit, size: usize) -> mc_status {
    init_struct(edit, size)
}

/// Fills `*objective` for the caller's `size` (pass `sizeof *objective`): zeroes all `size`
/// bytes, writes the defaults (`MC_OBJECTIVE_LOGIT`, no arrays, `MC_LAYER_NONE`) and sets
/// `struct_size = size`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`objective`), `MC_ERR_INVALID_ARGUMENT` (`size` below the
/// 0.2 size of the struct; nothing is written), `MC_ERR_PANIC`.
///
/// # Safety
/// `objective` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_objective_init(objective: *mut mc_objective, size: usize) -> mc_status {
    init_struct(objective, size)
}

/// Fills `*opts` for the caller's `size` (pass `sizeof *opts`): zeroes all `size` bytes, writes
/// the defaults (greedy, 16 tokens, seed 0, stop at `<|endoftext|>`) and sets
/// `struct_size = size`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`opts`), `MC_ERR_INVALID_ARGUMENT` (`size` below the 0.2
/// size of the struct; nothing is written), `MC_ERR_PANIC`.
///
/// # Safety
/// `opts` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_sample_options_init(
    opts: *mut mc_sample_options,
    size: usize,
) -> mc_status {
    init_struct(opts, size)
}

/// Creates the context's model (transformer-debugger's `get_or_create_model`) with `opts` (NULL: the
/// defaults) on the context's device. The first creation wins: a later call with different
/// options fails with `MC_ERR_INVALID_ARGUMENT`. From then on `mc_get_weight` reads the
/// model's parameters (after simplify, the folded values). `mc_forward` and `mc_sample`
/// create a default model when none exists. Thread-safe.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`), `MC_ERR_INVALID_ARGUMENT` (`opts->struct_size` below
/// the 0.2 size, `opts->dtype` out of range or `MC_DTYPE_NONE`, `opts->reserved` not zero,
/// options (`skip_reorder` included, whether or not it applies) differing from the
/// model already created), `MC_ERR_UNSUPPORTED` (a tokenizer-only context, a non-zero byte past
/// the library's size of `opts`), every error of reading a weight (see `mc_get_weight`),
/// `MC_ERR_DEVICE`, `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`.
///
/// # Safety
/// `ctx` is NULL or a live context; `opts` NULL or valid for `opts->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_create_model(
    ctx: *const mc_context,
    opts: *const mc_model_options,
) -> mc_status {
    guard(|| {
        let ctx = ctx_arg(ctx)?;
        let o = read_options(opts, "opts")?;
        if o.reserved != [0; 3] {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("`opts->reserved` = {:?} must be zero", o.reserved),
            ));
        }
        let dtype = dtype_arg(o.dtype)?.ok_or_else(|| {
            err(
                ErrorKind::InvalidArgument,
                "a model needs a dtype (MC_DTYPE_NONE given)",
            )
        })?;
        ctx.get_or_create_model(Some(ModelOptions {
            simplify: o.simplify,
            dtype,
            skip_reorder: o.skip_reorder,
        }))?;
        Ok(())
    })
}
