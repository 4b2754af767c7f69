//! The safetensors reader on arbitrary bytes: an error or records that tile the data section
//! exactly, never a panic; the in-memory and memory-mapped readers agree.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use model_context_formats::{load_safetensors, load_safetensors_bytes, TensorRecord};

type Summary = Vec<(String, String, Vec<i64>, Vec<i64>, Vec<u8>)>;

fn summary(records: &[(String, TensorRecord)]) -> Summary {
    records
        .iter()
        .map(|(name, t)| {
            let bytes = t.to_contiguous_bytes();
            assert_eq!(bytes.len(), t.numel() * t.dtype.size(), "'{name}'");
            assert_eq!(t.storage.len(), bytes.len(), "'{name}' is dense");
            assert!(t.is_contiguous(), "'{name}'");
            (
                name.clone(),
                t.dtype.name().to_string(),
                t.shape.clone(),
                t.strides.clone(),
                bytes,
            )
        })
        .collect()
}

fn scratch_file() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("mc-fuzz-st-{}.safetensors", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let in_memory = load_safetensors_bytes(data, "fuzz.safetensors");
    let path = scratch_file();
    std::fs::write(path, data).expect("write the scratch file");
    let mapped = load_safetensors(path);
    match (&in_memory, &mapped) {
        (Ok(a), Ok(b)) => {
            let sa = summary(a);
            // Every data byte after the header belongs to exactly one tensor.
            let header = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
            let total: usize = sa.iter().map(|r| r.4.len()).sum();
            assert_eq!(total, data.len() - 8 - header, "tensors tile the data");
            assert_eq!(
                sa,
                summary(b),
                "load_safetensors_bytes and load_safetensors disagree"
            );
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.kind, b.kind, "{} / {}", a.message, b.message);
            assert!(a.message.starts_with("fuzz.safetensors: "), "{}", a.message);
        }
        (a, b) => panic!(
            "the readers disagree: bytes {:?}, mapped {:?}",
            a.as_ref().map(|_| ()).map_err(|e| &e.message),
            b.as_ref().map(|_| ()).map_err(|e| &e.message)
        ),
    }
});
