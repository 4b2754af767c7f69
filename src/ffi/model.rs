//! The model through the C ABI: creation options, forward passes with activations, sampling.
//! Thread safety: `mc_create_model`, `mc_forward` and `mc_sample` may run concurrently on one
//! context (the model is created once and then only read); a forward output may be read from
//! several threads, and is freed once with `mc_forward_output_free`.
use super::api::{ctx_arg, lookup_name, mc_context, static_name, MC_LAYER_ALL, MC_LAYER_NONE};
use super::dlpack::{export_versioned, DLManagedTensorVersioned};
use super::status::mc_status;
use super::*;
use crate::activations::Activation;
use crate::model::{ActivationKey, ForwardInput, ForwardOutput, ModelDType, ModelOptions};
use crate::sampling::{sample, SampleOptions};
use std::ffi::c_void;

/// An activation location: one of the `MC_ACT_*` constants (spec section 6's names).
pub type mc_activation = i32;
/// A model dtype: `MC_DTYPE_FLOAT32`, `MC_DTYPE_FLOAT16` or `MC_DTYPE_BFLOAT16`.
pub type mc_dtype = i32;
/// How token ids are passed: `MC_TOKENS_INT64` or `MC_TOKENS_UINT32`.
pub type mc_token_type = i32;

pub const MC_ACT_RESID_POST_EMB: mc_activation = 0;
pub const MC_ACT_RESID_DELTA_ATTN: mc_activation = 1;
pub const MC_ACT_RESID_POST_ATTN: mc_activation = 2;
pub const MC_ACT_RESID_DELTA_MLP: mc_activation = 3;
pub const MC_ACT_RESID_POST_MLP: mc_activation = 4;
pub const MC_ACT_ATTN_LN_SCALE: mc_activation = 5;
pub const MC_ACT_MLP_LN_SCALE: mc_activation = 6;
pub const MC_ACT_RESID_LN_F_SCALE: mc_activation = 7;
pub const MC_ACT_RESID_POST_ATTN_LN: mc_activation = 8;
pub const MC_ACT_RESID_POST_MLP_LN: mc_activation = 9;
pub const MC_ACT_RESID_POST_LN_F: mc_activation = 10;
pub const MC_ACT_ATTN_Q: mc_activation = 11;
pub const MC_ACT_ATTN_K: mc_activation = 12;
pub const MC_ACT_ATTN_V: mc_activation = 13;
pub const MC_ACT_ATTN_QK_LOGITS: mc_activation = 14;
pub const MC_ACT_ATTN_QK_PROBS: mc_activation = 15;
pub const MC_ACT_ATTN_V_OUT: mc_activation = 16;
pub const MC_ACT_MLP_PRE_ACT: mc_activation = 17;
pub const MC_ACT_MLP_POST_ACT: mc_activation = 18;
pub const MC_ACT_LOGITS: mc_activation = 19;
/// Number of activation locations (valid values are `0 .. MC_ACT_COUNT`).
pub const MC_ACT_COUNT: mc_activation = 20;

/// "Keep the stored dtype" (weight requests only).
pub const MC_DTYPE_NONE: mc_dtype = -1;
pub const MC_DTYPE_FLOAT32: mc_dtype = 0;
pub const MC_DTYPE_FLOAT16: mc_dtype = 1;
pub const MC_DTYPE_BFLOAT16: mc_dtype = 2;

pub const MC_TOKENS_INT64: mc_token_type = 0;
pub const MC_TOKENS_UINT32: mc_token_type = 1;

/// Options of `mc_create_model`; start from `mc_model_options_default()`.
#[repr(C)]
pub struct mc_model_options {
    /// Set by `mc_model_options_default`; do not change.
    pub struct_size: u32,
    /// Fold each block's layer norms into the following weights (the seed's `simplify`).
    pub simplify: bool,
    /// `MC_DTYPE_FLOAT32` (default), `MC_DTYPE_FLOAT16` or `MC_DTYPE_BFLOAT16`.
    pub dtype: mc_dtype,
}

/// A forward pass request; start from `mc_forward_request_default()`. Every pointer is only
/// read during the call.
#[repr(C)]
pub struct mc_forward_request {
    /// Set by `mc_forward_request_default`; do not change.
    pub struct_size: u32,
    /// `batch * seq_len` token ids, row-major, of type `token_type`.
    pub tokens: *const c_void,
    pub token_type: mc_token_type,
    pub batch: i64,
    pub seq_len: i64,
    /// NULL (no padding) or `n_pad` flags, true where a position is padding; rows must be
    /// right-padded. The inverse of Hugging Face's `attention_mask`.
    pub pad: *const bool,
    /// Must equal `batch * seq_len` when `pad` is given.
    pub n_pad: usize,
    /// `n_activations` requested locations with their `layers` (a layer index,
    /// `MC_LAYER_ALL` for every layer, or `MC_LAYER_NONE` for model-wide locations).
    /// Only these are kept; the logits always are.
    pub activations: *const mc_activation,
    pub layers: *const i32,
    pub n_activations: usize,
}

/// Options of `mc_sample`; start from `mc_sample_options_default()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct mc_sample_options {
    /// Set by `mc_sample_options_default`; do not change.
    pub struct_size: u32,
    /// Most tokens to produce (default 16).
    pub max_new_tokens: u32,
    /// 0 (default): greedy; otherwise the softmax temperature.
    pub temperature: f64,
    /// Nucleus sampling mass in (0, 1]; 1 (default) disables it.
    pub top_p: f64,
    /// Seed of the sampler's random stream (ChaCha8); equal seeds give equal samples.
    pub seed: u64,
    /// Stop after `<|endoftext|>` (default true).
    pub stop_at_end_of_text: bool,
}

/// The result of `mc_forward` (opaque): logits and the requested activations.
/// Free with `mc_forward_output_free`.
pub struct mc_forward_output {
    inner: ForwardOutput,
}

fn activation(a: mc_activation) -> Result<Activation> {
    Activation::from_index(a as i64).ok_or_else(|| {
        err(
            ErrorKind::InvalidArgument,
            format!("activation location {a} out of range (0..{MC_ACT_COUNT})"),
        )
    })
}

/// Default model options: float32, not simplified.
#[no_mangle]
pub extern "C" fn mc_model_options_default() -> mc_model_options {
    mc_model_options {
        struct_size: std::mem::size_of::<mc_model_options>() as u32,
        simplify: false,
        dtype: MC_DTYPE_FLOAT32,
    }
}

/// An empty request (no tokens, no padding, no activations, int64 ids).
#[no_mangle]
pub extern "C" fn mc_forward_request_default() -> mc_forward_request {
    mc_forward_request {
        struct_size: std::mem::size_of::<mc_forward_request>() as u32,
        tokens: std::ptr::null(),
        token_type: MC_TOKENS_INT64,
        batch: 0,
        seq_len: 0,
        pad: std::ptr::null(),
        n_pad: 0,
        activations: std::ptr::null(),
        layers: std::ptr::null(),
        n_activations: 0,
    }
}

/// Default sampling: greedy, 16 tokens, seed 0, stop at `<|endoftext|>`.
#[no_mangle]
pub extern "C" fn mc_sample_options_default() -> mc_sample_options {
    let d = SampleOptions::default();
    mc_sample_options {
        struct_size: std::mem::size_of::<mc_sample_options>() as u32,
        max_new_tokens: d.max_new_tokens as u32,
        temperature: d.temperature,
        top_p: d.top_p,
        seed: d.seed,
        stop_at_end_of_text: true,
    }
}

/// Creates the context's model (the seed's `get_or_create_model`) with `opts` (NULL: the
/// defaults) on the context's device. The first creation wins: a later call with different
/// options fails with `MC_ERR_INVALID_ARGUMENT`. From then on `mc_get_weight` reads the
/// model's parameters (after simplify, the folded values). `mc_forward` and `mc_sample`
/// create a default model when none exists. Thread-safe.
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
        let o = read_options(opts, mc_model_options_default())?;
        let dtype = dtype_arg(o.dtype)?.ok_or_else(|| {
            err(
                ErrorKind::InvalidArgument,
                "a model needs a dtype (MC_DTYPE_NONE given)",
            )
        })?;
        ctx.get_or_create_model(Some(ModelOptions {
            simplify: o.simplify,
            dtype,
        }))?;
        Ok(())
    })
}

/// `MC_DTYPE_NONE` is None; the three floating-point dtypes map to `ModelDType`.
pub(crate) fn dtype_arg(d: mc_dtype) -> Result<Option<ModelDType>> {
    match d {
        MC_DTYPE_NONE => Ok(None),
        MC_DTYPE_FLOAT32 => Ok(Some(ModelDType::Float32)),
        MC_DTYPE_FLOAT16 => Ok(Some(ModelDType::Float16)),
        MC_DTYPE_BFLOAT16 => Ok(Some(ModelDType::BFloat16)),
        d => Err(err(
            ErrorKind::InvalidArgument,
            format!("dtype {d} out of range (MC_DTYPE_NONE or 0..3)"),
        )),
    }
}

unsafe fn tokens_arg(r: &mc_forward_request) -> Result<Vec<i64>> {
    let n = usize::try_from(r.batch.max(0).saturating_mul(r.seq_len.max(0)))
        .map_err(|_| err(ErrorKind::InvalidArgument, "batch * seq_len overflows"))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if r.tokens.is_null() {
        return Err(err(ErrorKind::NullArgument, "`request->tokens` is NULL"));
    }
    Ok(match r.token_type {
        MC_TOKENS_INT64 => std::slice::from_raw_parts(r.tokens as *const i64, n).to_vec(),
        MC_TOKENS_UINT32 => std::slice::from_raw_parts(r.tokens as *const u32, n)
            .iter()
            .map(|&t| t as i64)
            .collect(),
        t => {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("token_type {t} out of range (MC_TOKENS_INT64 or MC_TOKENS_UINT32)"),
            ))
        }
    })
}

unsafe fn wanted_arg(r: &mc_forward_request, n_layers: i64) -> Result<Vec<ActivationKey>> {
    if r.n_activations == 0 {
        return Ok(Vec::new());
    }
    let acts = std::slice::from_raw_parts(
        arg_ref(r.activations, "request->activations")?,
        r.n_activations,
    );
    let layers = std::slice::from_raw_parts(arg_ref(r.layers, "request->layers")?, r.n_activations);
    let mut wanted = Vec::new();
    for (&a, &l) in acts.iter().zip(layers) {
        let act = activation(a)?;
        match l {
            MC_LAYER_ALL => wanted.extend((0..n_layers).map(|i| (act, Some(i)))),
            MC_LAYER_NONE => wanted.push((act, None)),
            l if l >= 0 => wanted.push((act, Some(l as i64))),
            l => {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!(
                        "layer {l} for {} is negative and not MC_LAYER_NONE or MC_LAYER_ALL",
                        act.name()
                    ),
                ))
            }
        }
    }
    Ok(wanted)
}

/// Runs a forward pass (no gradients) and returns the logits `[batch, seq_len, vocab]` and the
/// requested activations, each `[batch, ...per-sequence shape]`, in `*out` (free with
/// `mc_forward_output_free`). Creates a default model if the context has none. Thread-safe.
///
/// # Safety
/// `ctx` NULL or live; `req` NULL or valid with the arrays it points to; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_forward(
    ctx: *const mc_context,
    req: *const mc_forward_request,
    out: *mut *mut mc_forward_output,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let ctx = ctx_arg(ctx)?;
        arg_ref(req, "request")?;
        let r = read_options(req, mc_forward_request_default())?;
        let model = ctx.get_or_create_model(None)?;
        let pad = match r.pad.is_null() {
            true => None,
            false => Some(std::slice::from_raw_parts(r.pad, r.n_pad).to_vec()),
        };
        let input = ForwardInput {
            tokens: tokens_arg(&r)?,
            batch: r.batch,
            seq_len: r.seq_len,
            pad,
        };
        let wanted = wanted_arg(&r, model.config().n_layers)?;
        let inner = model.forward(&input, &wanted)?;
        write_out(out, Box::into_raw(Box::new(mc_forward_output { inner })));
        Ok(())
    })
}

/// One activation of a forward output as a DLPack tensor (`layer`: the layer, or
/// `MC_LAYER_NONE` for model-wide locations; `MC_ACT_LOGITS` gives the logits). Each call
/// hands out a new tensor sharing the output's memory: free it with its deleter; it stays
/// valid after `mc_forward_output_free`. Not found if it was not requested.
///
/// # Safety
/// `output` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_forward_output_get(
    output: *const mc_forward_output,
    act: mc_activation,
    layer: i32,
    out: *mut *mut DLManagedTensorVersioned,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let o = arg_ref(output, "output")?;
        let act = activation(act)?;
        let key = (act, (layer != MC_LAYER_NONE).then_some(layer as i64));
        let t = o.inner.get(key).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!(
                    "{} layer {layer} was not requested in this forward pass",
                    act.name()
                ),
            )
        })?;
        write_out(out, export_versioned(t.share())?);
        Ok(())
    })
}

/// Frees a forward output (NULL: no-op); tensors taken from it stay valid.
///
/// # Safety
/// `output` is NULL or from `mc_forward`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn mc_forward_output_free(output: *mut mc_forward_output) {
    if !output.is_null() {
        let _ =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(Box::from_raw(output))));
    }
}

/// Looks up an activation location by name (e.g. "mlp.post_act").
///
/// # Safety
/// `name` is NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_activation_from_name(
    name: *const c_char,
    out: *mut mc_activation,
) -> mc_status {
    lookup_name(name, out, "activation location", |n| {
        Activation::from_name(n).map(|a| a as i32)
    })
}

/// The name of an activation location (static storage), or NULL when out of range.
#[no_mangle]
pub extern "C" fn mc_activation_name(act: mc_activation) -> *const c_char {
    activation(act).map_or(std::ptr::null(), |a| static_name(a.name()))
}

/// Whether an activation location is per-layer (else model-wide).
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_activation_per_layer(act: mc_activation, out: *mut bool) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        write_out(out, activation(act)?.per_layer());
        Ok(())
    })
}

/// Continues `prompt` (`n_prompt` ids) with up to `opts->max_new_tokens` new tokens (only the
/// new ones are written). Size probe: `tokens` NULL with `capacity` 0 gives `MC_OK` and
/// `*n_tokens = max_new_tokens`; a capacity below it is `MC_ERR_BUFFER_TOO_SMALL` (nothing
/// sampled). Decode the result with `mc_decode`. Thread-safe.
///
/// # Safety
/// `prompt` valid for `n_prompt` ids; `tokens` NULL or valid for `capacity` ids; `opts` NULL
/// or valid; `n_tokens` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_sample(
    ctx: *const mc_context,
    prompt: *const u32,
    n_prompt: usize,
    opts: *const mc_sample_options,
    tokens: *mut u32,
    capacity: usize,
    n_tokens: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(n_tokens, "n_tokens")?;
        let ctx = ctx_arg(ctx)?;
        let o = read_options(opts, mc_sample_options_default())?;
        let need = o.max_new_tokens as usize;
        if !super::tokens::fits(need, tokens, capacity, n_tokens, "tokens")? {
            return Ok(()); // a size probe
        }
        let prompt: Vec<i64> = match n_prompt {
            0 => Vec::new(),
            n => std::slice::from_raw_parts(arg_ref(prompt, "prompt")?, n)
                .iter()
                .map(|&t| t as i64)
                .collect(),
        };
        let stop_token = match o.stop_at_end_of_text {
            true => Some(ctx.tokenizer()?.endoftext() as i64),
            false => None,
        };
        let options = SampleOptions {
            max_new_tokens: need,
            temperature: o.temperature,
            top_p: o.top_p,
            seed: o.seed,
            stop_token,
        };
        let model = ctx.get_or_create_model(None)?;
        let new = sample(&model, &prompt, &options)?;
        for (i, &t) in new.iter().enumerate() {
            *tokens.add(i) = t as u32;
        }
        write_out(n_tokens, new.len());
        Ok(())
    })
}
