//! The entry points. Thread safety: every function taking `const mc_context *` may run
//! concurrently with any other such call on the same context; only `mc_free` needs exclusive use.
use super::dlpack::{export_legacy, export_versioned, DLManagedTensor, DLManagedTensorVersioned};
use super::model::{dtype_arg, mc_dtype, MC_DTYPE_NONE};
use super::status::*;
use super::*;
use crate::context::{open_context, Layers, ModelContext, OpenOptions, WeightRequest};
use crate::device::Device;
use crate::dims::Dimension;
use crate::source::{Progress, SourceOptions};
use crate::tensor::OwnedTensor;
use crate::weights::WeightLocation;
use std::ffi::{c_char, CString};
use std::path::PathBuf;

/// An open model context (opaque). Create with `mc_open` / `mc_open_ex`, free with `mc_free`.
pub struct mc_context {
    inner: Box<dyn ModelContext>,
}

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

pub const MC_VERSION_MAJOR: u32 = 0;
pub const MC_VERSION_MINOR: u32 = 2;
pub const MC_VERSION_PATCH: u32 = 0;

/// Options of `mc_open_ex`. Fill with `mc_open_options_init(&opts, sizeof opts)`, then set
/// fields (docs/abi.md: fields are only appended, and zero in a new field is the old behaviour).
#[repr(C)]
pub struct mc_open_options {
    /// The size the caller was compiled with, written by `mc_open_options_init`.
    pub struct_size: u32,
    /// "cpu", "cuda", "cuda:N" or "mps"; NULL: CUDA device 0 if available, else MPS, else CPU.
    /// Only read during the call.
    pub device: *const c_char,
    /// Weight processing (docs/weight-processing.md), all false by default so weights are as
    /// stored: fold ln_1/ln_2 into the weights that read them.
    pub fold_ln: bool,
    /// Subtract the d_model mean from every weight and bias writing to the residual stream.
    pub center_writing_weights: bool,
    /// Subtract the vocabulary mean from the unembedding (logits shift by a per-position constant).
    pub center_unembed: bool,
    /// Move the value biases into the attention output bias.
    pub fold_value_biases: bool,
    /// Cache folder of remote checkpoints (named models, URLs); NULL: `$MC_MODEL_CACHE_DIR`,
    /// else `$XDG_CACHE_HOME/model_context/models`, else `$HOME/.cache/model_context/models`.
    /// Only read during the call.
    pub cache_dir: *const c_char,
    /// Base URL of the named models (a mirror); NULL: `$MC_MODEL_BASE_URL`, else
    /// transformer-debugger's public bucket
    /// (`https://openaipublic.blob.core.windows.net/neuron-explainer/subject-models`).
    /// Only read during the call.
    pub base_url: *const c_char,
    /// true: use the cache only and never connect; a piece missing from the cache is
    /// `MC_ERR_NOT_FOUND` naming it. false (default): `$MC_OFFLINE=1` also turns it on.
    pub offline: bool,
    /// Called while a remote file downloads; NULL (default): no reports.
    pub progress: mc_progress_fn,
    /// Passed to `progress` unchanged; must stay valid until `mc_free` of the context.
    pub progress_user_data: *mut std::ffi::c_void,
}

/// Download progress of a remote checkpoint: `what` names the file (e.g.
/// "piece `tok_embed.weight`", valid only during the call), `bytes_total` is 0 when the server
/// sent no length. Called at the start, about every MiB and at the end of each download, on
/// the thread whose call (`mc_open_ex`, `mc_get_weight`, ...) needs the file, so possibly on
/// several threads at once. It must return normally (no exception, no longjmp).
pub type mc_progress_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut std::ffi::c_void,
        what: *const c_char,
        bytes_done: u64,
        bytes_total: u64,
    ),
>;

/// The C progress callback as the core's `Progress`.
fn c_progress(
    f: unsafe extern "C" fn(*mut std::ffi::c_void, *const c_char, u64, u64),
    user_data: *mut std::ffi::c_void,
) -> Progress {
    // The caller promises that user_data stays valid, and the callback thread-safe, until
    // mc_free; the address travels as an integer so the closure is Send + Sync.
    let user_data = user_data as usize;
    Progress(std::sync::Arc::new(
        move |what: &str, done: u64, total: Option<u64>| {
            let what = std::ffi::CString::new(what.replace('\0', "")).unwrap_or_default();
            // SAFETY: a C function pointer given by the caller for exactly this use.
            unsafe {
                f(
                    user_data as *mut std::ffi::c_void,
                    what.as_ptr(),
                    done,
                    total.unwrap_or(0),
                )
            }
        },
    ))
}

fn location(loc: mc_weight_location) -> Result<WeightLocation> {
    WeightLocation::from_index(loc as i64).ok_or_else(|| {
        err(
            ErrorKind::InvalidArgument,
            format!("weight location {loc} out of range (0..{MC_WEIGHT_COUNT})"),
        )
    })
}

fn dimension(dim: mc_dimension) -> Result<Dimension> {
    Dimension::from_index(dim as i64).ok_or_else(|| {
        err(
            ErrorKind::InvalidArgument,
            format!("dimension {dim} out of range (0..{MC_DIM_COUNT})"),
        )
    })
}

fn layer_arg(layer: i32) -> Result<Layers> {
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

unsafe fn device_arg(device: *const c_char) -> Result<Option<Device>> {
    arg_opt_str(device, "device")?
        .map(Device::parse_available)
        .transpose()
}

pub(crate) unsafe fn ctx_arg<'a>(ctx: *const mc_context) -> Result<&'a dyn ModelContext> {
    Ok(&*arg_ref(ctx, "ctx")?.inner)
}

/// The message of the last failed call on this thread (never NULL; "" before any failure).
/// A successful call does not clear it. Valid until the next failing call on this thread.
///
/// Returns no status; never fails.
#[no_mangle]
pub extern "C" fn mc_last_error() -> *const c_char {
    last_error_ptr()
}

/// The library version ("MAJOR.MINOR.PATCH", static storage; do not free).
///
/// Returns no status; never fails.
#[no_mangle]
pub extern "C" fn mc_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

impl AbiStruct for mc_open_options {
    const NAME: &'static str = "mc_open_options";
    const MIN_SIZE: usize = 64;
    unsafe fn write_defaults(p: *mut Self) {
        (&raw mut (*p).struct_size).write(std::mem::size_of::<Self>() as u32);
        (&raw mut (*p).device).write(std::ptr::null());
        (&raw mut (*p).fold_ln).write(false);
        (&raw mut (*p).center_writing_weights).write(false);
        (&raw mut (*p).center_unembed).write(false);
        (&raw mut (*p).fold_value_biases).write(false);
        (&raw mut (*p).cache_dir).write(std::ptr::null());
        (&raw mut (*p).base_url).write(std::ptr::null());
        (&raw mut (*p).offline).write(false);
        (&raw mut (*p).progress).write(None);
        (&raw mut (*p).progress_user_data).write(std::ptr::null_mut());
    }
}

/// Fills `*opts` for the caller's `size` (pass `sizeof *opts`): zeroes all `size` bytes, writes
/// the defaults (default device, no processing, default cache, online, no progress) and sets
/// `struct_size = size`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`opts`), `MC_ERR_INVALID_ARGUMENT` (`size` below the 0.2
/// size of the struct; nothing is written), `MC_ERR_PANIC`.
///
/// # Safety
/// `opts` is NULL or valid for writes of `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_open_options_init(
    opts: *mut mc_open_options,
    size: usize,
) -> mc_status {
    init_struct(opts, size)
}

/// Opens `model`, reading only its config.json; pieces are read on first use. `model` is one of:
/// a named model (`"gpt2-small"`, `"gpt2-medium"`, `"gpt2-large"`, `"gpt2-xl"`, fetched
/// from `mc_open_options.base_url`) or an `https://` / `http://` prefix of a transformer-debugger (TDB) checkpoint,
/// whose files are fetched on first use into the cache (see `mc_open_options`; a network
/// failure is `MC_ERR_NETWORK`); a local TDB folder (config.json and model_pieces/); or a
/// local Hugging Face GPT-2 folder (config.json with "model_type": "gpt2" and
/// model.safetensors or pytorch_model.bin; symbolic links are followed), read in the TDB
/// layout without a converted copy (a config the layout cannot represent is
/// `MC_ERR_UNSUPPORTED` naming the field). A folder that is neither, or both, is an error
/// saying what was expected. `device` NULL: the default device.
/// `model` = `"tiktoken:<encoding>"` (e.g. `"tiktoken:cl100k_base"`) opens a tokenizer-only
/// context: the token calls and `MC_DIM_VOCAB_SIZE` work, weight calls, `mc_config_json` and
/// other dimensions fail with `MC_ERR_UNSUPPORTED`; an unknown encoding fails here
/// (`MC_ERR_UNSUPPORTED`, the message lists the known ones).
/// On success `*out` receives a context to free with `mc_free`. Thread-safe.
///
/// Errors: as for `mc_open_ex`.
///
/// # Safety
/// `model` and `device` are NULL or NUL-terminated strings; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_open(
    model: *const c_char,
    device: *const c_char,
    out: *mut *mut mc_context,
) -> mc_status {
    let mut opts = struct_defaults::<mc_open_options>();
    opts.device = device;
    mc_open_ex(model, &opts, out)
}

/// `mc_open` with options (see `mc_open_options`); `opts` NULL means the defaults.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`model`, `out`), `MC_ERR_INVALID_ARGUMENT` (a string not
/// UTF-8, an unknown device string, `opts->struct_size` below the 0.2 size), `MC_ERR_NOT_FOUND`
/// (no such folder or file; offline and not cached), `MC_ERR_IO`, `MC_ERR_FORMAT` (config.json
/// malformed, over 16 MiB, or claiming more layers than a local folder's pieces or weight file
/// hold), `MC_ERR_UNSUPPORTED` (a config the layout cannot represent, an
/// unknown tiktoken encoding, a non-zero byte past the library's size of `opts`),
/// `MC_ERR_DEVICE` (the device is absent), `MC_ERR_NETWORK` (a remote config could not be
/// fetched), `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`.
///
/// # Safety
/// `opts` is NULL or points to at least `opts->struct_size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn mc_open_ex(
    model: *const c_char,
    opts: *const mc_open_options,
    out: *mut *mut mc_context,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let model = arg_str(model, "model")?;
        let opts = read_options(opts, "opts")?;
        let options = OpenOptions {
            device: device_arg(opts.device)?,
            processing: crate::processing::Processing {
                fold_ln: opts.fold_ln,
                center_writing_weights: opts.center_writing_weights,
                center_unembed: opts.center_unembed,
                fold_value_biases: opts.fold_value_biases,
            },
            source: SourceOptions {
                cache_dir: arg_opt_str(opts.cache_dir, "opts.cache_dir")?.map(PathBuf::from),
                offline: opts.offline,
                base_url: arg_opt_str(opts.base_url, "opts.base_url")?.map(str::to_string),
                progress: opts
                    .progress
                    .map(|f| c_progress(f, opts.progress_user_data)),
                retry: Default::default(),
            },
        };
        let handle = Box::new(mc_context {
            inner: open_context(model, &options)?,
        });
        write_out(out, Box::into_raw(handle));
        Ok(())
    })
}

/// Frees a context (NULL: no-op). Tensors it handed out stay valid. Not concurrent with
/// other calls on the same context.
///
/// Returns no status; never fails.
///
/// # Safety
/// `ctx` is NULL or a context from `mc_open`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn mc_free(ctx: *mut mc_context) {
    if !ctx.is_null() {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(Box::from_raw(ctx))));
    }
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
        write_out(out, location(loc)?.spec().per_layer);
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

/// The transformer-debugger name of a dimension (static storage), or NULL when out of range.
///
/// Returns no status; NULL is its only failure.
#[no_mangle]
pub extern "C" fn mc_dimension_name(dim: mc_dimension) -> *const c_char {
    dimension(dim).map_or(std::ptr::null(), |d| d.c_name().as_ptr())
}

/// Size of a model dimension (`singleton` is 1; activation-only dimensions are an error).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `out`), `MC_ERR_INVALID_ARGUMENT` (`dim` out of
/// range, or an activation-only dimension), `MC_ERR_UNSUPPORTED` (a tokenizer-only context, for
/// every dimension but the vocabulary), `MC_ERR_PANIC`.
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_dim_size(
    ctx: *const mc_context,
    dim: mc_dimension,
    out: *mut i64,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let size = ctx_arg(ctx)?.get_dim_size(dimension(dim)?)?;
        write_out(out, size);
        Ok(())
    })
}

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
        super::tokens::write_sized(&dims, shape, capacity, ndim, "shape")
    })
}

/// What the context supports, as JSON, so bindings need no hard-coded tables:
/// `{"weights": [{"name", "id", "per_layer", "dims": [names], "shape": [sizes]}],
///   "dimensions": [{"name", "id", "size" (null for activation-only dimensions)}],
///   "activations": [{"name", "id", "per_layer", "dims": [names]}]}`.
/// Free `*out` with `mc_string_free`. Thread-safe.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `out`), `MC_ERR_PANIC`.
///
/// # Safety
/// `ctx` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_describe_json(
    ctx: *const mc_context,
    out: *mut *mut c_char,
) -> mc_status {
    json_out(ctx, out, describe)
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

/// The body of calls handing out JSON as a string freed by `mc_string_free`.
unsafe fn json_out(
    ctx: *const mc_context,
    out: *mut *mut c_char,
    make: impl FnOnce(&dyn ModelContext) -> Result<serde_json::Value>,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let json = make(ctx_arg(ctx)?)?.to_string();
        let c =
            CString::new(json).map_err(|_| err(ErrorKind::Internal, "JSON contains a NUL byte"))?;
        write_out(out, c.into_raw());
        Ok(())
    })
}

fn describe(ctx: &dyn ModelContext) -> Result<serde_json::Value> {
    use serde_json::json;
    let names = |dims: &[Dimension]| dims.iter().map(|d| d.name()).collect::<Vec<_>>();
    let weights = WeightLocation::ALL
        .iter()
        .map(|&l| {
            let shape = ctx.shape_from_spec(l.spec().shape).ok();
            json!({"name": l.name(), "id": l as i32, "per_layer": l.spec().per_layer,
                   "dims": names(l.spec().shape), "shape": shape})
        })
        .collect::<Vec<_>>();
    let dimensions = Dimension::ALL
        .iter()
        .map(|&d| json!({"name": d.name(), "id": d as i32, "size": ctx.get_dim_size(d).ok()}))
        .collect::<Vec<_>>();
    let activations = crate::activations::Activation::ALL
        .iter()
        .map(|&a| json!({"name": a.name(), "id": a as i32, "per_layer": a.per_layer(), "dims": names(a.shape())}))
        .collect::<Vec<_>>();
    Ok(json!({"weights": weights, "dimensions": dimensions, "activations": activations}))
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

/// The config dictionary as JSON (the seven keys of config.json). Free `*out` with
/// `mc_string_free`.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `out`), `MC_ERR_UNSUPPORTED` (a tokenizer-only
/// context), `MC_ERR_PANIC`.
///
/// # Safety
/// `ctx` is NULL or a live context; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_config_json(
    ctx: *const mc_context,
    out: *mut *mut c_char,
) -> mc_status {
    json_out(ctx, out, |c| c.config_json())
}

/// Frees a string handed out by this library (NULL: no-op).
///
/// Returns no status; never fails.
///
/// # Safety
/// `s` is NULL or a string from this library, not freed before.
#[no_mangle]
pub unsafe extern "C" fn mc_string_free(s: *mut c_char) {
    if !s.is_null() {
        drop(std::ffi::CString::from_raw(s));
    }
}
