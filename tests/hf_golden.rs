//! Hugging Face GPT-2 folders against their TDB conversion done in Python (spec section 7,
//! scripts/gen_hf_golden.py): every piece and every weight location bit for bit, zero-copy
//! views, Hugging Face cache symlinks, and the converter's output read back by Python torch.
mod common;
use model_context::source::detect::{open_source, ModelKind};
use model_context::source::{PieceSource, SourceOptions};
use model_context::{Device, ModelContext, OpenOptions, StandardModelContext, WeightLocation};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn golden() -> (PathBuf, Value) {
    let dir = common::data_dir(
        "MC_HF_GOLDEN_DIR",
        "data/hf_golden",
        "scripts/gen_hf_golden.py",
    );
    let manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    (dir, manifest)
}

fn open(dir: &Path) -> StandardModelContext {
    let opts = OpenOptions {
        device: Some(Device::Cpu),
        ..Default::default()
    };
    StandardModelContext::open(dir.to_str().unwrap(), &opts).unwrap()
}

fn source(dir: &Path) -> (ModelKind, Box<dyn PieceSource>) {
    open_source(dir.to_str().unwrap(), &SourceOptions::default()).unwrap()
}

/// Every weight location of every layer, as raw bytes, from two contexts.
fn assert_same_weights(a: &dyn ModelContext, b: &dyn ModelContext, what: &str) -> usize {
    let mut n = 0;
    let layers = a.n_layers().unwrap();
    for &loc in WeightLocation::ALL {
        let per_layer: Vec<Option<i64>> = if loc.spec().per_layer() {
            (0..layers).map(Some).collect()
        } else {
            vec![None]
        };
        for layer in per_layer {
            let x = a.get_weight(loc, layer, None, None).unwrap();
            let y = b.get_weight(loc, layer, None, None).unwrap();
            assert_eq!(x.shape(), y.shape(), "{what} {} {layer:?}", loc.name());
            assert_eq!(x.tensor.kind(), y.tensor.kind(), "{what} {}", loc.name());
            assert!(
                common::tensor_bytes(&x.tensor) == common::tensor_bytes(&y.tensor),
                "{what}: {} layer {layer:?} differs",
                loc.name()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn hf_folders_equal_their_python_tdb_conversion_bit_for_bit() {
    let (dir, manifest) = golden();
    let mut checked = 0;
    for case in manifest["cases"].as_array().unwrap() {
        let tdb_dir = dir.join(case["tdb"].as_str().unwrap());
        let (kind, tdb) = source(&tdb_dir);
        assert_eq!(kind, ModelKind::LocalTdb);
        let tdb_ctx = open(&tdb_dir);
        for (format, folder) in case["hf"].as_object().unwrap() {
            let what = format!("{} {format}", case["name"]);
            let hf_dir = dir.join(folder.as_str().unwrap());
            let (kind, hf) = source(&hf_dir);
            assert_eq!(kind, ModelKind::LocalHf, "{what}");
            assert_eq!(hf.config().to_json(), case["config"], "{what}");
            assert_eq!(hf.config(), tdb.config(), "{what}");
            // Every piece: same dtype, shape and bytes, and a view into the mapped file.
            let n_vocab = 50257;
            for (key, shape) in model_context::schema::layout::pieces(hf.config(), n_vocab) {
                let h = hf.load_piece(&key).unwrap();
                let t = tdb.load_piece(&key).unwrap();
                assert_eq!((h.dtype, &h.shape), (t.dtype, &shape), "{what} {key}");
                assert_eq!(t.shape, shape, "{what} {key}");
                assert!(
                    h.to_contiguous_bytes() == t.to_contiguous_bytes(),
                    "{what}: piece {key} differs"
                );
                assert!(h.storage.is_mapped(), "{what}: {key} is a copy, not a view");
                if key.ends_with("q_proj.weight") || key.ends_with("mlp.in_layer.weight") {
                    assert!(
                        !h.is_contiguous(),
                        "{what}: {key} should be a transposed view"
                    );
                }
            }
            // Every weight location through the context, and again from the model's parameters.
            let hf_ctx = open(&hf_dir);
            assert_eq!(
                hf_ctx.config_json().unwrap(),
                tdb_ctx.config_json().unwrap()
            );
            checked += assert_same_weights(&hf_ctx, &tdb_ctx, &what);
            // The model's parameters (float32, built from the strided views) agree too.
            let tdb_model_ctx = open(&tdb_dir);
            hf_ctx.get_or_create_model(None).unwrap();
            tdb_model_ctx.get_or_create_model(None).unwrap();
            assert_same_weights(&hf_ctx, &tdb_model_ctx, &format!("{what} (model)"));
        }
    }
    assert!(checked > 50, "only {checked} weights compared");
}

/// Hugging Face's own cache keeps snapshots as symlinks into a blobs folder.
#[test]
fn hf_cache_snapshot_symlinks_are_followed() {
    let (dir, manifest) = golden();
    let case = &manifest["cases"][0];
    let src = dir.join(case["hf"]["safetensors"].as_str().unwrap());
    let cache = tempfile::tempdir().unwrap();
    let blobs = cache.path().join("blobs");
    let snapshot = cache.path().join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    for (i, name) in ["config.json", "model.safetensors"].iter().enumerate() {
        let blob = blobs.join(format!("blob{i}"));
        std::fs::copy(src.join(name), &blob).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/blob{i}"), snapshot.join(name)).unwrap();
    }
    // The snapshot folder itself reached through a link too, as `refs` users do.
    let link = cache.path().join("latest");
    std::os::unix::fs::symlink(&snapshot, &link).unwrap();
    let tdb_ctx = open(&dir.join(case["tdb"].as_str().unwrap()));
    let hf_ctx = open(&link);
    assert!(assert_same_weights(&hf_ctx, &tdb_ctx, "symlinked") > 10);
}

#[test]
fn converter_output_loads_in_python_torch_with_identical_values() {
    let (dir, manifest) = golden();
    let python = common::root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    for case in manifest["cases"].as_array().unwrap() {
        let expected = dir.join(case["tdb"].as_str().unwrap());
        for folder in case["hf"].as_object().unwrap().values() {
            let out = tempfile::tempdir().unwrap();
            let status = std::process::Command::new(env!("CARGO_BIN_EXE_mc-convert"))
                .arg("--quiet")
                .arg(dir.join(folder.as_str().unwrap()))
                .arg(out.path())
                .status()
                .unwrap();
            assert!(status.success(), "mc-convert failed on {folder}");
            let check = std::process::Command::new(&python)
                .arg(common::root().join("scripts/check_tdb_equal.py"))
                .arg(out.path())
                .arg(&expected)
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "Python check of the conversion of {folder} failed:\n{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
            // And it opens here as a TDB folder with the same weights.
            let (kind, _) = source(out.path());
            assert_eq!(kind, ModelKind::LocalTdb);
            assert_same_weights(&open(out.path()), &open(&expected), "converted");
            // A second run refuses to overwrite unless asked to.
            let again = std::process::Command::new(env!("CARGO_BIN_EXE_mc-convert"))
                .arg("--quiet")
                .arg(dir.join(folder.as_str().unwrap()))
                .arg(out.path())
                .output()
                .unwrap();
            assert!(!again.status.success());
            assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
        }
    }
}
