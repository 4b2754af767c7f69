//! The C ABI. Each entry point converts its arguments, calls one core function and converts
//! the result; `guard` keeps panics from crossing the boundary and records the error message.
#![allow(non_camel_case_types)]

pub mod api;
pub mod dlpack;
pub mod forward;
pub mod model;
pub mod sample;
pub mod state;
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

/// `n` elements at `p`: NULL is allowed only with `n == 0`.
///
/// # Safety
/// `p` is NULL or valid for reads of `n` elements for `'a`.
pub(crate) unsafe fn arg_slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(err(
            ErrorKind::NullArgument,
            format!("`{what}` is NULL but its length is {n}"),
        ));
    }
    Ok(std::slice::from_raw_parts(p, n))
}

/// `arg_slice` copied into a vector whose allocation fails as `MC_ERR_OUT_OF_MEMORY`.
///
/// # Safety
/// As `arg_slice`.
pub(crate) unsafe fn arg_vec<T: Copy>(p: *const T, n: usize, what: &str) -> Result<Vec<T>> {
    let s = arg_slice(p, n, what)?;
    let mut v = crate::error::vec_with_capacity(s.len(), &format!("elements of `{what}`"))?;
    v.extend_from_slice(s);
    Ok(v)
}

/// Checks an out-pointer up front, so the body can fail before doing any work.
pub(crate) fn arg_out<T>(p: *mut T, what: &str) -> Result<()> {
    if p.is_null() {
        Err(err(ErrorKind::NullArgument, format!("`{what}` is NULL")))
    } else {
        Ok(())
    }
}

/// An options or request struct of the C ABI. It starts with `uint32_t struct_size`, the size
/// the caller was compiled with; `MIN_SIZE` is its size in ABI 0.2, the first version of this
/// rule. Fields are only appended, at offsets at or past the previous version's size, and a
/// zero in an appended field always means "behave as before".
pub(crate) trait AbiStruct: Sized {
    /// The C name, for messages.
    const NAME: &'static str;
    /// Its size in ABI 0.2 (pinned by `tests/abi_layout.rs`).
    const MIN_SIZE: usize;
    /// Writes every field's default, field by field, so padding keeps what it held.
    ///
    /// # Safety
    /// `p` is valid for writes of `size_of::<Self>()` bytes.
    unsafe fn write_defaults(p: *mut Self);
}

/// The library's defaults in a zeroed buffer (padding included).
fn zeroed_defaults<T: AbiStruct>() -> std::mem::MaybeUninit<T> {
    let mut buf = std::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the buffer holds size_of::<T>() writable bytes.
    unsafe { T::write_defaults(buf.as_mut_ptr()) };
    buf
}

/// The body of every `mc_<struct>_init(p, size)`: zeroes `size` bytes, writes the defaults of
/// the fields within them and sets `struct_size = size`. A size below the minimum writes nothing.
///
/// # Safety
/// `p` is NULL or valid for writes of `size` bytes.
pub(crate) unsafe fn init_struct<T: AbiStruct>(p: *mut T, size: usize) -> mc_status {
    guard(|| {
        arg_out(p, "p")?;
        if size < T::MIN_SIZE || size > u32::MAX as usize {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "{}_init: size {size} is not a size of {} (at least {}, its size in ABI \
                     0.2; pass sizeof the struct)",
                    T::NAME,
                    T::NAME,
                    T::MIN_SIZE
                ),
            ));
        }
        let defaults = zeroed_defaults::<T>();
        let bytes = p as *mut u8;
        let known = size.min(std::mem::size_of::<T>());
        std::ptr::copy_nonoverlapping(defaults.as_ptr() as *const u8, bytes, known);
        std::ptr::write_bytes(bytes.add(known), 0, size - known);
        (bytes as *mut u32).write_unaligned(size as u32);
        Ok(())
    })
}

/// Reads a struct filled by its `_init`: exactly `struct_size` bytes over the defaults. A
/// size below the minimum is `InvalidArgument`; bytes past the library's size must be zero
/// (fields of a newer version left at "behave as before"), else `Unsupported` with the offset.
///
/// # Safety
/// `p` is non-NULL and points to at least `p->struct_size` readable bytes.
unsafe fn read_struct<T: AbiStruct>(p: *const T, what: &str) -> Result<T> {
    let given = std::ptr::read_unaligned(p as *const u32) as usize;
    if given < T::MIN_SIZE {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "`{what}->struct_size` = {given}, below {} (sizeof {} in ABI 0.2): fill it \
                 with {}_init(&s, sizeof s)",
                T::MIN_SIZE,
                T::NAME,
                T::NAME
            ),
        ));
    }
    let size = std::mem::size_of::<T>();
    let bytes = p as *const u8;
    if given > size {
        let tail = std::slice::from_raw_parts(bytes.add(size), given - size);
        if let Some(i) = tail.iter().position(|&b| b != 0) {
            return Err(err(
                ErrorKind::Unsupported,
                format!(
                    "{} (`{what}`): byte at offset {} is non-zero, past the {size} bytes this \
                     library (model_context {}) knows; a field of a newer version is set",
                    T::NAME,
                    size + i,
                    env!("CARGO_PKG_VERSION")
                ),
            ));
        }
    }
    let mut opts = zeroed_defaults::<T>();
    std::ptr::copy_nonoverlapping(bytes, opts.as_mut_ptr() as *mut u8, given.min(size));
    Ok(opts.assume_init())
}

/// An options struct argument: NULL means every default.
///
/// # Safety
/// As for `read_struct`, or `p` NULL.
pub(crate) unsafe fn read_options<T: AbiStruct>(p: *const T, what: &str) -> Result<T> {
    if p.is_null() {
        return Ok(zeroed_defaults::<T>().assume_init());
    }
    read_struct(p, what)
}

/// A request struct argument: NULL is `NullArgument`.
///
/// # Safety
/// As for `read_struct`, or `p` NULL.
pub(crate) unsafe fn read_request<T: AbiStruct>(p: *const T, what: &str) -> Result<T> {
    arg_ref(p, what)?;
    read_struct(p, what)
}

/// The library's defaults of a struct, for internal short forms (`mc_open` over `mc_open_ex`).
pub(crate) fn struct_defaults<T: AbiStruct>() -> T {
    // SAFETY: every field was written by write_defaults; padding is zero.
    unsafe { zeroed_defaults::<T>().assume_init() }
}

/// Writes an out-parameter; only called on success, after `arg_out` checked the pointer.
///
/// # Safety
/// `p` is non-NULL and valid for writes.
pub(crate) unsafe fn write_out<T>(p: *mut T, value: T) {
    p.write(value)
}

/// Splits `ids` into `n_rows` rows at `offsets` (`n_rows + 1` entries: 0, non-decreasing, the
/// last equal to `ids.len()`), the layout `mc_encode_batch` writes; `what` names the request.
pub(crate) fn split_rows(
    ids: &[i64],
    offsets: &[usize],
    n_rows: usize,
    what: &str,
) -> Result<Vec<Vec<i64>>> {
    let bad = |m: String| Err(err(ErrorKind::InvalidArgument, format!("{what}: {m}")));
    if n_rows == 0 {
        return bad("no rows".into());
    }
    if offsets.len() != n_rows + 1 {
        return bad(format!(
            "{} offsets for {n_rows} rows (n_rows + 1 are needed)",
            offsets.len()
        ));
    }
    if offsets[0] != 0 || offsets[n_rows] != ids.len() {
        return bad(format!(
            "offsets run {} .. {}, but must run 0 .. {} (the number of tokens)",
            offsets[0],
            offsets[n_rows],
            ids.len()
        ));
    }
    if let Some(r) = offsets.windows(2).position(|w| w[0] > w[1]) {
        return bad(format!(
            "offsets[{r}] = {} is above offsets[{}] = {}",
            offsets[r],
            r + 1,
            offsets[r + 1]
        ));
    }
    let mut rows = crate::error::vec_with_capacity(offsets.len() - 1, "rows")?;
    for w in offsets.windows(2) {
        let mut row = crate::error::vec_with_capacity(w[1] - w[0], "token ids of a row")?;
        row.extend_from_slice(&ids[w[0]..w[1]]);
        rows.push(row);
    }
    Ok(rows)
}
