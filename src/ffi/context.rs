//! The context object: opening (with options and download progress), freeing, the config and
//! the description as JSON, dimension sizes, the library version. Thread safety: every
//! function taking `const mc_context *` may run concurrently with any other such call on the
//! same context; only `mc_free` needs exclusive use.
use super::abi_struct::*;
use super::args::*;
use super::buffers::*;
use super::enums::*;
use super::status::*;
use crate::context::{open_context, ModelContext, OpenOptions};
use crate::error::{err, ErrorKind, Result};
use crate::source::{Progress, SourceOptions};
use std::ffi::{c_char, CString};
use std::path::PathBuf;

/// An open model context (opaque). Create with `mc_open` / `mc_open_ex`, free with `mc_free`.
pub struct mc_context {
    inner: Box<dyn ModelContext>,
}

pub const MC_VERSION_MAJOR: u32 = 0;

pub const MC_VERSION_MINOR: u32 = 2;

pub const MC_VERSION_PATCH: u32 = 0;

pub(crate) unsafe fn ctx_arg<'a>(ctx: *const mc_context) -> Result<&'a dyn ModelContext> {
    Ok(&*arg_ref(ctx, "ctx")?.inner)
}

/// The library version ("MAJOR.MINOR.PATCH", static storage; do not free).
///
/// Returns no status; never fails.
#[no_mangle]
pub extern "C" fn mc_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

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
            processing: crate::context::processing::Processing {
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
    json_out(ctx, out, |c| Ok(crate::context::describe(c)))
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
