//! The bytes behind one storage record of a torch.save archive.

use std::alloc::{self, Layout};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use memmap2::MmapRaw;

/// Alignment of owned copies, so any dtype (and SIMD loads) can address them.
pub(crate) const OWNED_ALIGN: usize = 64;

/// Bytes of one storage record: either a view into a private (copy-on-write) memory map of
/// the file, or an owned 64-byte-aligned copy.
///
/// The bytes may be written through [`Storage::as_ptr`]: a mapped view is copy-on-write, so
/// writes land in this process's private pages and never reach the file. Synchronising such
/// writes with other readers of the same storage is the caller's job.
pub struct Storage {
    bytes: Bytes,
    len: usize,
}

enum Bytes {
    /// `len` bytes starting `offset` bytes into a private file mapping.
    Mapped { map: Arc<MmapRaw>, offset: usize },
    /// A heap copy.
    Owned(AlignedBuf),
}

impl Storage {
    /// A view of `len` bytes at `offset` in `map`; the caller has checked the range.
    pub(crate) fn mapped(map: Arc<MmapRaw>, offset: usize, len: usize) -> Self {
        debug_assert!(offset.checked_add(len).is_some_and(|end| end <= map.len()));
        Storage {
            bytes: Bytes::Mapped { map, offset },
            len,
        }
    }

    /// Takes ownership of a filled buffer.
    pub(crate) fn owned(buf: AlignedBuf) -> Self {
        let len = buf.len;
        Storage {
            bytes: Bytes::Owned(buf),
            len,
        }
    }

    /// Start of the storage bytes. Mutable because the mapping is copy-on-write (and owned
    /// copies are private); valid for [`Storage::len`] bytes while this `Storage` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        match &self.bytes {
            // In bounds: checked when the view was made.
            Bytes::Mapped { map, offset } => map.as_mut_ptr().wrapping_add(*offset),
            Bytes::Owned(buf) => buf.ptr.as_ptr(),
        }
    }

    /// Length in bytes (exactly the bytes the pickle declared for this storage).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-byte storage (e.g. the storage of an empty tensor).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when the bytes are a zero-copy view into the file mapping rather than a copy.
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped { .. })
    }

    /// The bytes as a slice; the caller must not write through [`Storage::as_ptr`] meanwhile.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: as_ptr() is valid for len bytes for the lifetime of self (bounds checked at
        // construction); the mapping and the buffer are initialised memory.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("len", &self.len)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// A zero-initialised heap buffer aligned to [`OWNED_ALIGN`] bytes.
pub(crate) struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
}

// SAFETY: AlignedBuf uniquely owns its allocation, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out raw pointers; see Storage's documentation.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes, or returns None when the allocator refuses.
    pub(crate) fn zeroed(len: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len.max(1), OWNED_ALIGN).ok()?;
        // SAFETY: layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })?;
        Some(AlignedBuf { ptr, len, layout })
    }

    /// Copies `src` into a new aligned buffer.
    pub(crate) fn copy_of(src: &[u8]) -> Option<Self> {
        let mut buf = Self::zeroed(src.len())?;
        buf.as_mut_slice().copy_from_slice(src);
        Some(buf)
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the allocation holds at least len initialised (zeroed) bytes, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
