//! Writer for single-tensor `torch.save` zip archives (spec section 9) that Python's
//! `torch.load` reads, `weights_only=True` included: the pickle names only
//! `torch._utils._rebuild_tensor_v2`, a `torch.XStorage` class and `collections.OrderedDict`.

use std::io::{Cursor, Seek, Write};
use std::path::Path;

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};

/// Top-level folder of the archive's entries.
const FOLDER: &str = "archive";
/// Record alignment torch itself uses, so the file can be memory-mapped by either side.
const ALIGN: u16 = 64;

fn format_err(msg: impl Into<String>) -> FormatError {
    FormatError::new(ErrorKind::Format, msg)
}

/// Pickle protocol 2 opcodes the writer emits.
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0.extend(module.as_bytes());
        self.0.push(b'\n');
        self.0.extend(name.as_bytes());
        self.0.push(b'\n');
    }

    fn str(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }

    fn int(&mut self, v: i64) {
        match v {
            0..=0xff => self.0.extend([b'K', v as u8]),
            0x100..=0xffff => {
                self.0.push(b'M');
                self.0.extend((v as u16).to_le_bytes());
            }
            _ if i32::try_from(v).is_ok() => {
                self.0.push(b'J');
                self.0.extend((v as i32).to_le_bytes());
            }
            _ => {
                // LONG1 with 8 bytes of two's complement: exact for every i64.
                self.0.extend([0x8a, 8]);
                self.0.extend(v.to_le_bytes());
            }
        }
    }

    fn int_tuple(&mut self, values: &[i64]) {
        self.0.push(b'(');
        for &v in values {
            self.int(v);
        }
        self.0.push(b't');
    }
}

/// The `data.pkl` of one contiguous tensor on storage `0`.
fn tensor_pickle(dtype: DType, shape: &[i64], numel: i64) -> Vec<u8> {
    let mut strides = vec![0i64; shape.len()];
    let mut step = 1i64;
    for (stride, &size) in strides.iter_mut().zip(shape).rev() {
        *stride = step;
        step = step.saturating_mul(size.max(1));
    }
    let mut p = Pickle(vec![0x80, 2]);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.0.push(b'('); // arguments
    p.0.push(b'('); // persistent id ('storage', class, key, location, numel)
    p.str("storage");
    p.global("torch", dtype.storage_class());
    p.str("0");
    p.str("cpu");
    p.int(numel);
    p.0.push(b't');
    p.0.push(b'Q'); // BINPERSID
    p.int(0); // storage offset
    p.int_tuple(shape);
    p.int_tuple(&strides);
    p.0.push(0x89); // requires_grad = False
    p.global("collections", "OrderedDict");
    p.0.extend([b')', b'R']); // backward_hooks = OrderedDict()
    p.0.extend([b't', b'R', b'.']);
    p.0
}

/// Checks that `data` holds exactly the row-major elements of `shape`; returns numel.
fn check_data(dtype: DType, shape: &[i64], data: &[u8]) -> Result<i64, FormatError> {
    let numel = shape
        .iter()
        .try_fold(1i64, |n, &s| if s < 0 { None } else { n.checked_mul(s) });
    let need = numel.and_then(|n| n.checked_mul(dtype.size() as i64));
    match (numel, need) {
        (Some(n), Some(need)) if need as u64 == data.len() as u64 => Ok(n),
        _ => Err(FormatError::new(
            ErrorKind::Shape,
            format!(
                "{} bytes do not hold a {} tensor of shape {shape:?}",
                data.len(),
                dtype.name()
            ),
        )),
    }
}

/// Writes a `torch.save` archive of one contiguous tensor (`data` holds its elements in
/// row-major order, little-endian) to `w`, returning the writer.
pub fn write_tensor<W: Write + Seek>(
    w: W,
    dtype: DType,
    shape: &[i64],
    data: &[u8],
) -> Result<W, FormatError> {
    let numel = check_data(dtype, shape, data)?;
    let zip_err = |e: zip::result::ZipError| format_err(format!("writing the zip archive: {e}"));
    let io_err = |e: std::io::Error| FormatError::new(ErrorKind::Io, format!("writing: {e}"));
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(DateTime::DEFAULT)
        .with_alignment(ALIGN);
    let mut zip = ZipWriter::new(w);
    let entries: [(&str, &[u8]); 4] = [
        ("data.pkl", &tensor_pickle(dtype, shape, numel)),
        ("byteorder", b"little"),
        ("data/0", data),
        ("version", b"3\n"),
    ];
    for (name, bytes) in entries {
        let opts = opts.large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        zip.start_file(format!("{FOLDER}/{name}"), opts)
            .map_err(zip_err)?;
        zip.write_all(bytes).map_err(io_err)?;
    }
    zip.finish().map_err(zip_err)
}

/// The bytes of a `torch.save` archive of one contiguous tensor (see [`write_tensor`]).
pub fn tensor_pt_bytes(dtype: DType, shape: &[i64], data: &[u8]) -> Result<Vec<u8>, FormatError> {
    Ok(write_tensor(Cursor::new(Vec::new()), dtype, shape, data)?.into_inner())
}

/// Saves one contiguous tensor to `path` as Python's `torch.save` would. The file appears
/// whole or not at all: it is written to a temporary file beside `path`, then renamed.
pub fn save_tensor(
    path: &Path,
    dtype: DType,
    shape: &[i64],
    data: &[u8],
) -> Result<(), FormatError> {
    let shown = path.display();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| FormatError::new(ErrorKind::Io, format!("{shown}: not a file path")))?;
    // Unique per process and call, so concurrent writers never share a temporary file.
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{serial}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let io = |e: std::io::Error| FormatError::new(ErrorKind::Io, format!("{shown}: {e}"));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let file = write_tensor(std::io::BufWriter::new(file), dtype, shape, data)
            .map_err(|e| FormatError::new(e.kind, format!("{shown}: {}", e.message)))?;
        let file = file.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
