//! A tensor handed out by the library: a libtorch tensor plus whatever owns its memory when
//! it is a zero-copy view into a mapped checkpoint piece.
use crate::device::Device;
use crate::error::{err, ErrorKind, Result};
use model_context_formats::{DType, Storage, TensorRecord};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// A result tensor that keeps its memory alive by itself, so it outlives the context.
pub struct OwnedTensor {
    pub tensor: Tensor,
    /// The mapped storage `tensor` points into, when it is a view of a file.
    owner: Option<Arc<Storage>>,
    /// True when the memory is shared with a mapping or cache that callers must not write.
    pub read_only: bool,
}

// SAFETY: libtorch tensors may be read from several threads at once; the library never
// mutates a tensor it has handed out, and the owner is itself Send + Sync.
unsafe impl Sync for OwnedTensor {}

pub fn kind_of(dtype: DType) -> Kind {
    match dtype {
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::F64 => Kind::Double,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
}

impl OwnedTensor {
    /// A zero-copy CPU view of a record read from a file.
    pub fn from_record(rec: &TensorRecord) -> Result<OwnedTensor> {
        // SAFETY: the reader checked that offset, shape and strides stay inside the storage,
        // and `owner` keeps that storage alive as long as the tensor.
        let tensor = unsafe {
            Tensor::f_from_blob(
                rec.data_ptr(),
                &rec.shape,
                &rec.strides,
                kind_of(rec.dtype),
                tch::Device::Cpu,
            )?
        };
        Ok(OwnedTensor {
            tensor,
            owner: Some(rec.storage.clone()),
            read_only: true,
        })
    }

    /// A tensor that owns its memory; `read_only` when it aliases a cache of the library.
    pub fn owned(tensor: Tensor, read_only: bool) -> OwnedTensor {
        OwnedTensor {
            tensor,
            owner: None,
            read_only,
        }
    }

    /// Another handle on the same memory, with the same owner and flags.
    pub fn share(&self) -> OwnedTensor {
        OwnedTensor {
            tensor: self.tensor.shallow_clone(),
            owner: self.owner.clone(),
            read_only: self.read_only,
        }
    }

    /// Same memory, new view (split, permutation, broadcast); keeps the owner.
    pub fn with_view(
        &self,
        f: impl FnOnce(&Tensor) -> std::result::Result<Tensor, tch::TchError>,
    ) -> Result<OwnedTensor> {
        Ok(OwnedTensor {
            tensor: f(&self.tensor)?,
            owner: self.owner.clone(),
            read_only: self.read_only,
        })
    }

    /// New memory computed from this tensor: no owner, writable.
    pub fn computed(
        &self,
        f: impl FnOnce(&Tensor) -> std::result::Result<Tensor, tch::TchError>,
    ) -> Result<OwnedTensor> {
        Ok(OwnedTensor::owned(f(&self.tensor)?, false))
    }

    pub fn shape(&self) -> Vec<i64> {
        self.tensor.size()
    }

    pub fn device(&self) -> Device {
        Device::from_tch(self.tensor.device())
    }

    /// Moves to `device`; a no-op (same memory) when it is already there.
    pub fn to_device(self, device: Device) -> Result<OwnedTensor> {
        if self.device() == device {
            return Ok(self);
        }
        device.check_available()?;
        let moved = self.tensor.f_to(device.to_tch()).map_err(|e| {
            err(
                ErrorKind::Device,
                format!("moving a tensor to {device}: {e}"),
            )
        })?;
        Ok(OwnedTensor::owned(moved, false))
    }
}
