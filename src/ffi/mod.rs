//! The C ABI. Each entry point converts its arguments, calls one core function and converts
//! the result; `guard` keeps panics from crossing the boundary and records the error message.
#![allow(non_camel_case_types)]

pub mod api;
pub mod dlpack;
pub mod model;
pub mod status;
pub mod tokens;

use crate::error::{err, Error, ErrorKind, Result};
use status::*;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

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

/// Reads a required C string argument, rejecting NULL and invalid UTF-8 with the byte offset.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(err(ErrorKind::NullArgument, format!("`{what}` is NULL")));
    }
    CStr::from_ptr(p).to_str().map_err(|e| {
        err(
            ErrorKind::InvalidArgument,
            format!(
                "`{what}` is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Reads an optional C string argument: NULL means "not given".
///
/// # Safety
/// As for `arg_str`.
pub(crate) unsafe fn arg_opt_str<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        arg_str(p, what).map(Some)
    }
}

/// Borrows a required pointer argument.
///
/// # Safety
/// `p` is NULL or valid for reads for `'a`.
pub(crate) unsafe fn arg_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    p.as_ref()
        .ok_or_else(|| err(ErrorKind::NullArgument, format!("`{what}` is NULL")))
}

/// Checks an out-pointer up front, so the body can fail before doing any work.
pub(crate) fn arg_out<T>(p: *mut T, what: &str) -> Result<()> {
    if p.is_null() {
        Err(err(ErrorKind::NullArgument, format!("`{what}` is NULL")))
    } else {
        Ok(())
    }
}

/// Reads an options struct whose first field is `uint32_t struct_size`: the caller's bytes
/// over `defaults`, only as many as it says it has (an older caller knows fewer fields).
/// Fields are only ever appended after the previous version's `sizeof`.
///
/// # Safety
/// `p` is NULL or points to at least `p->struct_size` readable bytes.
pub(crate) unsafe fn read_options<T>(p: *const T, defaults: T) -> Result<T> {
    let mut opts = defaults;
    if p.is_null() {
        return Ok(opts);
    }
    let size = std::mem::size_of::<T>();
    let given = std::ptr::read_unaligned(p as *const u32) as usize;
    if given < std::mem::size_of::<u32>() {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "{}.struct_size = {given}: start from its _default() function",
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("options")
            ),
        ));
    }
    // Keep our own struct_size (the first 4 bytes) and copy the caller's fields after it.
    let n = given.min(size);
    let header = std::mem::size_of::<u32>();
    std::ptr::copy_nonoverlapping(
        (p as *const u8).add(header),
        (&mut opts as *mut T as *mut u8).add(header),
        n - header,
    );
    Ok(opts)
}

/// Writes an out-parameter; only called on success, after `arg_out` checked the pointer.
///
/// # Safety
/// `p` is non-NULL and valid for writes.
pub(crate) unsafe fn write_out<T>(p: *mut T, value: T) {
    p.write(value)
}
