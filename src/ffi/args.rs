//! Arguments from C: every pointer checked before it is read, strings as UTF-8, arrays with
//! their lengths (copies made through fallible allocations).
use crate::device::Device;
use crate::error::{err, ErrorKind, Result};
use std::ffi::{c_char, CStr};

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

pub(crate) unsafe fn device_arg(device: *const c_char) -> Result<Option<Device>> {
    arg_opt_str(device, "device")?
        .map(Device::parse_available)
        .transpose()
}
