//! The torch.save reader on arbitrary bytes: an error or a valid value, never a panic, a hang
//! or an allocation beyond the input's reach; the in-memory reader (`load_pt_bytes`) and the
//! memory-mapped one (`load_pt`) must agree.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use model_context_formats::{load_pt, load_pt_bytes, PtValue, TensorRecord};

/// Largest view gathered into a contiguous copy (a stride-0 view may address far more elements
/// than its storage holds; gathering it is the caller's choice, not the reader's).
const GATHER_LIMIT: usize = 1 << 22;

fn records(v: &PtValue) -> Vec<(Option<&str>, &TensorRecord)> {
    match v {
        PtValue::Tensor(t) => vec![(None, t)],
        PtValue::Dict(d) => d.iter().map(|(k, t)| (Some(k.as_str()), t)).collect(),
    }
}

/// One record as (key, dtype, shape, strides, offset, gathered bytes).
type Summary = Vec<(Option<String>, String, Vec<i64>, Vec<i64>, i64, Vec<u8>)>;

/// What a loaded value is, byte for byte, for comparing the two readers.
fn summary(v: &PtValue) -> Summary {
    records(v)
        .into_iter()
        .map(|(k, t)| {
            let gathered = t.numel().saturating_mul(t.dtype.size());
            let bytes = if gathered <= GATHER_LIMIT {
                let b = t.to_contiguous_bytes();
                assert_eq!(b.len(), gathered, "gathered length");
                b
            } else {
                Vec::new()
            };
            assert_eq!(t.shape.len(), t.strides.len());
            (
                k.map(str::to_string),
                t.dtype.name().to_string(),
                t.shape.clone(),
                t.strides.clone(),
                t.offset,
                bytes,
            )
        })
        .collect()
}

fn scratch_file() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("mc-fuzz-pt-{}.pt", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let in_memory = load_pt_bytes(data.to_vec(), "fuzz.pt");
    let path = scratch_file();
    std::fs::write(path, data).expect("write the scratch file");
    let mapped = load_pt(path);
    match (&in_memory, &mapped) {
        (Ok(a), Ok(b)) => {
            let sa = summary(a);
            assert_eq!(sa, summary(b), "load_pt_bytes and load_pt disagree");
            // Views derived from a valid record stay valid (or are refused).
            for (_, t) in records(a) {
                for d in 0..t.shape.len() {
                    let _ = t.transposed(0, d);
                    let _ = t.narrowed(d, 1, t.shape[d] - 1);
                }
            }
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.kind, b.kind, "{} / {}", a.message, b.message);
            assert!(a.message.starts_with("fuzz.pt: "), "{}", a.message);
        }
        (a, b) => panic!(
            "the readers disagree: bytes {:?}, mapped {:?}",
            a.as_ref().map(|_| ()).map_err(|e| &e.message),
            b.as_ref().map(|_| ()).map_err(|e| &e.message)
        ),
    }
});
