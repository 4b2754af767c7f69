//! What a model string names: folders that are TDB, Hugging Face, both or neither; named
//! models; URLs; Hugging Face configs and files the TDB layout cannot represent. Every
//! refusal names what was expected, through the Rust API and the C ABI's statuses.
mod common;
use model_context::ffi::*;
use model_context::source::detect::{open_source, ModelKind};
use model_context::source::SourceOptions;
use model_context::{ErrorKind, ModelContext, OpenOptions, StandardModelContext, WeightLocation};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

fn golden_hf() -> (PathBuf, PathBuf) {
    let dir = common::data_dir(
        "MC_HF_GOLDEN_DIR",
        "data/hf_golden",
        "scripts/gen_hf_golden.py",
    );
    (
        dir.join("tied_f32/hf_safetensors"),
        dir.join("tied_f32/tdb"),
    )
}

fn open_err(path: &Path) -> model_context::Error {
    open_source(path.to_str().unwrap(), &SourceOptions::default())
        .err()
        .expect("expected a failure")
}

fn expect(e: &model_context::Error, kind: ErrorKind, needles: &[&str]) {
    assert_eq!(e.kind, kind, "{}", e.message);
    for n in needles {
        assert!(e.message.contains(n), "{:?} lacks {n:?}", e.message);
    }
}

/// A copy of a folder's top-level files (and model_pieces/ if asked).
fn copy_folder(src: &Path, with_pieces: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        } else if with_pieces && p.file_name().unwrap() == "model_pieces" {
            std::fs::create_dir(dir.path().join("model_pieces")).unwrap();
            for f in std::fs::read_dir(&p).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(
                    &f,
                    dir.path().join("model_pieces").join(f.file_name().unwrap()),
                )
                .unwrap();
            }
        }
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn folders_are_told_apart_and_refused_when_they_are_both_or_neither() {
    let (hf, tdb) = golden_hf();
    let (kind, _) = open_source(hf.to_str().unwrap(), &SourceOptions::default()).unwrap();
    assert_eq!(kind, ModelKind::LocalHf);
    let (kind, _) = open_source(tdb.to_str().unwrap(), &SourceOptions::default()).unwrap();
    assert_eq!(kind, ModelKind::LocalTdb);

    // Both kinds in one folder.
    let both = copy_folder(&tdb, true);
    std::fs::copy(
        hf.join("model.safetensors"),
        both.path().join("model.safetensors"),
    )
    .unwrap();
    expect(
        &open_err(both.path()),
        ErrorKind::InvalidArgument,
        &["ambiguous", "model_pieces", "model.safetensors"],
    );
    // A Hugging Face config beside TDB pieces.
    let mixed = copy_folder(&tdb, true);
    std::fs::copy(hf.join("config.json"), mixed.path().join("config.json")).unwrap();
    expect(
        &open_err(mixed.path()),
        ErrorKind::InvalidArgument,
        &["ambiguous", "model_type"],
    );
    // Neither: an empty folder, a lone TDB config.
    let empty = tempfile::tempdir().unwrap();
    expect(
        &open_err(empty.path()),
        ErrorKind::NotFound,
        &["config.json", "expected a TDB checkpoint", "Hugging Face"],
    );
    std::fs::copy(tdb.join("config.json"), empty.path().join("config.json")).unwrap();
    expect(
        &open_err(empty.path()),
        ErrorKind::NotFound,
        &["not a recognised checkpoint folder", "model_pieces"],
    );
    // Hugging Face weights under a config without model_type.
    let no_type = copy_folder(&hf, false);
    edit_config(no_type.path(), |c| {
        c.remove("model_type");
    });
    expect(
        &open_err(no_type.path()),
        ErrorKind::Format,
        &["no `model_type`", "model.safetensors"],
    );
    // A Hugging Face config without weights.
    let no_weights = tempfile::tempdir().unwrap();
    std::fs::copy(
        hf.join("config.json"),
        no_weights.path().join("config.json"),
    )
    .unwrap();
    expect(
        &open_err(no_weights.path()),
        ErrorKind::NotFound,
        &["model.safetensors", "pytorch_model.bin"],
    );
    // Another architecture.
    let llama = copy_folder(&hf, false);
    edit_config(llama.path(), |c| {
        c.insert("model_type".into(), "llama".into());
    });
    expect(
        &open_err(llama.path()),
        ErrorKind::Unsupported,
        &["`model_type`", "llama", "gpt2"],
    );
    // A file, a missing path, a URL scheme we do not fetch from.
    expect(
        &open_err(&hf.join("config.json")),
        ErrorKind::InvalidArgument,
        &["not a folder"],
    );
    expect(
        &open_err(Path::new("/nonexistent/model")),
        ErrorKind::NotFound,
        &["/nonexistent/model", "gpt2-small"],
    );
    let e = open_source("s3://bucket/model", &SourceOptions::default())
        .err()
        .unwrap();
    expect(&e, ErrorKind::InvalidArgument, &["s3"]);
}

#[test]
fn hf_configs_and_files_the_layout_cannot_represent_are_named() {
    let (hf, _) = golden_hf();
    for (field, value) in [
        ("activation_function", serde_json::json!("relu")),
        ("layer_norm_epsilon", serde_json::json!(1e-6)),
        ("scale_attn_by_inverse_layer_idx", serde_json::json!(true)),
        ("reorder_and_upcast_attn", serde_json::json!(true)),
        ("vocab_size", serde_json::json!(50000)),
    ] {
        let d = copy_folder(&hf, false);
        edit_config(d.path(), |c| {
            c.insert(field.into(), value.clone());
        });
        expect(
            &open_err(d.path()),
            ErrorKind::Unsupported,
            &[&format!("`{field}`"), "config.json"],
        );
    }
    // More layers than the file has: a false claim, caught at open from the file's tensor
    // list, naming the key and the layers found.
    let d = copy_folder(&hf, false);
    edit_config(d.path(), |c| {
        c.insert("n_layer".into(), 3.into());
    });
    let opts = OpenOptions {
        device: Some(model_context::Device::Cpu),
        ..Default::default()
    };
    let e = StandardModelContext::open(d.path().to_str().unwrap(), &opts)
        .err()
        .expect("a claim of 3 layers over a file of 2");
    expect(
        &e,
        ErrorKind::Format,
        &[
            "n_layers = 3",
            "`n_layer`",
            "2 layer(s)",
            "xf_layers.2.ln_1.weight",
        ],
    );
    // A wider context than the file's position embedding: a false claim, both shapes and the key.
    let d = copy_folder(&hf, false);
    edit_config(d.path(), |c| {
        c.insert("n_positions".into(), 128.into());
    });
    let ctx = open_ctx(d.path());
    let e = ctx
        .get_weight(WeightLocation::PositionEmbedding, None, None, None)
        .err()
        .unwrap();
    expect(
        &e,
        ErrorKind::Format,
        &[
            "wpe.weight",
            "[64, 32]",
            "claims [128, 32]",
            "(`n_positions` = 128)",
        ],
    );
    // Untied without lm_head.weight in the file.
    let d = copy_folder(&hf, false);
    edit_config(d.path(), |c| {
        c.insert("tie_word_embeddings".into(), false.into());
    });
    let e = open_ctx(d.path())
        .get_weight(WeightLocation::Unembedding, None, None, None)
        .err()
        .unwrap();
    expect(
        &e,
        ErrorKind::NotFound,
        &["lm_head.weight", "unembed.weight"],
    );
    // A corrupt weight file is a Format error naming it, when first needed.
    let d = copy_folder(&hf, false);
    let mut bytes = 16u64.to_le_bytes().to_vec();
    bytes.extend(b"{not json}      ");
    std::fs::write(d.path().join("model.safetensors"), bytes).unwrap();
    let e = open_ctx(d.path())
        .get_weight(WeightLocation::Embedding, None, None, None)
        .err()
        .unwrap();
    expect(
        &e,
        ErrorKind::Format,
        &["model.safetensors", "malformed JSON"],
    );
}

#[test]
fn sharded_safetensors_are_read_through_their_index_and_shards_stay_beside_it() {
    let (hf, tdb) = golden_hf();
    let d = copy_folder(&hf, false);
    let shard = "model-00001-of-00001.safetensors";
    std::fs::rename(d.path().join("model.safetensors"), d.path().join(shard)).unwrap();
    let keys = model_context_formats::load_safetensors(&d.path().join(shard)).unwrap();
    let map: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(k, _)| (k.clone(), shard.into()))
        .collect();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let a = open_ctx(d.path());
    let b = open_ctx(&tdb);
    for loc in [WeightLocation::Embedding, WeightLocation::Unembedding] {
        let x = a.get_weight(loc, None, None, None).unwrap();
        let y = b.get_weight(loc, None, None, None).unwrap();
        assert!(common::tensor_bytes(&x.tensor) == common::tensor_bytes(&y.tensor));
    }
    let x = a
        .get_weight(WeightLocation::AttnToValue, Some(1), None, None)
        .unwrap();
    let y = b
        .get_weight(WeightLocation::AttnToValue, Some(1), None, None)
        .unwrap();
    assert!(common::tensor_bytes(&x.tensor) == common::tensor_bytes(&y.tensor));

    let index = serde_json::json!({"weight_map": {"wte.weight": "../outside.safetensors"}});
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let e = open_ctx(d.path())
        .get_weight(WeightLocation::Embedding, None, None, None)
        .err()
        .unwrap();
    expect(
        &e,
        ErrorKind::Format,
        &["../outside.safetensors", "beside the index"],
    );
}

#[test]
fn a_named_model_shadowed_by_a_local_folder_is_refused() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join("gpt2-small")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mc-convert"))
        .args(["--quiet", "--offline", "gpt2-small", "out"])
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("both a named model and a local path") && err.contains("./gpt2-small"),
        "{err}"
    );
}

#[test]
fn c_abi_statuses_for_kinds_of_folders() {
    let (hf, _) = golden_hf();
    let open = |p: &Path| {
        let path = CString::new(p.to_str().unwrap()).unwrap();
        let mut ctx = std::ptr::null_mut();
        let s = unsafe { mc_open(path.as_ptr(), c"cpu".as_ptr(), &mut ctx) };
        let msg = unsafe {
            CStr::from_ptr(mc_last_error())
                .to_string_lossy()
                .into_owned()
        };
        (s, ctx, msg)
    };
    let (s, ctx, msg) = open(&hf);
    assert_eq!(s, MC_OK, "{msg}");
    let mut d = 0i64;
    assert_eq!(
        unsafe { mc_dim_size(ctx, MC_DIM_RESIDUAL_STREAM_CHANNELS, &mut d) },
        MC_OK
    );
    assert_eq!(d, 32);
    unsafe { mc_free(ctx) };
    let bad = copy_folder(&hf, false);
    edit_config(bad.path(), |c| {
        c.insert("activation_function".into(), "gelu".into());
    });
    let (s, ctx, msg) = open(bad.path());
    assert_eq!((s, ctx.is_null()), (MC_ERR_UNSUPPORTED, true), "{msg}");
    assert!(msg.contains("activation_function"), "{msg}");
    let empty = tempfile::tempdir().unwrap();
    let (s, _, msg) = open(empty.path());
    assert_eq!(s, MC_ERR_NOT_FOUND, "{msg}");
}

fn open_ctx(dir: &Path) -> StandardModelContext {
    let opts = OpenOptions {
        device: Some(model_context::Device::Cpu),
        ..Default::default()
    };
    StandardModelContext::open(dir.to_str().unwrap(), &opts).unwrap()
}

#[test]
fn an_empty_path_and_an_unparsable_config_say_so() {
    let e = open_source("", &SourceOptions::default()).err().unwrap();
    expect(&e, ErrorKind::InvalidArgument, &["the model path is empty"]);
    let mut ctx = std::ptr::null_mut();
    assert_eq!(
        unsafe { mc_open(c"".as_ptr(), std::ptr::null(), &mut ctx) },
        MC_ERR_INVALID_ARGUMENT
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let e = open_err(dir.path());
    expect(
        &e,
        ErrorKind::Format,
        &["config.json: not valid JSON", "line 1 column 2"],
    );
}

/// A config.json larger than any checkpoint's is refused before it is read into memory, in a
/// TDB folder and a Hugging Face one alike.
#[test]
fn a_config_past_the_json_limit_is_refused_unread() {
    let limit = model_context::source::MAX_JSON_BYTES;
    let (hf, tdb) = golden_hf();
    for src in [hf, tdb] {
        let d = copy_folder(&src, true);
        let f = std::fs::File::create(d.path().join("config.json")).unwrap();
        f.set_len(limit + 1).unwrap();
        let e = open_err(d.path());
        expect(
            &e,
            ErrorKind::Format,
            &[
                "config.json",
                &format!("{} bytes, more than the {limit}", limit + 1),
            ],
        );
    }
}
