//! Golden tests: files written by the real `torch.save`, compared with what `torch.load`
//! returned for them (see `scripts/gen_pt_golden.py`), plus the hostile files it writes.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use model_context_formats::{
    load_pt, load_pt_bytes, load_tensor, ErrorKind, FormatError, PtValue, TensorRecord,
};
use serde_json::Value;

mod meter;

#[global_allocator]
static METER: meter::Meter = meter::Meter;

fn golden_dir() -> PathBuf {
    // The crate's folder as cargo gives it when running the test, not as it was when the
    // binary was built: the build folder may be shared by clones at other paths.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dir = std::env::var_os("MC_PT_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let dir = manifest.join("../../data/pt_golden");
            dir.canonicalize().unwrap_or(dir)
        });
    assert!(
        dir.join("manifest.json").is_file(),
        "golden .pt files are missing at {}: generate them with \
         `python scripts/gen_pt_golden.py {}` (a Python with torch, e.g. \
         ~/.cache/model_context/venv/bin/python), or point MC_PT_GOLDEN_DIR at them",
        dir.display(),
        dir.display()
    );
    dir
}

fn manifest(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("manifest.json")).expect("read manifest.json");
    serde_json::from_str(&text).expect("parse manifest.json")
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int"))
        .collect()
}

/// The (key, tensor) pairs of a loaded file, in file order (key None for a single tensor).
fn items(v: PtValue) -> Vec<(Option<String>, TensorRecord)> {
    match v {
        PtValue::Tensor(t) => vec![(None, t)],
        PtValue::Dict(d) => d.into_iter().map(|(k, t)| (Some(k), t)).collect(),
    }
}

/// Compares one loaded file against its manifest entry; `mapped` is the expected is_mapped().
fn check_file(dir: &Path, entry: &Value, loaded: PtValue, mapped: bool) {
    let file = entry["file"].as_str().unwrap();
    let kind = entry["kind"].as_str().unwrap();
    match (&loaded, kind) {
        (PtValue::Tensor(_), "tensor") | (PtValue::Dict(_), "dict") => {}
        _ => panic!("{file}: expected a {kind}"),
    }
    let got = items(loaded);
    let want = entry["tensors"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{file}: number of tensors");
    let mut group_storage: HashMap<u64, Arc<model_context_formats::Storage>> = HashMap::new();
    for ((key, t), w) in got.iter().zip(want) {
        let what = format!("{file}[{key:?}]");
        assert_eq!(key.as_deref(), w["key"].as_str(), "{what}: key order");
        assert_eq!(
            t.dtype.name(),
            w["dtype"].as_str().unwrap(),
            "{what}: dtype"
        );
        assert_eq!(t.shape, ints(&w["shape"]), "{what}: shape");
        assert_eq!(t.strides, ints(&w["stride"]), "{what}: strides");
        assert_eq!(
            t.offset,
            w["storage_offset"].as_i64().unwrap(),
            "{what}: offset"
        );
        let expected = std::fs::read(dir.join(w["bin"].as_str().unwrap())).unwrap();
        let bytes = t.to_contiguous_bytes();
        assert_eq!(
            bytes.len(),
            t.numel() * t.dtype.size(),
            "{what}: byte count"
        );
        assert!(
            bytes == expected,
            "{what}: contiguous bytes differ from torch.load"
        );
        if t.is_contiguous() && !bytes.is_empty() {
            // SAFETY: a contiguous validated record has numel elements at data_ptr.
            let direct = unsafe { std::slice::from_raw_parts(t.data_ptr(), bytes.len()) };
            assert!(direct == &bytes[..], "{what}: data_ptr bytes");
        }
        assert_eq!(t.storage.is_mapped(), mapped, "{what}: is_mapped");
        if mapped {
            assert_eq!(
                t.storage.as_ptr() as usize % t.dtype.size(),
                0,
                "{what}: aligned"
            );
        } else {
            assert_eq!(
                t.storage.as_ptr() as usize % 64,
                0,
                "{what}: owned copy 64-aligned"
            );
        }
        // Tensors share one Arc<Storage> exactly when torch.load gave them one storage.
        let group = w["storage_group"].as_u64().unwrap();
        match group_storage.get(&group) {
            Some(s) => assert!(Arc::ptr_eq(s, &t.storage), "{what}: shared storage"),
            None => {
                for s in group_storage.values() {
                    assert!(!Arc::ptr_eq(s, &t.storage), "{what}: distinct storage");
                }
                group_storage.insert(group, t.storage.clone());
            }
        }
    }
}

#[test]
fn golden_files_match_torch_load() {
    let dir = golden_dir();
    let m = manifest(&dir);
    let files = m["files"].as_array().unwrap();
    let mut variants: HashMap<String, usize> = HashMap::new();
    let mut dtypes = BTreeSet::new();
    let mut ndims = BTreeSet::new();
    let mut shared = 0;
    for entry in files {
        let file = entry["file"].as_str().unwrap();
        let variant = entry["variant"].as_str().unwrap();
        *variants.entry(variant.to_string()).or_default() += 1;
        let path = dir.join(file);
        let loaded = load_pt(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_file(&dir, entry, loaded, variant == "torch");
        // The in-memory reader gives the same tensors, always as owned copies.
        let bytes = std::fs::read(&path).unwrap();
        let loaded = load_pt_bytes(bytes, file).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_file(&dir, entry, loaded, false);
        // load_tensor accepts single tensors and refuses dicts.
        match (entry["kind"].as_str().unwrap(), load_tensor(&path)) {
            ("tensor", Ok(_)) => {}
            ("dict", Err(e)) => {
                assert_eq!(e.kind, ErrorKind::Format, "{file}");
                assert!(
                    e.message.contains(file) && e.message.contains("dict"),
                    "{e}"
                );
            }
            (k, r) => panic!("{file}: load_tensor on a {k} gave {r:?}"),
        }
        for t in entry["tensors"].as_array().unwrap() {
            dtypes.insert(t["dtype"].as_str().unwrap().to_string());
            ndims.insert(t["shape"].as_array().unwrap().len());
        }
        let groups: BTreeSet<u64> = entry["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["storage_group"].as_u64().unwrap())
            .collect();
        if groups.len() < entry["tensors"].as_array().unwrap().len() {
            shared += 1;
        }
    }
    // The manifest really covers what the tests claim.
    assert_eq!(dtypes.len(), 10, "dtypes covered: {dtypes:?}");
    assert_eq!(ndims, (0..=4).collect(), "dimensions covered");
    assert!(variants["torch"] >= 60, "{variants:?}");
    assert!(variants["deflated"] >= 5, "{variants:?}");
    assert!(variants["unaligned"] >= 5, "{variants:?}");
    assert!(shared >= 3, "files with shared storages: {shared}");
}

#[test]
fn state_dict_keeps_file_order_and_ignores_metadata() {
    let dir = golden_dir();
    let PtValue::Dict(d) = load_pt(&dir.join("state_dict.pt")).unwrap() else {
        panic!("state_dict.pt is not a dict");
    };
    let keys: Vec<&str> = d.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "0.weight",
            "1.weight",
            "1.bias",
            "2.weight",
            "2.bias",
            "3.weight",
            "3.bias",
            "3.running_mean",
            "3.running_var",
            "3.num_batches_tracked"
        ]
    );
    let (_, tracked) = &d[9];
    assert_eq!((tracked.dtype.name(), tracked.shape.len()), ("int64", 0));
}

#[test]
fn writes_to_a_mapped_view_stay_private() {
    let dir = golden_dir();
    let path = dir.join("float32_2d.pt");
    let before = std::fs::read(&path).unwrap();
    let t = load_tensor(&path).unwrap();
    assert!(t.storage.is_mapped());
    let n = t.numel() * 4;
    // SAFETY: the record is contiguous with n bytes at data_ptr, and nothing else reads it.
    unsafe { std::ptr::write_bytes(t.data_ptr(), 0x7f, n) };
    assert!(t.to_contiguous_bytes().iter().all(|&b| b == 0x7f));
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
    let again = load_tensor(&path).unwrap();
    assert!(again.to_contiguous_bytes().iter().any(|&b| b != 0x7f));
}

/// What our reader must answer for each hostile file: kind and message fragments.
const HOSTILE: &[(&str, ErrorKind, &[&str])] = &[
    (
        "forbidden_os_system.pt",
        ErrorKind::Forbidden,
        &["'os.system'", "data.pkl"],
    ),
    (
        "forbidden_builtins_eval.pt",
        ErrorKind::Forbidden,
        &["'builtins.eval'"],
    ),
    (
        "forbidden_stack_global.pt",
        ErrorKind::Forbidden,
        &["'posix.system'"],
    ),
    ("empty_file.pt", ErrorKind::Format, &["empty file"]),
    ("not_zip.pt", ErrorKind::Format, &["not a zip archive"]),
    (
        "legacy.pt",
        ErrorKind::Unsupported,
        &["unsupported legacy (pre-1.6, non-zip) torch.save format"],
    ),
    (
        "truncated_record.pt",
        ErrorKind::Format,
        &[
            "'archive/data/0'",
            "holds 20 bytes",
            "storage '0' needs 48 bytes",
        ],
    ),
    (
        "missing_record.pt",
        ErrorKind::Format,
        &["missing record 'archive/data/0'"],
    ),
    (
        "big_endian.pt",
        ErrorKind::Unsupported,
        &["byteorder", "big"],
    ),
    (
        "strides_outside.pt",
        ErrorKind::Shape,
        &["storage '0'", "reaches element 13", "holds 12 elements"],
    ),
    (
        "negative_stride.pt",
        ErrorKind::Shape,
        &["negative stride -1"],
    ),
    (
        "numel_overflow.pt",
        ErrorKind::Shape,
        &["element count", "overflows"],
    ),
    (
        "storage_too_big.pt",
        ErrorKind::Format,
        &[
            "'archive/data/0'",
            "holds 48 bytes",
            "needs 4398046511104 bytes",
        ],
    ),
    (
        "deep_nesting.pt",
        ErrorKind::Format,
        &["nests deeper than 256"],
    ),
    (
        "zip_bomb.pt",
        ErrorKind::Format,
        &["'archive/data/0'", "declared size 48"],
    ),
];

fn expect_error(r: Result<PtValue, FormatError>, file: &str, kind: ErrorKind, parts: &[&str]) {
    let e = match r {
        Ok(v) => panic!("{file}: expected {kind:?}, loaded {v:?}"),
        Err(e) => e,
    };
    assert_eq!(e.kind, kind, "{file}: {}", e.message);
    assert!(
        e.message.contains(file),
        "{file}: message lacks the path: {}",
        e.message
    );
    for p in parts {
        assert!(
            e.message.contains(p),
            "{file}: message lacks {p:?}: {}",
            e.message
        );
    }
}

#[test]
fn hostile_files_are_refused_and_never_run() {
    let dir = golden_dir();
    let m = manifest(&dir);
    let listed: BTreeSet<&str> = m["hostile"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["file"].as_str().unwrap())
        .collect();
    let tested: BTreeSet<&str> = HOSTILE.iter().map(|h| h.0).collect();
    assert_eq!(listed, tested, "every hostile file has an expectation");
    let markers: Vec<PathBuf> = m["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect();
    assert_eq!(markers.len(), 3);
    for mk in &markers {
        assert!(
            !mk.exists(),
            "marker {} exists before the test",
            mk.display()
        );
    }
    for &(file, kind, parts) in HOSTILE {
        let path = dir.join(file);
        // Each is refused within 16 MiB of heap (the zip bomb inflates 64 MiB if let) and 5 s.
        let (r, cost) = meter::measure(|| load_pt(&path));
        expect_error(r, file, kind, parts);
        meter::assert_bounded(file, cost, 16 << 20, std::time::Duration::from_secs(5));
        let bytes = std::fs::read(&path).unwrap();
        let (r, cost) = meter::measure(|| load_pt_bytes(bytes, file));
        expect_error(r, file, kind, parts);
        meter::assert_bounded(file, cost, 16 << 20, std::time::Duration::from_secs(5));
        eprintln!(
            "{file}: refused in {:?}, {} heap bytes at the peak",
            cost.elapsed, cost.peak_bytes
        );
    }
    for mk in &markers {
        assert!(
            !mk.exists(),
            "{} was created: a forbidden call ran",
            mk.display()
        );
    }
}

#[test]
fn missing_file_is_not_found() {
    let dir = golden_dir();
    let e = load_pt(&dir.join("no_such_file.pt")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("no_such_file.pt"), "{e}");
}

/// Deterministic mutations of real files (bit flips, overwrites, truncations) must give an
/// error or a value, never a panic or a hang.
#[test]
fn mutated_golden_files_never_panic() {
    let dir = golden_dir();
    let seeds = [
        "float32_2d.pt",
        "shared_storage.pt",
        "state_dict.pt",
        "parameter.pt",
        "state_dict__deflated.pt",
        "shared_storage__unaligned.pt",
        "view_permuted_4d.pt",
    ];
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut outcomes = [0usize; 2];
    for name in seeds {
        let orig = std::fs::read(dir.join(name)).unwrap();
        for round in 0..400 {
            let mut b = orig.clone();
            match round % 4 {
                0 => {
                    let i = (next() as usize) % b.len();
                    b[i] ^= 1 << (next() % 8);
                }
                1 => {
                    for _ in 0..1 + next() % 8 {
                        let i = (next() as usize) % b.len();
                        b[i] = next() as u8;
                    }
                }
                2 => b.truncate((next() as usize) % b.len()),
                _ => {
                    // Hit the pickle (at the start of torch's archives) harder.
                    let i = (next() as usize) % b.len().min(400);
                    b[i] = next() as u8;
                }
            }
            let r = std::panic::catch_unwind(|| load_pt_bytes(b.clone(), name).map(items));
            match r {
                Ok(Ok(items)) => {
                    // A mutated stride may turn into a huge broadcast view; gather only small ones.
                    for (_, t) in items.iter().filter(|(_, t)| t.numel() <= 1 << 24) {
                        let _ = t.to_contiguous_bytes();
                    }
                    outcomes[0] += 1;
                }
                Ok(Err(_)) => outcomes[1] += 1,
                Err(_) => panic!("{name} round {round}: reader panicked"),
            }
        }
    }
    assert!(outcomes[1] > 0, "{outcomes:?}");
}
