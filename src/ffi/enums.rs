//! The C enums: each constant is the index of its core enum (weight locations, dimensions,
//! activations, dtypes, edit operations, logits choices, objectives), their names, and the one
//! check of each enum argument, the layer argument included.
use super::args::*;
use super::buffers::*;
use super::status::*;
use crate::context::Layers;
use crate::error::{err, ErrorKind, Result};
use crate::model::ModelDType;
use crate::schema::activations::Activation;
use crate::schema::dims::Dimension;
use crate::schema::weights::WeightLocation;
use std::ffi::c_char;

/// A weight location: one of the `MC_WEIGHT_*` constants (transformer-debugger's
/// `WeightLocationType`).
pub type mc_weight_location = i32;

/// A model dimension: one of the `MC_DIM_*` constants (transformer-debugger's `Dimension`).
pub type mc_dimension = i32;

pub const MC_WEIGHT_MLP_TO_HIDDEN: mc_weight_location = 0;

pub const MC_WEIGHT_MLP_TO_RESIDUAL: mc_weight_location = 1;

pub const MC_WEIGHT_EMBEDDING: mc_weight_location = 2;

pub const MC_WEIGHT_UNEMBEDDING: mc_weight_location = 3;

pub const MC_WEIGHT_POSITION_EMBEDDING: mc_weight_location = 4;

pub const MC_WEIGHT_ATTN_TO_QUERY: mc_weight_location = 5;

pub const MC_WEIGHT_ATTN_TO_KEY: mc_weight_location = 6;

pub const MC_WEIGHT_ATTN_TO_VALUE: mc_weight_location = 7;

pub const MC_WEIGHT_ATTN_TO_RESIDUAL: mc_weight_location = 8;

pub const MC_WEIGHT_LAYER_NORM_GAIN_FINAL: mc_weight_location = 9;

pub const MC_WEIGHT_LAYER_NORM_BIAS_FINAL: mc_weight_location = 10;

pub const MC_WEIGHT_LAYER_NORM_GAIN_PRE_ATTN: mc_weight_location = 11;

pub const MC_WEIGHT_LAYER_NORM_GAIN_PRE_MLP: mc_weight_location = 12;

/// `[heads, d_head_qk]` (beyond transformer-debugger's list, as are the locations below).
pub const MC_WEIGHT_ATTN_QUERY_BIAS: mc_weight_location = 13;

/// `[heads, d_head_qk]`
pub const MC_WEIGHT_ATTN_KEY_BIAS: mc_weight_location = 14;

/// `[heads, d_head_v]`
pub const MC_WEIGHT_ATTN_VALUE_BIAS: mc_weight_location = 15;

/// `[d_model]`: the attention output projection's bias.
pub const MC_WEIGHT_ATTN_RESIDUAL_BIAS: mc_weight_location = 16;

/// `[d_ff]`
pub const MC_WEIGHT_MLP_HIDDEN_BIAS: mc_weight_location = 17;

/// `[d_model]`
pub const MC_WEIGHT_MLP_RESIDUAL_BIAS: mc_weight_location = 18;

/// `[d_model]`: ln_1's bias.
pub const MC_WEIGHT_LAYER_NORM_BIAS_PRE_ATTN: mc_weight_location = 19;

/// `[d_model]`: ln_2's bias.
pub const MC_WEIGHT_LAYER_NORM_BIAS_PRE_MLP: mc_weight_location = 20;

/// Number of weight locations (valid values are `0 .. MC_WEIGHT_COUNT`).
pub const MC_WEIGHT_COUNT: mc_weight_location = 21;

pub const MC_DIM_MAX_CONTEXT_LENGTH: mc_dimension = 0;

pub const MC_DIM_RESIDUAL_STREAM_CHANNELS: mc_dimension = 1;

pub const MC_DIM_VOCAB_SIZE: mc_dimension = 2;

pub const MC_DIM_ATTN_HEADS: mc_dimension = 3;

pub const MC_DIM_QUERY_AND_KEY_CHANNELS: mc_dimension = 4;

pub const MC_DIM_VALUE_CHANNELS: mc_dimension = 5;

pub const MC_DIM_MLP_ACTS: mc_dimension = 6;

pub const MC_DIM_LAYERS: mc_dimension = 7;

pub const MC_DIM_SINGLETON: mc_dimension = 8;

pub const MC_DIM_SEQUENCE_TOKENS: mc_dimension = 9;

pub const MC_DIM_ATTENDED_TO_SEQUENCE_TOKENS: mc_dimension = 10;

pub const MC_DIM_AUTOENCODER_LATENTS: mc_dimension = 11;

/// Number of dimensions (valid values are `0 .. MC_DIM_COUNT`).
pub const MC_DIM_COUNT: mc_dimension = 12;

/// `layer` argument of a model-wide location.
pub const MC_LAYER_NONE: i32 = -1;

/// `layer` argument asking for every layer: per-layer weights stacked as `[n_layers, ...]`
/// (`mc_get_weight_ex`), every layer's activation (`mc_forward_request.layers`).
pub const MC_LAYER_ALL: i32 = -2;

/// `normalize_dim` argument for no normalisation.
pub const MC_DIM_NONE: mc_dimension = -1;

/// An activation location: one of the `MC_ACT_*` constants (transformer-debugger's names).
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

/// What an edit does: one of the `MC_EDIT_*` constants.
pub type mc_edit_op = i32;

/// Set the selected elements to `value` (zero-ablation with 0).
pub const MC_EDIT_SET: mc_edit_op = 0;

/// Multiply the selected elements by `value`.
pub const MC_EDIT_SCALE: mc_edit_op = 1;

/// Add `operand`, broadcast to the selection's shape (steering).
pub const MC_EDIT_ADD: mc_edit_op = 2;

/// Replace the selected elements with `operand`, broadcast (patching, mean-ablation).
pub const MC_EDIT_REPLACE: mc_edit_op = 3;

/// Which positions get logits: one of the `MC_LOGITS_*` constants.
pub type mc_logits_choice = i32;

/// Every position, `[batch, seq_len, vocab]` (the default).
pub const MC_LOGITS_ALL: mc_logits_choice = 0;

/// Each row's last non-padding position, `[batch, 1, vocab]`.
pub const MC_LOGITS_LAST: mc_logits_choice = 1;

/// None: no unembedding; `mc_forward_output_get(.., MC_ACT_LOGITS, ..)` is `MC_ERR_NOT_FOUND`.
pub const MC_LOGITS_NONE: mc_logits_choice = 2;

/// What a backward pass differentiates: one of the `MC_OBJECTIVE_*` constants.
pub type mc_objective_kind = i32;

/// The logit of `tokens[row]` at `positions[row]`.
pub const MC_OBJECTIVE_LOGIT: mc_objective_kind = 0;

/// `logit(tokens[row]) - logit(other_tokens[row])` at `positions[row]`.
pub const MC_OBJECTIVE_LOGIT_DIFF: mc_objective_kind = 1;

/// The mean log-probability of the targets over the row's non-padding positions.
pub const MC_OBJECTIVE_LOG_PROB: mc_objective_kind = 2;

/// The dot product of an activation at `positions[row]` with `direction`.
pub const MC_OBJECTIVE_DIRECTION: mc_objective_kind = 3;

pub(crate) fn location(loc: mc_weight_location) -> Result<WeightLocation> {
    WeightLocation::from_index(loc as i64).ok_or_else(|| {
        err(
            ErrorKind::InvalidArgument,
            format!("weight location {loc} out of range (0..{MC_WEIGHT_COUNT})"),
        )
    })
}

pub(crate) fn dimension(dim: mc_dimension) -> Result<Dimension> {
    Dimension::from_index(dim as i64).ok_or_else(|| {
        err(
            ErrorKind::InvalidArgument,
            format!("dimension {dim} out of range (0..{MC_DIM_COUNT})"),
        )
    })
}

pub(crate) fn layer_arg(layer: i32) -> Result<Layers> {
    match layer {
        MC_LAYER_NONE => Ok(Layers::None),
        MC_LAYER_ALL => Ok(Layers::All),
        l if l >= 0 => Ok(Layers::One(l as i64)),
        l => Err(err(
            ErrorKind::InvalidArgument,
            format!("layer {l} is negative and not MC_LAYER_NONE (-1) or MC_LAYER_ALL (-2)"),
        )),
    }
}

pub(crate) fn activation(a: mc_activation) -> Result<Activation> {
    Activation::from_index(a as i64).ok_or_else(|| {
        err(
            ErrorKind::InvalidArgument,
            format!("activation location {a} out of range (0..{MC_ACT_COUNT})"),
        )
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

/// The body of the `*_from_name` functions: NotFound names the unknown string.
pub(crate) unsafe fn lookup_name(
    name: *const c_char,
    out: *mut i32,
    what: &str,
    find: impl FnOnce(&str) -> Option<i32>,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let name = arg_str(name, "name")?;
        let value = find(name)
            .ok_or_else(|| err(ErrorKind::NotFound, format!("unknown {what} name {name:?}")))?;
        write_out(out, value);
        Ok(())
    })
}

/// Looks up a weight location by its transformer-debugger name (e.g. "attn.to_query").
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`name`, `out`), `MC_ERR_INVALID_ARGUMENT` (not UTF-8),
/// `MC_ERR_NOT_FOUND` (no such name), `MC_ERR_PANIC`.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_weight_location_from_name(
    name: *const c_char,
    out: *mut mc_weight_location,
) -> mc_status {
    lookup_name(name, out, "weight location", |n| {
        WeightLocation::from_name(n).map(|l| l as mc_weight_location)
    })
}

/// The transformer-debugger name of a weight location (static storage), or NULL when out of range.
///
/// Returns no status; NULL is its only failure.
#[no_mangle]
pub extern "C" fn mc_weight_location_name(loc: mc_weight_location) -> *const c_char {
    location(loc).map_or(std::ptr::null(), |l| l.c_name().as_ptr())
}

/// Whether a location is per-layer (takes a layer index) or model-wide (takes `MC_LAYER_NONE`).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`out`), `MC_ERR_INVALID_ARGUMENT` (`loc` out of range),
/// `MC_ERR_PANIC`.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_weight_location_per_layer(
    loc: mc_weight_location,
    out: *mut bool,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        write_out(out, location(loc)?.spec().per_layer());
        Ok(())
    })
}

/// Looks up a dimension by its transformer-debugger name (e.g. "residual_stream_channels").
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`name`, `out`), `MC_ERR_INVALID_ARGUMENT` (not UTF-8),
/// `MC_ERR_NOT_FOUND` (no such name), `MC_ERR_PANIC`.
///
/// # Safety
/// `name` is NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_dimension_from_name(
    name: *const c_char,
    out: *mut mc_dimension,
) -> mc_status {
    lookup_name(name, out, "dimension", |n| {
        Dimension::from_name(n).map(|d| d as mc_dimension)
    })
}

/// The transformer-debugger name of a dimension (static storage), or NULL when out of range.
///
/// Returns no status; NULL is its only failure.
#[no_mangle]
pub extern "C" fn mc_dimension_name(dim: mc_dimension) -> *const c_char {
    dimension(dim).map_or(std::ptr::null(), |d| d.c_name().as_ptr())
}

/// Looks up an activation location by name (e.g. "mlp.post_act").
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`name`, `out`), `MC_ERR_INVALID_ARGUMENT` (not UTF-8),
/// `MC_ERR_NOT_FOUND` (no such name), `MC_ERR_PANIC`.
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
///
/// Returns no status; NULL is its only failure.
#[no_mangle]
pub extern "C" fn mc_activation_name(act: mc_activation) -> *const c_char {
    activation(act).map_or(std::ptr::null(), |a| a.c_name().as_ptr())
}

/// Whether an activation location is per-layer (else model-wide).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`out`), `MC_ERR_INVALID_ARGUMENT` (`act` out of range),
/// `MC_ERR_PANIC`.
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
