//! Reader for `torch.save` zip archives: a restricted unpickler over a memory-mapped zip.

mod archive;
mod pickle;
mod write;

pub use write::{save_tensor, tensor_pt_bytes, write_tensor};

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::storage::Storage;

/// Most dimensions a tensor may have (torch itself stops at 64).
const MAX_DIMS: usize = 64;

/// One tensor as described by the pickle: dtype, geometry in elements, and its storage bytes.
///
/// Records returned by the readers are validated: every element the view reaches lies inside
/// `storage`. Several records may share one `Arc<Storage>` when torch saved views of one storage.
#[derive(Clone, Debug)]
pub struct TensorRecord {
    /// Element type.
    pub dtype: DType,
    /// Size of each dimension (empty for a 0-d tensor).
    pub shape: Vec<i64>,
    /// Stride of each dimension, in elements.
    pub strides: Vec<i64>,
    /// Offset of the first element from the start of the storage, in elements.
    pub offset: i64,
    /// The bytes the view points into.
    pub storage: Arc<Storage>,
}

impl TensorRecord {
    /// Number of elements (product of the shape; 1 for a 0-d tensor).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &s| {
            n.saturating_mul(usize::try_from(s).unwrap_or(0))
        })
    }

    /// Address of the first element: storage start plus `offset` elements.
    pub fn data_ptr(&self) -> *mut u8 {
        let off = usize::try_from(self.offset).unwrap_or(0);
        self.storage
            .as_ptr()
            .wrapping_add(off.saturating_mul(self.dtype.size()))
    }

    /// True when the elements are laid out densely in row-major order (size-1 dims ignored),
    /// i.e. the bytes at [`TensorRecord::data_ptr`] can be used as they are.
    pub fn is_contiguous(&self) -> bool {
        if self.numel() == 0 {
            return true;
        }
        let mut expected: i64 = 1;
        for (&size, &stride) in self.shape.iter().zip(&self.strides).rev() {
            if size == 1 {
                continue;
            }
            if stride != expected {
                return false;
            }
            expected = expected.saturating_mul(size);
        }
        true
    }

    /// Another view of the same storage (no copy) with the given geometry, checked to stay
    /// inside the storage like every record the readers return.
    pub fn view(
        &self,
        offset: i64,
        shape: Vec<i64>,
        strides: Vec<i64>,
    ) -> Result<TensorRecord, FormatError> {
        let t = TensorRecord {
            dtype: self.dtype,
            shape,
            strides,
            offset,
            storage: self.storage.clone(),
        };
        View::check(&t).map_err(|e| FormatError::new(ErrorKind::Shape, e))?;
        Ok(t)
    }

    /// The view with dimensions `a` and `b` swapped (a transpose; no copy).
    pub fn transposed(&self, a: usize, b: usize) -> Result<TensorRecord, FormatError> {
        let nd = self.shape.len();
        if a >= nd || b >= nd || self.strides.len() != nd {
            return Err(FormatError::new(
                ErrorKind::Shape,
                format!("cannot swap dimensions {a} and {b} of a {nd}-dimensional tensor"),
            ));
        }
        let (mut shape, mut strides) = (self.shape.clone(), self.strides.clone());
        shape.swap(a, b);
        strides.swap(a, b);
        self.view(self.offset, shape, strides)
    }

    /// The view of `len` entries of dimension `dim` starting at `start` (torch's `narrow`;
    /// no copy).
    pub fn narrowed(&self, dim: usize, start: i64, len: i64) -> Result<TensorRecord, FormatError> {
        let size = self.shape.get(dim).copied();
        let stride = self.strides.get(dim).copied();
        let (Some(size), Some(stride)) = (size, stride) else {
            return Err(FormatError::new(
                ErrorKind::Shape,
                format!(
                    "cannot narrow dimension {dim} of a {}-dimensional tensor",
                    self.shape.len()
                ),
            ));
        };
        if start < 0 || len < 0 || start.checked_add(len).is_none_or(|end| end > size) {
            return Err(FormatError::new(
                ErrorKind::Shape,
                format!(
                    "cannot take entries {start}..{start}+{len} of dimension {dim} of size {size}"
                ),
            ));
        }
        let offset = start
            .checked_mul(stride)
            .and_then(|o| o.checked_add(self.offset))
            .ok_or_else(|| FormatError::new(ErrorKind::Shape, "narrowed offset overflows"))?;
        let mut shape = self.shape.clone();
        shape[dim] = len;
        self.view(offset, shape, self.strides.clone())
    }

    /// The elements gathered in row-major order into a new buffer (for copies and tests).
    ///
    /// Allocates `numel * dtype.size()` bytes, which for a broadcast (stride 0) view can be far
    /// more than the storage. Panics if that allocation fails or if the public fields were
    /// edited into a view outside the storage: readers of untrusted files use
    /// `try_contiguous_bytes`.
    pub fn to_contiguous_bytes(&self) -> Vec<u8> {
        self.try_contiguous_bytes()
            .unwrap_or_else(|e| panic!("invalid TensorRecord: {e}"))
    }

    /// `to_contiguous_bytes` without panics: a view outside the storage is `Shape`, a buffer
    /// the allocator refuses (or whose size overflows) is `OutOfMemory` naming the bytes.
    pub fn try_contiguous_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let view = View::check(self).map_err(|m| FormatError::new(ErrorKind::Shape, m))?;
        let esz = self.dtype.size();
        let src = self.storage.bytes();
        let n = view.numel;
        let mut out = Vec::new();
        let refused = || {
            FormatError::new(
                ErrorKind::OutOfMemory,
                format!(
                    "cannot allocate {n} x {esz} bytes for a contiguous copy of a {:?} tensor",
                    self.shape
                ),
            )
        };
        let bytes = n.checked_mul(esz).ok_or_else(refused)?;
        out.try_reserve_exact(bytes).map_err(|_| refused())?;
        if n == 0 {
            return Ok(out);
        }
        if self.is_contiguous() {
            out.extend_from_slice(&src[view.offset * esz..(view.offset + n) * esz]);
            return Ok(out);
        }
        // Odometer over all dimensions but the last; the last one is copied per row.
        let nd = view.shape.len();
        let (inner, inner_stride) = (view.shape[nd - 1], view.strides[nd - 1]);
        let mut index = vec![0usize; nd - 1];
        let mut base = view.offset;
        loop {
            if inner_stride == 1 {
                out.extend_from_slice(&src[base * esz..(base + inner) * esz]);
            } else {
                for j in 0..inner {
                    let at = (base + j * inner_stride) * esz;
                    out.extend_from_slice(&src[at..at + esz]);
                }
            }
            let mut d = nd - 1;
            loop {
                if d == 0 {
                    return Ok(out);
                }
                d -= 1;
                index[d] += 1;
                base += view.strides[d];
                if index[d] < view.shape[d] {
                    break;
                }
                base -= view.shape[d] * view.strides[d];
                index[d] = 0;
            }
        }
    }
}

/// A record's geometry after validation, in `usize`.
struct View {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
    numel: usize,
}

impl View {
    /// Checks sizes, strides and offset against the storage; the message names the problem.
    fn check(t: &TensorRecord) -> Result<View, String> {
        let esz = t.dtype.size();
        let storage_numel = t.storage.len() / esz;
        if t.shape.len() != t.strides.len() {
            return Err(format!(
                "size has {} dimensions but stride has {}",
                t.shape.len(),
                t.strides.len()
            ));
        }
        if t.shape.len() > MAX_DIMS {
            return Err(format!(
                "{} dimensions (at most {MAX_DIMS} allowed)",
                t.shape.len()
            ));
        }
        let nonneg =
            |v: i64, what: &str| usize::try_from(v).map_err(|_| format!("negative {what} {v}"));
        let shape = t
            .shape
            .iter()
            .map(|&s| nonneg(s, "size"))
            .collect::<Result<Vec<_>, _>>()?;
        let strides = t
            .strides
            .iter()
            .map(|&s| nonneg(s, "stride"))
            .collect::<Result<Vec<_>, _>>()?;
        let offset = nonneg(t.offset, "storage offset")?;
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &s| n.checked_mul(s))
            .filter(|n| n.checked_mul(esz).is_some())
            .ok_or_else(|| format!("element count of size {:?} overflows", t.shape))?;
        if numel == 0 {
            if offset > storage_numel {
                return Err(format!(
                    "storage offset {offset} is past the end of a storage of {storage_numel} elements"
                ));
            }
        } else {
            let last = shape
                .iter()
                .zip(&strides)
                .try_fold(offset, |acc, (&s, &st)| {
                    (s - 1).checked_mul(st).and_then(|x| acc.checked_add(x))
                })
                .ok_or_else(|| {
                    format!(
                        "offset {offset} with size {:?} and stride {:?} overflows",
                        t.shape, t.strides
                    )
                })?;
            if last >= storage_numel {
                return Err(format!(
                    "view with offset {offset}, size {:?}, stride {:?} reaches element {last} but the storage holds {storage_numel} elements",
                    t.shape, t.strides
                ));
            }
        }
        Ok(View {
            shape,
            strides,
            offset,
            numel,
        })
    }
}

/// What a `.pt` file holds: one tensor, or a dict of named tensors in file order.
#[derive(Clone, Debug)]
pub enum PtValue {
    /// The file holds a single tensor (or an `nn.Parameter`).
    Tensor(TensorRecord),
    /// The file holds a dict or OrderedDict (e.g. a state dict) of str -> tensor, in file order.
    Dict(Vec<(String, TensorRecord)>),
}

/// Reads a torch.save zip file, memory-mapping it copy-on-write so stored records are zero-copy.
///
/// The mapping assumes the file is not truncated by someone else while the records live.
pub fn load_pt(path: &Path) -> Result<PtValue, FormatError> {
    let map = map_file(path).map_err(|e| with_path(e, path))?;
    archive::read(archive::Source::Map(map)).map_err(|e| with_path(e, path))
}

/// Reads a file that must hold a single tensor; a dict is a [`ErrorKind::Format`] error.
pub fn load_tensor(path: &Path) -> Result<TensorRecord, FormatError> {
    match load_pt(path)? {
        PtValue::Tensor(t) => Ok(t),
        PtValue::Dict(d) => Err(FormatError::new(
            ErrorKind::Format,
            format!(
                "{}: holds a dict of {} tensors, expected a single tensor",
                path.display(),
                d.len()
            ),
        )),
    }
}

/// The same reader over an in-memory buffer (storages become owned aligned copies); `name`
/// stands in for the path in messages. Used for fuzzing and for remote sources.
pub fn load_pt_bytes(bytes: Vec<u8>, name: &str) -> Result<PtValue, FormatError> {
    archive::read(archive::Source::Bytes(bytes)).map_err(|e| with_path(e, Path::new(name)))
}

pub(crate) fn map_file(path: &Path) -> Result<Arc<memmap2::MmapRaw>, FormatError> {
    let file = File::open(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        FormatError::new(kind, format!("cannot open: {e}"))
    })?;
    let meta = file
        .metadata()
        .map_err(|e| FormatError::new(ErrorKind::Io, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(FormatError::new(ErrorKind::Io, "not a regular file"));
    }
    if meta.len() == 0 {
        return Err(FormatError::new(ErrorKind::Format, "empty file"));
    }
    // SAFETY: a private (copy-on-write) mapping: our writes never reach the file. The file
    // must not be truncated by another process while mapped (that would fault, as for any mmap).
    let map = unsafe { memmap2::MmapOptions::new().map_copy(&file) }
        .map_err(|e| FormatError::new(ErrorKind::Io, format!("cannot memory-map: {e}")))?;
    Ok(Arc::new(memmap2::MmapRaw::from(map)))
}

/// Prefixes an internal error's message with the file it came from.
pub(crate) fn with_path(e: FormatError, path: &Path) -> FormatError {
    FormatError::new(e.kind, format!("{}: {}", path.display(), e.message))
}

/// Builds a validated tensor record over `storage` (holding `dtype` elements).
fn build_tensor(
    dtype: DType,
    storage: Arc<Storage>,
    key: &str,
    offset: i64,
    shape: Vec<i64>,
    strides: Vec<i64>,
) -> Result<TensorRecord, FormatError> {
    let t = TensorRecord {
        dtype,
        shape,
        strides,
        offset,
        storage,
    };
    View::check(&t).map_err(|e| {
        FormatError::new(ErrorKind::Shape, format!("tensor on storage '{key}': {e}"))
    })?;
    Ok(t)
}
