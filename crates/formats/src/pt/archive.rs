//! The zip container: finds `data.pkl` and the `data/<key>` records, and turns records into
//! [`Storage`]s (zero-copy views when stored and aligned, aligned copies otherwise).

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::sync::Arc;

use memmap2::MmapRaw;
use zip::{CompressionMethod, ZipArchive};

use super::{pickle, PtValue};
use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::storage::{AlignedBuf, Storage};

/// Largest `data.pkl` accepted; real ones are a few hundred bytes per tensor.
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Deflate cannot expand data by more than about 1032:1; a record claiming more is corrupt.
const MAX_DEFLATE_RATIO: u64 = 1032;
/// Pickle protocol 2 magic header of legacy (pre-1.6) torch.save files: PROTO, LONG1 of 10 bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Where the archive bytes live.
pub(crate) enum Source {
    /// A private file mapping; aligned stored records become views into it.
    Map(Arc<MmapRaw>),
    /// A caller's buffer; every record is copied out.
    Bytes(Vec<u8>),
}

impl Source {
    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: the mapping is len() initialised bytes, alive as long as self; nothing
            // writes to it while the archive is being read (no record has been handed out yet).
            Source::Map(m) => unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) },
            Source::Bytes(b) => b,
        }
    }
}

fn format_err(msg: impl Into<String>) -> FormatError {
    FormatError::new(ErrorKind::Format, msg)
}

fn is_legacy(data: &[u8]) -> bool {
    data.len() >= 14
        && data[0] == 0x80
        && data[2] == 0x8a
        && data[3] == 10
        && data[4..14] == LEGACY_MAGIC
}

/// Reads the whole archive into a [`PtValue`].
pub(crate) fn read(source: Source) -> Result<PtValue, FormatError> {
    let data = source.bytes();
    if data.is_empty() {
        return Err(format_err("empty file"));
    }
    if is_legacy(data) {
        return Err(FormatError::new(
            ErrorKind::Unsupported,
            "unsupported legacy (pre-1.6, non-zip) torch.save format",
        ));
    }
    // torch archives start at byte 0. The zip crate's default prefix detection misreads some
    // valid torch files (e.g. every archive whose top-level folder name is 21 characters).
    let config = zip::read::Config {
        archive_offset: zip::read::ArchiveOffset::Known(0),
    };
    let zip = ZipArchive::with_config(config, Cursor::new(data))
        .map_err(|e| format_err(format!("not a zip archive ({e})")))?;
    let mut archive = Archive::index(zip, &source)?;

    if let Some(idx) = archive.entry("byteorder") {
        let order = archive.read_small(idx, "byteorder", 64)?;
        match order.trim_ascii() {
            b"little" => {}
            b"big" => {
                return Err(FormatError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{}/byteorder says 'big': big-endian storage data is not supported",
                        archive.folder
                    ),
                ))
            }
            other => {
                return Err(format_err(format!(
                    "{}/byteorder holds '{}', expected 'little' or 'big'",
                    archive.folder,
                    String::from_utf8_lossy(other)
                )))
            }
        }
    }
    let pkl = archive.read_small(archive.pickle, "data.pkl", MAX_PICKLE_BYTES)?;
    pickle::unpickle(&pkl, |key, dtype, numel| archive.storage(key, dtype, numel))
}

/// Refuses entries whose bytes overlap one another or the central directory. Each entry spans
/// at least its 30-byte local header and its compressed data; in a well-formed zip these spans
/// follow one another. Overlapping entries are the construction of quadratic zip bombs: many
/// records inflating the same compressed bytes, each within the per-record ratio check.
fn check_disjoint(zip: &ZipArchive<Cursor<&[u8]>>, file_len: u64) -> Result<(), FormatError> {
    const LOCAL_HEADER: u64 = 30;
    let mut spans = Vec::with_capacity(zip.len());
    let mut directory = u64::MAX;
    for i in 0..zip.len() {
        let e = zip
            .by_index_data(i)
            .map_err(|e| format_err(format!("bad entry {i}: {e}")))?;
        let start = e.header_start();
        let end = start
            .checked_add(LOCAL_HEADER)
            .and_then(|x| x.checked_add(e.compressed_size()))
            .ok_or_else(|| format_err(format!("entry {i} claims a size that overflows")))?;
        if end > file_len {
            return Err(format_err(format!(
                "entry '{}' (bytes {start}..{end}) reaches past the end of the {file_len}-byte file",
                String::from_utf8_lossy(e.name_raw())
            )));
        }
        directory = directory.min(e.central_header_start());
        spans.push((start, end, i));
    }
    spans.sort_unstable();
    let name = |i: usize| -> String {
        zip.by_index_data(i)
            .map(|e| String::from_utf8_lossy(e.name_raw()).into_owned())
            .unwrap_or_else(|_| format!("#{i}"))
    };
    for pair in spans.windows(2) {
        let ((a0, a1, a), (b0, b1, b)) = (pair[0], pair[1]);
        if b0 < a1 {
            return Err(format_err(format!(
                "entries '{}' (bytes {a0}..{a1}) and '{}' (bytes {b0}..{b1}) overlap: a zip whose records share bytes is refused",
                name(a),
                name(b)
            )));
        }
    }
    if let Some(&(start, end, i)) = spans.last() {
        if end > directory {
            return Err(format_err(format!(
                "entry '{}' (bytes {start}..{end}) overlaps the central directory at byte {directory}",
                name(i)
            )));
        }
    }
    Ok(())
}

/// An opened archive with its records indexed by the name after the top-level folder.
struct Archive<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    source: &'a Source,
    /// The top-level folder holding `data.pkl`.
    folder: String,
    /// Entry name after `folder/` -> index in the zip.
    entries: HashMap<String, usize>,
    /// Index of `folder/data.pkl`.
    pickle: usize,
    /// Storages already loaded, by key, with the dtype and element count they were loaded as.
    loaded: HashMap<String, (DType, u64, Arc<Storage>)>,
}

impl<'a> Archive<'a> {
    fn index(zip: ZipArchive<Cursor<&'a [u8]>>, source: &'a Source) -> Result<Self, FormatError> {
        check_disjoint(&zip, source.bytes().len() as u64)?;
        let names: Vec<Option<(String, String)>> = (0..zip.len())
            .map(|i| {
                let raw = zip.by_index_data(i).ok()?.name_raw().to_vec();
                let name = String::from_utf8(raw).ok()?;
                let (folder, rest) = name.split_once('/')?;
                Some((folder.to_string(), rest.to_string()))
            })
            .collect();
        let mut folders = names
            .iter()
            .flatten()
            .filter(|(_, rest)| rest == "data.pkl")
            .map(|(folder, _)| folder.clone());
        let folder = folders
            .next()
            .ok_or_else(|| format_err("archive has no <folder>/data.pkl entry"))?;
        if let Some(other) = folders.next() {
            return Err(format_err(format!(
                "archive has several data.pkl entries ('{folder}/data.pkl', '{other}/data.pkl')"
            )));
        }
        let entries: HashMap<String, usize> = names
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| n.filter(|(f, _)| *f == folder).map(|(_, rest)| (rest, i)))
            .collect();
        Ok(Archive {
            zip,
            source,
            folder,
            pickle: entries["data.pkl"],
            entries,
            loaded: HashMap::new(),
        })
    }

    fn entry(&self, suffix: &str) -> Option<usize> {
        self.entries.get(suffix).copied()
    }

    /// Reads a small entry completely (decompressing if needed), refusing more than `cap` bytes.
    fn read_small(&mut self, idx: usize, suffix: &str, cap: u64) -> Result<Vec<u8>, FormatError> {
        let name = format!("{}/{suffix}", self.folder);
        let file = self
            .zip
            .by_index(idx)
            .map_err(|e| format_err(format!("cannot read entry '{name}': {e}")))?;
        if file.size() > cap {
            return Err(format_err(format!(
                "entry '{name}' is {} bytes, more than the {cap} allowed",
                file.size()
            )));
        }
        let mut out = Vec::new();
        file.take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| format_err(format!("cannot read entry '{name}': {e}")))?;
        if out.len() as u64 > cap {
            return Err(format_err(format!(
                "entry '{name}' inflates to more than the {cap} bytes allowed"
            )));
        }
        Ok(out)
    }

    /// The storage for persistent id `key` holding `numel` elements of `dtype`.
    fn storage(
        &mut self,
        key: &str,
        dtype: DType,
        numel: u64,
    ) -> Result<Arc<Storage>, FormatError> {
        if let Some((d, n, s)) = self.loaded.get(key) {
            if (*d, *n) != (dtype, numel) {
                return Err(format_err(format!(
                    "storage '{key}' is referenced both as {n} x {} and as {numel} x {}",
                    d.name(),
                    dtype.name()
                )));
            }
            return Ok(s.clone());
        }
        let storage = Arc::new(self.load_record(key, dtype, numel)?);
        self.loaded
            .insert(key.to_string(), (dtype, numel, storage.clone()));
        Ok(storage)
    }

    fn load_record(&mut self, key: &str, dtype: DType, numel: u64) -> Result<Storage, FormatError> {
        let name = format!("{}/data/{key}", self.folder);
        let need = numel
            .checked_mul(dtype.size() as u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                format_err(format!(
                    "storage '{key}' of {numel} x {} elements overflows the address space",
                    dtype.name()
                ))
            })?;
        let idx = self
            .entry(&format!("data/{key}"))
            .ok_or_else(|| format_err(format!("missing record '{name}' for storage '{key}'")))?;
        let entry_err = |e: zip::result::ZipError| format_err(format!("bad record '{name}': {e}"));
        let file = self.zip.by_index_raw(idx).map_err(entry_err)?;
        if file.encrypted() {
            return Err(FormatError::new(
                ErrorKind::Unsupported,
                format!("record '{name}' is encrypted"),
            ));
        }
        let (method, csize, size) = (file.compression(), file.compressed_size(), file.size());
        let start = file
            .data_start()
            .ok_or_else(|| format_err(format!("record '{name}' has no local header")))?;
        drop(file);
        let file_len = self.source.bytes().len() as u64;
        if start.checked_add(csize).is_none_or(|end| end > file_len) {
            return Err(format_err(format!(
                "record '{name}' claims {csize} bytes at offset {start}, past the end of the {file_len}-byte file"
            )));
        }
        let short = |have: u64| {
            format_err(format!(
                "record '{name}' holds {have} bytes but storage '{key}' needs {need} bytes ({numel} x {})",
                dtype.name()
            ))
        };
        if size < need as u64 {
            return Err(short(size));
        }
        let alloc_err = |len: usize| {
            FormatError::new(
                ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes for record '{name}'"),
            )
        };
        match method {
            CompressionMethod::Stored => {
                if csize != size {
                    return Err(format_err(format!(
                        "stored record '{name}' has compressed size {csize} but size {size}"
                    )));
                }
                // In bounds: start + need <= start + csize <= file_len, all fit in usize.
                let start = start as usize;
                match self.source {
                    Source::Map(map) if start.is_multiple_of(dtype.size()) => {
                        Ok(Storage::mapped(map.clone(), start, need))
                    }
                    _ => AlignedBuf::copy_of(&self.source.bytes()[start..start + need])
                        .map(Storage::owned)
                        .ok_or_else(|| alloc_err(need)),
                }
            }
            CompressionMethod::Deflated => {
                // The declared size is as untrusted as the pickle: bound the allocation by what
                // the compressed bytes could possibly inflate to.
                if need as u64 > csize.saturating_mul(MAX_DEFLATE_RATIO).saturating_add(1024) {
                    return Err(format_err(format!(
                        "record '{name}' has {csize} compressed bytes, too few to inflate to the {need} bytes storage '{key}' needs"
                    )));
                }
                let mut buf = AlignedBuf::zeroed(need).ok_or_else(|| alloc_err(need))?;
                let mut reader = self.zip.by_index(idx).map_err(entry_err)?;
                let mut filled = 0;
                let out = buf.as_mut_slice();
                while filled < need {
                    match reader.read(&mut out[filled..]) {
                        Ok(0) => return Err(short(filled as u64)),
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format_err(format!("corrupt record '{name}': {e}"))),
                    }
                }
                // One byte more: reaching the end makes the zip reader verify the CRC; a longer
                // stream is accepted only if the central directory declared it longer.
                let mut extra = [0u8; 1];
                match reader.read(&mut extra) {
                    Ok(0) => {}
                    Ok(_) if size > need as u64 => {}
                    Ok(_) => {
                        return Err(format_err(format!(
                            "record '{name}' inflates to more than its declared size {size}"
                        )))
                    }
                    Err(e) => {
                        return Err(format_err(format!(
                            "record '{name}' does not match its declared size {size} or CRC ({e})"
                        )))
                    }
                }
                Ok(Storage::owned(buf))
            }
            other => Err(FormatError::new(
                ErrorKind::Unsupported,
                format!("record '{name}' uses unsupported compression {other:?}"),
            )),
        }
    }
}
