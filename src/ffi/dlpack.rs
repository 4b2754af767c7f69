//! DLPack export (v1.x versioned and legacy structs). The C definitions live in the header
//! under DLPack's own include guard; these Rust mirrors are ABI-identical.
#![allow(non_snake_case)]
use crate::device::Device;
use crate::error::{err, ErrorKind, Result};
use crate::tensor::OwnedTensor;
use std::ffi::c_void;
use tch::Kind;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLPackVersion {
    pub major: u32,
    pub minor: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

#[repr(C)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

#[repr(C)]
pub struct DLManagedTensor {
    pub dl_tensor: DLTensor,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
pub struct DLManagedTensorVersioned {
    pub version: DLPackVersion,
    pub manager_ctx: *mut c_void,
    pub deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    pub flags: u64,
    pub dl_tensor: DLTensor,
}

/// The DLPack version this library writes into versioned tensors.
pub(crate) const DLPACK_VERSION: DLPackVersion = DLPackVersion { major: 1, minor: 1 };
pub(crate) const DLPACK_FLAG_BITMASK_READ_ONLY: u64 = 1;
pub(crate) const KDL_CPU: i32 = 1;
pub(crate) const KDL_CUDA: i32 = 2;
pub(crate) const KDL_METAL: i32 = 8;

fn dl_dtype(kind: Kind) -> Result<DLDataType> {
    let (code, bits) = match kind {
        Kind::Float => (2, 32),
        Kind::Half => (2, 16),
        Kind::Double => (2, 64),
        Kind::BFloat16 => (4, 16),
        Kind::Int64 => (0, 64),
        Kind::Int => (0, 32),
        Kind::Int16 => (0, 16),
        Kind::Int8 => (0, 8),
        Kind::Uint8 => (1, 8),
        Kind::Bool => (6, 8),
        other => {
            return Err(err(
                ErrorKind::Unsupported,
                format!("dtype {other:?} has no DLPack export here"),
            ))
        }
    };
    Ok(DLDataType {
        code,
        bits,
        lanes: 1,
    })
}

/// Everything one exported tensor needs, freed together by its deleter. `managed` comes first
/// so a pointer to it is a pointer to the holder.
#[repr(C)]
struct Holder<M> {
    managed: M,
    shape: Vec<i64>,
    strides: Vec<i64>,
    tensor: OwnedTensor,
}

fn dl_tensor(t: &OwnedTensor, shape: &mut [i64], strides: &mut [i64]) -> Result<DLTensor> {
    let tensor = &t.tensor;
    let kind = tensor.f_kind()?;
    let dtype = dl_dtype(kind)?;
    let ptr = tensor.data_ptr() as *mut u8;
    let (device, data, byte_offset) = match t.device() {
        Device::Cpu => (
            DLDevice {
                device_type: KDL_CPU,
                device_id: 0,
            },
            ptr,
            0,
        ),
        Device::Cuda(n) => (
            DLDevice {
                device_type: KDL_CUDA,
                device_id: n as i32,
            },
            ptr,
            0,
        ),
        // Metal buffers are opaque handles addressed by buffer plus byte offset; the tensors
        // this library moves to MPS are fresh allocations at storage offset 0 (see to_device).
        Device::Mps => (
            DLDevice {
                device_type: KDL_METAL,
                device_id: 0,
            },
            ptr,
            0,
        ),
    };
    Ok(DLTensor {
        data: data as *mut c_void,
        device,
        ndim: shape.len() as i32,
        dtype,
        shape: shape.as_mut_ptr(),
        strides: strides.as_mut_ptr(),
        byte_offset,
    })
}

fn holder<M>(t: OwnedTensor, make: impl FnOnce(DLTensor) -> M) -> Result<*mut M> {
    // The DLTensor points into the Vecs' heap buffers, which do not move with the Vecs.
    let mut shape = t.tensor.size();
    let mut strides = t.tensor.stride();
    let dl = dl_tensor(&t, &mut shape, &mut strides)?;
    let h = Box::new(Holder {
        managed: make(dl),
        shape,
        strides,
        tensor: t,
    });
    Ok(Box::into_raw(h) as *mut M)
}

/// Hands `t` out as a versioned DLPack tensor; its deleter frees everything exactly once.
pub fn export_versioned(t: OwnedTensor) -> Result<*mut DLManagedTensorVersioned> {
    let read_only = t.read_only;
    let p = holder(t, |dl_tensor| DLManagedTensorVersioned {
        version: DLPACK_VERSION,
        manager_ctx: std::ptr::null_mut(),
        deleter: Some(delete_versioned),
        flags: if read_only {
            DLPACK_FLAG_BITMASK_READ_ONLY
        } else {
            0
        },
        dl_tensor,
    })?;
    // SAFETY: `p` points into the live holder created above.
    unsafe { (*p).manager_ctx = p as *mut c_void };
    Ok(p)
}

/// Hands `t` out as a legacy (pre-1.0) DLPack tensor, for consumers such as DLPack.jl.
pub fn export_legacy(t: OwnedTensor) -> Result<*mut DLManagedTensor> {
    let p = holder(t, |dl_tensor| DLManagedTensor {
        dl_tensor,
        manager_ctx: std::ptr::null_mut(),
        deleter: Some(delete_legacy),
    })?;
    // SAFETY: as above.
    unsafe { (*p).manager_ctx = p as *mut c_void };
    Ok(p)
}

/// Frees a holder given the pointer to its `managed` field (at offset 0 of the holder).
unsafe fn free_holder<M>(p: *mut M) {
    if p.is_null() {
        return;
    }
    // A panic in a destructor must not unwind into C; there is nothing to report it to.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(Box::from_raw(p as *mut Holder<M>));
    }));
}

unsafe extern "C" fn delete_versioned(p: *mut DLManagedTensorVersioned) {
    free_holder(p)
}

unsafe extern "C" fn delete_legacy(p: *mut DLManagedTensor) {
    free_holder(p)
}

/// The most dimensions an imported (borrowed) tensor may have.
const MAX_IMPORT_NDIM: i32 = 8;

fn import_kind(dtype: DLDataType, what: &str) -> Result<Kind> {
    match (dtype.code, dtype.bits, dtype.lanes) {
        (2, 32, 1) => Ok(Kind::Float),
        (2, 16, 1) => Ok(Kind::Half),
        (4, 16, 1) => Ok(Kind::BFloat16),
        (c, b, l) => Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "`{what}` has dtype code {c}, {b} bits, {l} lanes: expected float32, float16 \
                 or bfloat16"
            ),
        )),
    }
}

fn import_device(d: DLDevice, what: &str) -> Result<Device> {
    match (d.device_type, d.device_id) {
        (KDL_CPU, _) => Ok(Device::Cpu),
        (KDL_CUDA, n) if n >= 0 => Ok(Device::Cuda(n as usize)),
        (KDL_METAL, _) => Ok(Device::Mps),
        (t, n) => Err(err(
            ErrorKind::Device,
            format!("`{what}` is on DLPack device type {t} (id {n}): expected CPU, CUDA or Metal"),
        )),
    }
}

/// Copies a caller's versioned DLPack tensor, borrowed for this call only: the copy is the
/// library's own (its deleter is never called, no reference is kept). Float dtypes only.
///
/// # Safety
/// `p` is NULL or points to a valid `DLManagedTensorVersioned` whose data, shape and strides
/// are valid for reads during the call.
pub(crate) unsafe fn import_borrowed(
    p: *const DLManagedTensorVersioned,
    what: &str,
) -> Result<tch::Tensor> {
    let m = p
        .as_ref()
        .ok_or_else(|| err(ErrorKind::NullArgument, format!("`{what}` is NULL")))?;
    if m.version.major != DLPACK_VERSION.major {
        return Err(err(
            ErrorKind::Unsupported,
            format!(
                "`{what}` is DLPack {}.{}: this library reads version 1.x",
                m.version.major, m.version.minor
            ),
        ));
    }
    let t = &m.dl_tensor;
    if !(0..=MAX_IMPORT_NDIM).contains(&t.ndim) || (t.ndim > 0 && t.shape.is_null()) {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "`{what}` has ndim {} (0..={MAX_IMPORT_NDIM}, with a shape)",
                t.ndim
            ),
        ));
    }
    let kind = import_kind(t.dtype, what)?;
    let device = import_device(t.device, what)?;
    device
        .check_available()
        .map_err(|e| err(e.kind, format!("`{what}`: {}", e.message)))?;
    let ndim = t.ndim as usize;
    let shape = match ndim {
        0 => Vec::new(),
        n => std::slice::from_raw_parts(t.shape, n).to_vec(),
    };
    if shape.iter().any(|&d| d < 0) {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("`{what}` has a negative dimension in shape {shape:?}"),
        ));
    }
    let strides = match t.strides.is_null() || ndim == 0 {
        true => compact_strides(&shape),
        false => std::slice::from_raw_parts(t.strides, ndim).to_vec(),
    };
    let numel = shape.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
    if numel.is_none() {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("`{what}`: shape {shape:?} overflows"),
        ));
    }
    if t.data.is_null() && numel != Some(0) {
        return Err(err(
            ErrorKind::NullArgument,
            format!("`{what}` has NULL data"),
        ));
    }
    let data = (t.data as *const u8).add(t.byte_offset as usize);
    let view = tch::Tensor::f_from_blob(data, &shape, &strides, kind, device.to_tch())?;
    Ok(view.f_detach_copy()?)
}

/// Row-major strides (in elements) of a compact tensor.
fn compact_strides(shape: &[i64]) -> Vec<i64> {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}
