//! The bridge to the model's C++ half (`packed.cpp`, `gemv.cpp`: libtorch calls tch does not
//! wrap): tensors cross as `at::Tensor` pointers, and a failure as a null result plus this
//! thread's message (`guarded.h`), which becomes a `TchError` here.
use std::ffi::{c_char, c_void, CStr};
use tch::{TchError, Tensor};

type TchResult<T> = std::result::Result<T, TchError>;

extern "C" {
    fn mc_cpp_last_error() -> *const c_char;
}

/// Takes ownership of a tensor the C++ half allocated, or its error.
pub fn owned(t: *mut c_void) -> TchResult<Tensor> {
    if t.is_null() {
        // SAFETY: the message is a NUL-terminated string owned by this thread's C++ side.
        let m = unsafe { CStr::from_ptr(mc_cpp_last_error()) };
        return Err(TchError::Torch(m.to_string_lossy().into_owned()));
    }
    // SAFETY: a non-null result is a heap `at::Tensor` that nothing else owns, which is
    // what tch's handle is and frees.
    Ok(unsafe { Tensor::from_ptr(t.cast()) })
}

/// The `at::Tensor` behind a tch tensor, for a C++ call that borrows it.
pub fn raw(t: &Tensor) -> *const c_void {
    t.as_ptr().cast()
}

/// A C++ product over the last axis of `x` (any leading axes): `call` gets `x` as contiguous
/// `[rows, in]` and returns `[rows, out]`, which comes back in `x`'s leading shape.
pub fn over_rows(
    x: &Tensor,
    out: i64,
    call: impl FnOnce(*const c_void) -> *mut c_void,
) -> TchResult<Tensor> {
    let mut shape = x.size();
    let inner = shape.last().copied().unwrap_or(0);
    let rows = x.f_reshape([-1, inner])?.f_contiguous()?;
    let y = owned(call(raw(&rows)))?;
    if let Some(last) = shape.last_mut() {
        *last = out;
    }
    y.f_view(shape.as_slice())
}
