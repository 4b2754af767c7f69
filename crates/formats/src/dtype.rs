//! Element types a torch.save file can carry for the tensors this crate reads.

/// Element type of a tensor, as named by the storage class in the pickle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float (`torch.float32`).
    F32,
    /// 16-bit IEEE float (`torch.float16`).
    F16,
    /// bfloat16 (`torch.bfloat16`).
    BF16,
    /// 64-bit IEEE float (`torch.float64`).
    F64,
    /// Signed 64-bit integer (`torch.int64`).
    I64,
    /// Signed 32-bit integer (`torch.int32`).
    I32,
    /// Signed 16-bit integer (`torch.int16`).
    I16,
    /// Signed 8-bit integer (`torch.int8`).
    I8,
    /// Unsigned 8-bit integer (`torch.uint8`).
    U8,
    /// Boolean stored as one byte (`torch.bool`).
    Bool,
}

impl DType {
    /// Bytes per element, needed to turn element offsets and strides into byte addresses.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The name torch prints for this dtype (without the `torch.` prefix), e.g. `"float32"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    /// The legacy typed storage class torch names this dtype by (`"FloatStorage"`, ...).
    pub(crate) fn storage_class(self) -> &'static str {
        match self {
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::F64 => "DoubleStorage",
            DType::I64 => "LongStorage",
            DType::I32 => "IntStorage",
            DType::I16 => "ShortStorage",
            DType::I8 => "CharStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
        }
    }

    /// The dtype a safetensors header names (`"F32"`, `"BF16"`, ...), when this crate has it.
    pub(crate) fn from_safetensors(name: &str) -> Option<DType> {
        Some(match name {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            "I64" => DType::I64,
            "I32" => DType::I32,
            "I16" => DType::I16,
            "I8" => DType::I8,
            "U8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    /// The dtype a legacy typed storage class (`torch.FloatStorage`, ...) stands for.
    pub(crate) fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }
}
