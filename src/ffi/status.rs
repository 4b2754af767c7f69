//! Status codes (one per error class, in the conventions' order, never renumbered) and the
//! thread-local message of the last failure; `guard` runs every entry point's body so that
//! errors become a status and a message and no panic crosses the boundary.
use crate::error::{err, Error, ErrorKind, Result};
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Result of every fallible call: `MC_OK` or the class of the failure (see `mc_last_error`).
pub type mc_status = i32;

pub const MC_OK: mc_status = 0;

pub const MC_ERR_NULL_ARGUMENT: mc_status = 1;

pub const MC_ERR_INVALID_ARGUMENT: mc_status = 2;

pub const MC_ERR_NOT_FOUND: mc_status = 3;

pub const MC_ERR_IO: mc_status = 4;

pub const MC_ERR_FORMAT: mc_status = 5;

pub const MC_ERR_FORBIDDEN: mc_status = 6;

pub const MC_ERR_SHAPE: mc_status = 7;

pub const MC_ERR_DEVICE: mc_status = 8;

pub const MC_ERR_TOKEN: mc_status = 9;

pub const MC_ERR_UNSUPPORTED: mc_status = 10;

pub const MC_ERR_BUFFER_TOO_SMALL: mc_status = 11;

pub const MC_ERR_NETWORK: mc_status = 12;

pub const MC_ERR_PANIC: mc_status = 13;

pub const MC_ERR_INTERNAL: mc_status = 14;

/// An allocation sized by the input failed; the message names what and how much.
pub const MC_ERR_OUT_OF_MEMORY: mc_status = 15;

/// `(status, name)` in code order; `mc_status_name` and the tests read it.
pub(crate) const STATUS_NAMES: [(mc_status, &std::ffi::CStr); 16] = [
    (MC_OK, c"MC_OK"),
    (MC_ERR_NULL_ARGUMENT, c"MC_ERR_NULL_ARGUMENT"),
    (MC_ERR_INVALID_ARGUMENT, c"MC_ERR_INVALID_ARGUMENT"),
    (MC_ERR_NOT_FOUND, c"MC_ERR_NOT_FOUND"),
    (MC_ERR_IO, c"MC_ERR_IO"),
    (MC_ERR_FORMAT, c"MC_ERR_FORMAT"),
    (MC_ERR_FORBIDDEN, c"MC_ERR_FORBIDDEN"),
    (MC_ERR_SHAPE, c"MC_ERR_SHAPE"),
    (MC_ERR_DEVICE, c"MC_ERR_DEVICE"),
    (MC_ERR_TOKEN, c"MC_ERR_TOKEN"),
    (MC_ERR_UNSUPPORTED, c"MC_ERR_UNSUPPORTED"),
    (MC_ERR_BUFFER_TOO_SMALL, c"MC_ERR_BUFFER_TOO_SMALL"),
    (MC_ERR_NETWORK, c"MC_ERR_NETWORK"),
    (MC_ERR_PANIC, c"MC_ERR_PANIC"),
    (MC_ERR_INTERNAL, c"MC_ERR_INTERNAL"),
    (MC_ERR_OUT_OF_MEMORY, c"MC_ERR_OUT_OF_MEMORY"),
];

pub(crate) fn status_of(kind: ErrorKind) -> mc_status {
    match kind {
        ErrorKind::NullArgument => MC_ERR_NULL_ARGUMENT,
        ErrorKind::InvalidArgument => MC_ERR_INVALID_ARGUMENT,
        ErrorKind::NotFound => MC_ERR_NOT_FOUND,
        ErrorKind::Io => MC_ERR_IO,
        ErrorKind::Format => MC_ERR_FORMAT,
        ErrorKind::Forbidden => MC_ERR_FORBIDDEN,
        ErrorKind::Shape => MC_ERR_SHAPE,
        ErrorKind::Device => MC_ERR_DEVICE,
        ErrorKind::Token => MC_ERR_TOKEN,
        ErrorKind::Unsupported => MC_ERR_UNSUPPORTED,
        ErrorKind::BufferTooSmall => MC_ERR_BUFFER_TOO_SMALL,
        ErrorKind::Network => MC_ERR_NETWORK,
        ErrorKind::Panic => MC_ERR_PANIC,
        ErrorKind::Internal => MC_ERR_INTERNAL,
        ErrorKind::OutOfMemory => MC_ERR_OUT_OF_MEMORY,
    }
}

/// The constant's name of a status, or "MC_ERR_UNKNOWN" for a value outside the list.
///
/// Returns no status; never fails.
#[no_mangle]
pub extern "C" fn mc_status_name(status: mc_status) -> *const c_char {
    STATUS_NAMES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(c"MC_ERR_UNKNOWN".as_ptr(), |(_, n)| n.as_ptr())
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Pointer to this thread's last error message (valid until the next failing call here).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into())
}

/// Runs an entry point's body: errors become their status and message, panics MC_ERR_PANIC.
pub(crate) fn guard(body: impl FnOnce() -> Result<()>) -> mc_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MC_OK,
        Ok(Err(e)) => fail(&e),
        Err(payload) => fail(&err(
            ErrorKind::Panic,
            format!(
                "internal panic (a bug in model_context): {}",
                panic_message(&*payload)
            ),
        )),
    }
}

fn fail(e: &Error) -> mc_status {
    set_last_error(&e.message);
    status_of(e.kind)
}

/// The message of the last failed call on this thread (never NULL; "" before any failure).
/// A successful call does not clear it. Valid until the next failing call on this thread.
///
/// Returns no status; never fails.
#[no_mangle]
pub extern "C" fn mc_last_error() -> *const c_char {
    last_error_ptr()
}
