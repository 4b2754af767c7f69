//! Reader for `.safetensors` files (Hugging Face's format): an 8-byte little-endian header
//! length, a JSON header naming each tensor's dtype, shape and byte range, then the data.
//!
//! Everything the header claims is checked before a record is made: the header length against
//! the file, the JSON shape of every entry, dtype and shape against the byte length, and that
//! the byte ranges tile the data section exactly (no gap, no overlap, nothing past the end).
//! Records are zero-copy views into a private (copy-on-write) memory map of the file when
//! their bytes are aligned for their dtype, and aligned copies otherwise.

use std::path::Path;
use std::sync::Arc;

use memmap2::MmapRaw;
use serde_json::Value;

use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::pt::{map_file, with_path, TensorRecord};
use crate::storage::{AlignedBuf, Storage};

/// Largest JSON header accepted (the reference implementation's limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Most dimensions a tensor may have.
const MAX_DIMS: usize = 64;

fn format_err(msg: impl Into<String>) -> FormatError {
    FormatError::new(ErrorKind::Format, msg)
}

/// Reads every tensor of a `.safetensors` file, in the order of their bytes in the file.
///
/// The file is memory-mapped copy-on-write; it must not be truncated while records live.
pub fn load_safetensors(path: &Path) -> Result<Vec<(String, TensorRecord)>, FormatError> {
    let map = map_file(path).map_err(|e| with_path(e, path))?;
    // SAFETY: the mapping is len() initialised bytes and outlives this call (held by `map`);
    // nothing writes to it before records are handed out.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
    read(bytes, Some(&map)).map_err(|e| with_path(e, path))
}

/// The same reader over an in-memory buffer (every record becomes an aligned copy); `name`
/// stands in for the path in messages.
pub fn load_safetensors_bytes(
    bytes: &[u8],
    name: &str,
) -> Result<Vec<(String, TensorRecord)>, FormatError> {
    read(bytes, None).map_err(|e| with_path(e, Path::new(name)))
}

/// One header entry after validation.
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<i64>,
    begin: u64,
    end: u64,
}

fn read(
    data: &[u8],
    map: Option<&Arc<MmapRaw>>,
) -> Result<Vec<(String, TensorRecord)>, FormatError> {
    let file_len = data.len() as u64;
    let Some(len_bytes) = data.get(..8) else {
        return Err(format_err(format!(
            "{file_len} bytes: too short for a safetensors header length"
        )));
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().unwrap_or([0; 8]));
    if header_len > MAX_HEADER_BYTES {
        return Err(format_err(format!(
            "header length {header_len} exceeds the {MAX_HEADER_BYTES} bytes allowed (not a safetensors file?)"
        )));
    }
    if 8 + header_len > file_len {
        return Err(format_err(format!(
            "header length {header_len} reaches past the end of the {file_len}-byte file"
        )));
    }
    let data_start = 8 + header_len;
    let header: Value = serde_json::from_slice(&data[8..data_start as usize])
        .map_err(|e| format_err(format!("malformed JSON header: {e}")))?;
    let Value::Object(header) = header else {
        return Err(format_err("the JSON header is not an object"));
    };
    let mut entries = Vec::with_capacity(header.len());
    for (name, value) in &header {
        if name == "__metadata__" {
            let ok = value
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err(format_err(
                    "__metadata__ is not an object of strings to strings",
                ));
            }
            continue;
        }
        entries.push(entry(name, value)?);
    }
    // The byte ranges must tile the data section exactly, in order.
    entries.sort_by_key(|e| (e.begin, e.end));
    let data_len = file_len - data_start;
    let mut next = 0u64;
    for e in &entries {
        if e.begin != next {
            return Err(format_err(format!(
                "tensor '{}' starts at data byte {} but the previous tensor ends at {next} ({})",
                e.name,
                e.begin,
                if e.begin < next { "overlap" } else { "gap" }
            )));
        }
        next = e.end;
    }
    if next != data_len {
        return Err(format_err(format!(
            "the tensors cover {next} data bytes but the file holds {data_len} after its header"
        )));
    }
    entries
        .into_iter()
        .map(|e| {
            let start = data_start + e.begin;
            let len = (e.end - e.begin) as usize;
            let start = start as usize; // In bounds: start + len <= file_len.
            let storage = match map {
                Some(map) if start.is_multiple_of(e.dtype.size()) => {
                    Storage::mapped(map.clone(), start, len)
                }
                _ => AlignedBuf::copy_of(&data[start..start + len])
                    .map(Storage::owned)
                    .ok_or_else(|| {
                        FormatError::new(
                            ErrorKind::OutOfMemory,
                            format!("cannot allocate {len} bytes for tensor '{}'", e.name),
                        )
                    })?,
            };
            let mut strides = vec![0i64; e.shape.len()];
            let mut step = 1i64;
            for (stride, &size) in strides.iter_mut().zip(&e.shape).rev() {
                *stride = step;
                step = step.saturating_mul(size.max(1));
            }
            let record = TensorRecord {
                dtype: e.dtype,
                shape: e.shape,
                strides,
                offset: 0,
                storage: Arc::new(storage),
            };
            Ok((e.name, record))
        })
        .collect()
}

/// Validates one header entry: `{"dtype": str, "shape": [int...], "data_offsets": [b, e]}`.
fn entry(name: &str, value: &Value) -> Result<Entry, FormatError> {
    let bad = |what: String| format_err(format!("tensor '{name}': {what}"));
    let obj = value
        .as_object()
        .ok_or_else(|| bad(format!("header entry is {value}, expected an object")))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["dtype", "shape", "data_offsets"].contains(&k.as_str()))
    {
        return Err(bad(format!("unknown header field '{k}'")));
    }
    let dtype_name = obj
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing or non-string 'dtype'".into()))?;
    let dtype = DType::from_safetensors(dtype_name).ok_or_else(|| {
        FormatError::new(
            ErrorKind::Unsupported,
            format!("tensor '{name}': dtype {dtype_name} is not supported (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL are)"),
        )
    })?;
    let ints = |key: &str| -> Result<Vec<u64>, FormatError> {
        obj.get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("missing or non-array '{key}'")))?
            .iter()
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    bad(format!("'{key}' holds {v}, expected non-negative integers"))
                })
            })
            .collect()
    };
    let shape = ints("shape")?;
    if shape.len() > MAX_DIMS {
        return Err(bad(format!(
            "{} dimensions (at most {MAX_DIMS} allowed)",
            shape.len()
        )));
    }
    if let Some(s) = shape.iter().find(|&&s| i64::try_from(s).is_err()) {
        return Err(bad(format!("size {s} overflows")));
    }
    let offsets = ints("data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(bad(format!(
            "'data_offsets' has {} entries, expected [begin, end]",
            offsets.len()
        )));
    };
    if begin > end {
        return Err(bad(format!("data_offsets [{begin}, {end}] run backwards")));
    }
    let bytes = shape
        .iter()
        .try_fold(1u64, |n, &s| n.checked_mul(s))
        .and_then(|n| n.checked_mul(dtype.size() as u64))
        .filter(|&n| i64::try_from(n).is_ok())
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))?;
    if bytes != end - begin {
        return Err(bad(format!(
            "shape {shape:?} of {dtype_name} needs {bytes} bytes but data_offsets [{begin}, {end}] hold {}",
            end - begin
        )));
    }
    Ok(Entry {
        name: name.to_string(),
        dtype,
        // Each size fits in i64: their product (times the element size) does.
        shape: shape.iter().map(|&s| s as i64).collect(),
        begin,
        end,
    })
}
