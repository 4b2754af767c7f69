//! Results into the caller's memory: out-parameters, and buffers with the size probe (a NULL
//! buffer with capacity 0 gives the length needed).
use super::args::*;
use crate::error::{err, ErrorKind, Result};

/// Writes an out-parameter; only called on success, after `arg_out` checked the pointer.
///
/// # Safety
/// `p` is non-NULL and valid for writes.
pub(crate) unsafe fn write_out<T>(p: *mut T, value: T) {
    p.write(value)
}

/// Size probe check: `Ok(true)` when `data` fits `buf` (the caller then writes it), `Ok(false)`
/// for a probe (NULL buffer, capacity 0). Either way `*n_out` receives the needed length, also
/// when the buffer is too small (the one out-parameter written on that failure).
///
/// # Safety
/// `n_out` was checked by `arg_out`.
pub(crate) unsafe fn fits<T>(
    needed: usize,
    buf: *mut T,
    capacity: usize,
    n_out: *mut usize,
    what: &str,
) -> Result<bool> {
    if buf.is_null() && capacity == 0 {
        write_out(n_out, needed);
        return Ok(false);
    }
    if buf.is_null() || capacity < needed {
        write_out(n_out, needed);
        return Err(err(
            ErrorKind::BufferTooSmall,
            format!(
                "`{what}` holds {capacity} but {needed} are needed{}",
                if buf.is_null() {
                    " (and it is NULL)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(true)
}

/// Copies `data` into `buf` (which `fits` accepted) and writes its length.
///
/// # Safety
/// `buf` is valid for `data.len()` writes; `n_out` is writable.
pub(crate) unsafe fn write_data<T: Copy>(data: &[T], buf: *mut T, n_out: *mut usize) {
    std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
    write_out(n_out, data.len());
}

/// The size probe for a slice result: writes `data` when it fits, its length always.
///
/// # Safety
/// As for `fits` and `write_data`.
pub(crate) unsafe fn write_sized<T: Copy>(
    data: &[T],
    buf: *mut T,
    capacity: usize,
    n_out: *mut usize,
    what: &str,
) -> Result<()> {
    if fits(data.len(), buf, capacity, n_out, what)? {
        write_data(data, buf, n_out);
    }
    Ok(())
}

/// Checks an offsets buffer of `capacity` entries for `n` items (it needs `n + 1`), up front.
pub(crate) fn check_offsets(offsets: *mut usize, capacity: usize, n: usize) -> Result<()> {
    arg_out(offsets, "offsets")?;
    match capacity > n {
        true => Ok(()),
        false => Err(err(
            ErrorKind::BufferTooSmall,
            format!(
                "`offsets` holds {capacity} entries but {} are needed (n + 1)",
                n + 1
            ),
        )),
    }
}

/// `lengths` as n + 1 offsets (0, l0, l0 + l1, ...) into `offsets`.
///
/// # Safety
/// `offsets` is valid for `lengths.len() + 1` writes (`check_offsets` accepted it).
pub(crate) unsafe fn write_offsets(lengths: impl Iterator<Item = usize>, offsets: *mut usize) {
    let mut total = 0;
    offsets.write(0);
    for (i, len) in lengths.enumerate() {
        total += len;
        offsets.add(i + 1).write(total);
    }
}
