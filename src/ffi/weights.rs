//! Weights through the C ABI: one location at a layer (or every layer stacked) as a DLPack
//! tensor, its shape without reading it, and transformer-debugger's embedding helpers.
use super::abi_struct::*;
use super::args::*;
use super::buffers::*;
use super::context::*;
use super::dlpack::*;
use super::enums::*;
use super::status::*;
use crate::context::{ModelContext, WeightRequest};
use crate::device::Device;
use crate::error::Result;
use crate::tensor::OwnedTensor;
use std::ffi::c_char;

/// The weight at `loc` in its standard shape (the dimension order `mc_describe_json` lists for it) as a versioned DLPack tensor.
/// `layer`: a layer index for per-layer locations, `MC_LAYER_NONE` for model-wide ones.
/// `normalize_dim`: `MC_DIM_NONE`, or a dimension appearing exactly once in the shape to
/// L2-normalise along. `device`: NULL for the context's. Free the result by calling its
/// `deleter` (from any thread); it stays valid after `mc_free`. Without normalisation or a
/// device change the tensor aliases the mapped file and carries `DLPACK_FLAG_BITMASK_READ_ONLY`.
/// Thread-safe.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `out`), `MC_ERR_INVALID_ARGUMENT` (`loc`, `layer` or
/// `normalize_dim` out of range or not fitting the location, a bad device string),
/// `MC_ERR_NOT_FOUND` (a piece missing from the checkpoint), `MC_ERR_IO`, `MC_ERR_FORMAT` /
/// `MC_ERR_FORBIDDEN` (a piece file that is not a safe torch.save or safetensors file, or a
/// piece whose shape disagrees with the config: the message names the config keys), `MC_ERR_SHAPE`
/// (a piece's head axis that the head count does not divide), `MC_ERR_DEVICE`,
/// `MC_ERR_NETWORK` (a remote piece), `MC_ERR_UNSUPPORTED` (a tokenizer-only context, or a
/// stored dtype DLPack cannot carry), `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`.
///
/// # Safety
/// `ctx` is NULL or a live context; `device` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_get_weight(
    ctx: *const mc_context,
    loc: mc_weight_location,
    layer: i32,
    normalize_dim: mc_dimension,
    device: *const c_char,
    out: *mut *mut DLManagedTensorVersioned,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let t = weight(ctx, loc, layer, normalize_dim, device)?;
        write_out(out, export_versioned(t)?);
        Ok(())
    })
}

/// `mc_get_weight` returning a legacy `DLManagedTensor` (no version, no read-only flag),
/// for consumers that only read the pre-1.0 struct (e.g. DLPack.jl). Free with its deleter.
///
/// Errors: as for `mc_get_weight`.
///
/// # Safety
/// As for `mc_get_weight`.
#[no_mangle]
pub unsafe extern "C" fn mc_get_weight_legacy(
    ctx: *const mc_context,
    loc: mc_weight_location,
    layer: i32,
    normalize_dim: mc_dimension,
    device: *const c_char,
    out: *mut *mut DLManagedTensor,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let t = weight(ctx, loc, layer, normalize_dim, device)?;
        write_out(out, export_legacy(t)?);
        Ok(())
    })
}

unsafe fn weight(
    ctx: *const mc_context,
    loc: mc_weight_location,
    layer: i32,
    normalize_dim: mc_dimension,
    device: *const c_char,
) -> Result<OwnedTensor> {
    let mut req = struct_defaults::<mc_weight_request>();
    (req.location, req.layer, req.normalize_dim, req.device) = (loc, layer, normalize_dim, device);
    weight_ex(ctx, &req)
}

/// A weight request for `mc_get_weight_ex`; fill with `mc_weight_request_init(&r, sizeof r)`.
#[repr(C)]
pub struct mc_weight_request {
    /// The size the caller was compiled with, written by `mc_weight_request_init`.
    pub struct_size: u32,
    pub location: mc_weight_location,
    /// A layer, `MC_LAYER_NONE` (model-wide locations) or `MC_LAYER_ALL` (per-layer locations
    /// stacked as `[n_layers, ...]`, a new tensor).
    pub layer: i32,
    /// `MC_DIM_NONE` or a dimension appearing once in the location's shape.
    pub normalize_dim: mc_dimension,
    /// `MC_DTYPE_NONE` (default: as stored) or `MC_DTYPE_FLOAT32/FLOAT16/BFLOAT16`: converts
    /// only this result, never a copy of the model.
    pub dtype: mc_dtype,
    /// NULL: the context's device. Only read during the call.
    pub device: *const c_char,
}

impl AbiStruct for mc_weight_request {
    const NAME: &'static str = "mc_weight_request";
    const MIN_SIZE: usize = 32;
    unsafe fn write_defaults(p: *mut Self) {
        (&raw mut (*p).struct_size).write(std::mem::size_of::<Self>() as u32);
        (&raw mut (*p).location).write(0);
        (&raw mut (*p).layer).write(MC_LAYER_NONE);
        (&raw mut (*p).normalize_dim).write(MC_DIM_NONE);
        (&raw mut (*p).device).write(std::ptr::null());
        (&raw mut (*p).dtype).write(MC_DTYPE_NONE);
    }
}

/// Fills `*req` for the caller's `size` (pass `sizeof *req`): zeroes all `size` bytes, writes
/// the defaults (location 0, `MC_LAYER_NONE`, `MC_DIM_NONE`, the context's device, the stored
/// dtype) and sets `struct_size = size`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`req`), `MC_ERR_INVALID_ARGUMENT` (`size` below the 0.2 size
/// of the struct; nothing is written), `MC_ERR_PANIC`.
///
/// # Safety
/// `req` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_weight_request_init(
    req: *mut mc_weight_request,
    size: usize,
) -> mc_status {
    init_struct(req, size)
}

/// `mc_get_weight` with every option (`mc_weight_request`: stacks over layers, dtype
/// conversion). Free the result with its deleter. Thread-safe.
///
/// Errors: as for `mc_get_weight`, and `MC_ERR_NULL_ARGUMENT` (`req`),
/// `MC_ERR_INVALID_ARGUMENT` (`req->struct_size` below the 0.2 size, `req->dtype` out of
/// range), `MC_ERR_UNSUPPORTED` (a non-zero byte past the library's size of the struct).
///
/// # Safety
/// `ctx` NULL or live; `req` NULL or valid for `req->struct_size` bytes; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_get_weight_ex(
    ctx: *const mc_context,
    req: *const mc_weight_request,
    out: *mut *mut DLManagedTensorVersioned,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let r = read_request(req, "req")?;
        write_out(out, export_versioned(weight_ex(ctx, &r)?)?);
        Ok(())
    })
}

unsafe fn weight_ex(ctx: *const mc_context, r: &mc_weight_request) -> Result<OwnedTensor> {
    let ctx = ctx_arg(ctx)?;
    let req = WeightRequest {
        location: location(r.location)?,
        layer: layer_arg(r.layer)?,
        normalize_dim: match r.normalize_dim {
            MC_DIM_NONE => None,
            d => Some(dimension(d)?),
        },
        device: device_arg(r.device)?,
        dtype: dtype_arg(r.dtype)?.map(|d| d.kind()),
    };
    ctx.weight(&req)
}

/// The shape a weight request for `loc` and `layer` returns (size probe: `shape` NULL with
/// `capacity` 0 gives `MC_OK` and `*ndim`; at most 4 dimensions). Reads no piece. Thread-safe.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `ndim`), `MC_ERR_INVALID_ARGUMENT` (`loc` or `layer`
/// out of range), `MC_ERR_UNSUPPORTED` (a tokenizer-only context), `MC_ERR_BUFFER_TOO_SMALL`
/// (`capacity` below the rank: `*ndim` is the rank, `shape` untouched), `MC_ERR_PANIC`.
///
/// # Safety
/// `ctx` NULL or live; `shape` NULL or valid for `capacity` values; `ndim` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_weight_shape(
    ctx: *const mc_context,
    loc: mc_weight_location,
    layer: i32,
    shape: *mut i64,
    capacity: usize,
    ndim: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(ndim, "ndim")?;
        let dims = ctx_arg(ctx)?.weight_shape(location(loc)?, layer_arg(layer)?)?;
        write_sized(&dims, shape, capacity, ndim, "shape")
    })
}

/// The body of calls handing out one tensor computed from the context and a device.
unsafe fn tensor_out(
    ctx: *const mc_context,
    device: *const c_char,
    out: *mut *mut DLManagedTensorVersioned,
    make: impl FnOnce(&dyn ModelContext, Option<Device>) -> Result<OwnedTensor>,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let t = make(ctx_arg(ctx)?, device_arg(device)?)?;
        write_out(out, export_versioned(t)?);
        Ok(())
    })
}

/// transformer-debugger's `get_embedding`: the token embedding `[vocab_size, d_model]`. Free with its deleter.
///
/// Errors: as for `mc_get_weight`.
///
/// # Safety
/// As for `mc_get_weight`.
#[no_mangle]
pub unsafe extern "C" fn mc_get_embedding(
    ctx: *const mc_context,
    device: *const c_char,
    out: *mut *mut DLManagedTensorVersioned,
) -> mc_status {
    tensor_out(ctx, device, out, |c, d| c.get_embedding(d))
}

/// transformer-debugger's `get_unembedding_with_ln_gain`: `[d_model, vocab_size]` rows scaled by the
/// final layer-norm gain (a new, writable tensor). Free with its deleter.
///
/// Errors: as for `mc_get_weight`.
///
/// # Safety
/// As for `mc_get_weight`.
#[no_mangle]
pub unsafe extern "C" fn mc_get_unembedding_with_ln_gain(
    ctx: *const mc_context,
    device: *const c_char,
    out: *mut *mut DLManagedTensorVersioned,
) -> mc_status {
    tensor_out(ctx, device, out, |c, d| c.get_unembedding_with_ln_gain(d))
}
