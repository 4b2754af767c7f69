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
