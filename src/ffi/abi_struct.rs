//! Options and request structs that carry the caller's size (`struct_size`): their `_init`
//! calls and the reading of a struct from an older or newer caller.
use super::args::*;
use super::status::*;
use crate::error::{err, ErrorKind, Result};

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
pub(crate) fn zeroed_defaults<T: AbiStruct>() -> std::mem::MaybeUninit<T> {
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
pub(crate) unsafe fn read_struct<T: AbiStruct>(p: *const T, what: &str) -> Result<T> {
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
