//! The C ABI's boundary: statuses, messages, NULLs, out-parameters, and a handle that stays
//! usable after every kind of bad input.
mod common;
use model_context::ffi::dlpack::DLManagedTensorVersioned;
use model_context::ffi::*;
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

fn basic() -> PathBuf {
    common::data_dir(
        "MC_CONTEXT_GOLDEN_DIR",
        "data/context_golden",
        "scripts/gen_context_golden.py",
    )
    .join("basic")
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn last_error() -> String {
    unsafe {
        CStr::from_ptr(mc_last_error())
            .to_string_lossy()
            .into_owned()
    }
}

fn open(path: &Path) -> Result<*mut mc_context, (mc_status, String)> {
    let mut ctx = null_mut();
    let s = unsafe {
        mc_open(
            c(path.to_str().unwrap()).as_ptr(),
            c("cpu").as_ptr(),
            &mut ctx,
        )
    };
    if s == MC_OK {
        Ok(ctx)
    } else {
        assert!(ctx.is_null(), "out written on failure");
        Err((s, last_error()))
    }
}

fn get(
    ctx: *const mc_context,
    loc: i32,
    layer: i32,
    nd: i32,
    dev: Option<&str>,
) -> Result<*mut DLManagedTensorVersioned, (mc_status, String)> {
    let sentinel = std::ptr::dangling_mut::<DLManagedTensorVersioned>();
    let mut out = sentinel;
    let dev = dev.map(c);
    let s = unsafe {
        mc_get_weight(
            ctx,
            loc,
            layer,
            nd,
            dev.as_ref().map_or(null(), |d| d.as_ptr()),
            &mut out,
        )
    };
    if s == MC_OK {
        Ok(out)
    } else {
        assert_eq!(out, sentinel, "out written on failure");
        Err((s, last_error()))
    }
}

fn free_tensor(t: *mut DLManagedTensorVersioned) {
    unsafe { ((*t).deleter.unwrap())(t) }
}

fn assert_usable(ctx: *const mc_context) {
    let t = get(ctx, MC_WEIGHT_ATTN_TO_QUERY, 1, MC_DIM_NONE, None).expect("handle still usable");
    free_tensor(t);
}

/// A scratch copy of the basic checkpoint to damage.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = basic();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::create_dir(dir.path().join("model_pieces")).unwrap();
    for e in std::fs::read_dir(src.join("model_pieces")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(
            e.path(),
            dir.path().join("model_pieces").join(e.file_name()),
        )
        .unwrap();
    }
    dir
}

fn expect_err<T>(r: Result<T, (mc_status, String)>, status: mc_status, needles: &[&str]) {
    let (s, msg) = r.err().expect("expected a failure");
    assert_eq!(s, status, "status {} ({msg})", unsafe {
        CStr::from_ptr(mc_status_name(s)).to_str().unwrap()
    });
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
    }
}

#[test]
fn open_failures_name_the_cause() {
    expect_err(
        open(Path::new("/nonexistent/model")),
        MC_ERR_NOT_FOUND,
        &["/nonexistent/model"],
    );
    let d = scratch();
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    expect_err(open(d.path()), MC_ERR_NOT_FOUND, &["config.json"]);
    std::fs::write(d.path().join("config.json"), "{\"d_model\": 32,").unwrap();
    expect_err(
        open(d.path()),
        MC_ERR_FORMAT,
        &["config.json", "malformed JSON"],
    );
    std::fs::write(
        d.path().join("config.json"),
        r#"{"d_model": 30, "n_heads": 4}"#,
    )
    .unwrap();
    expect_err(open(d.path()), MC_ERR_FORMAT, &["n_heads = 4", "30"]);
    std::fs::write(d.path().join("config.json"), r#"{"enc": "nope"}"#).unwrap();
    expect_err(open(d.path()), MC_ERR_UNSUPPORTED, &["nope", "cl100k_base"]);
}

#[test]
fn argument_checks() {
    let ctx = open(&basic()).unwrap();
    let mut out: *mut mc_context = null_mut();
    assert_eq!(
        unsafe { mc_open(null(), null(), &mut out) },
        MC_ERR_NULL_ARGUMENT
    );
    assert!(last_error().contains("model"));
    assert_eq!(
        unsafe { mc_open(c("x").as_ptr(), null(), null_mut()) },
        MC_ERR_NULL_ARGUMENT
    );
    let bad_utf8 = [b'a', 0xff, b'b', 0];
    assert_eq!(
        unsafe { mc_open(bad_utf8.as_ptr() as *const c_char, null(), &mut out) },
        MC_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("offset 1"), "{}", last_error());
    expect_err(
        get(
            null(),
            MC_WEIGHT_EMBEDDING,
            MC_LAYER_NONE,
            MC_DIM_NONE,
            None,
        ),
        MC_ERR_NULL_ARGUMENT,
        &["ctx"],
    );
    assert_eq!(
        unsafe { mc_get_weight(ctx, MC_WEIGHT_EMBEDDING, -1, -1, null(), null_mut()) },
        MC_ERR_NULL_ARGUMENT
    );
    expect_err(
        get(ctx, 21, MC_LAYER_NONE, MC_DIM_NONE, None),
        MC_ERR_INVALID_ARGUMENT,
        &["21"],
    );
    expect_err(
        get(ctx, -5, MC_LAYER_NONE, MC_DIM_NONE, None),
        MC_ERR_INVALID_ARGUMENT,
        &["-5"],
    );
    expect_err(
        get(ctx, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, 12, None),
        MC_ERR_INVALID_ARGUMENT,
        &["12"],
    );
    expect_err(
        get(ctx, MC_WEIGHT_ATTN_TO_QUERY, 2, MC_DIM_NONE, None),
        MC_ERR_INVALID_ARGUMENT,
        &["layer 2", "2 layers"],
    );
    expect_err(
        get(
            ctx,
            MC_WEIGHT_ATTN_TO_QUERY,
            MC_LAYER_NONE,
            MC_DIM_NONE,
            None,
        ),
        MC_ERR_INVALID_ARGUMENT,
        &["per-layer"],
    );
    expect_err(
        get(ctx, MC_WEIGHT_EMBEDDING, 0, MC_DIM_NONE, None),
        MC_ERR_INVALID_ARGUMENT,
        &["model-wide"],
    );
    expect_err(
        get(ctx, MC_WEIGHT_EMBEDDING, -7, MC_DIM_NONE, None),
        MC_ERR_INVALID_ARGUMENT,
        &["-7"],
    );
    expect_err(
        get(
            ctx,
            MC_WEIGHT_EMBEDDING,
            MC_LAYER_NONE,
            MC_DIM_MLP_ACTS,
            None,
        ),
        MC_ERR_INVALID_ARGUMENT,
        &["mlp_acts"],
    );
    expect_err(
        get(
            ctx,
            MC_WEIGHT_EMBEDDING,
            MC_LAYER_NONE,
            MC_DIM_NONE,
            Some("tpu"),
        ),
        MC_ERR_INVALID_ARGUMENT,
        &["tpu"],
    );
    if !tch::Cuda::is_available() {
        expect_err(
            get(
                ctx,
                MC_WEIGHT_EMBEDDING,
                MC_LAYER_NONE,
                MC_DIM_NONE,
                Some("cuda:0"),
            ),
            MC_ERR_DEVICE,
            &["cuda:0"],
        );
        expect_err(open_on(&basic(), "cuda"), MC_ERR_DEVICE, &["cuda"]);
    }
    if !tch::utils::has_mps() {
        expect_err(
            get(
                ctx,
                MC_WEIGHT_EMBEDDING,
                MC_LAYER_NONE,
                MC_DIM_NONE,
                Some("mps"),
            ),
            MC_ERR_DEVICE,
            &["mps"],
        );
    }
    let mut size = 77i64;
    assert_eq!(
        unsafe { mc_dim_size(ctx, MC_DIM_SEQUENCE_TOKENS, &mut size) },
        MC_ERR_INVALID_ARGUMENT
    );
    assert_eq!(size, 77);
    assert_eq!(
        unsafe { mc_dim_size(ctx, MC_DIM_SINGLETON, &mut size) },
        MC_OK
    );
    assert_eq!(size, 1);
    assert_usable(ctx);
    unsafe { mc_free(ctx) };
    unsafe { mc_free(null_mut()) };
    unsafe { mc_string_free(null_mut()) };
}

fn open_on(path: &Path, device: &str) -> Result<*mut mc_context, (mc_status, String)> {
    let mut ctx = null_mut();
    let s = unsafe {
        mc_open(
            c(path.to_str().unwrap()).as_ptr(),
            c(device).as_ptr(),
            &mut ctx,
        )
    };
    if s == MC_OK {
        Ok(ctx)
    } else {
        Err((s, last_error()))
    }
}

/// A zip in torch's layout whose pickle calls `os.system`.
fn forbidden_piece(path: &Path) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
        .unwrap();
    z.start_file("archive/version", opts).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

#[test]
fn bad_pieces_fail_cleanly_and_leave_the_handle_usable() {
    let d = scratch();
    let pieces = d.path().join("model_pieces");
    std::fs::remove_file(pieces.join("xf_layers.0.mlp.in_layer.weight.pt")).unwrap();
    let trunc = pieces.join("xf_layers.0.mlp.out_layer.weight.pt");
    let bytes = std::fs::read(&trunc).unwrap();
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let corrupt = pieces.join("xf_layers.0.attn.v_proj.weight.pt");
    std::fs::write(&corrupt, vec![0x5au8; 4096]).unwrap();
    forbidden_piece(&pieces.join("xf_layers.0.attn.k_proj.weight.pt"));
    std::fs::copy(
        pieces.join("xf_layers.0.ln_1.weight.pt"),
        pieces.join("xf_layers.0.attn.q_proj.weight.pt"),
    )
    .unwrap();
    std::fs::copy(
        pieces.join("pos_embed.weight.pt"),
        pieces.join("tok_embed.weight.pt"),
    )
    .unwrap();

    let ctx = open(d.path()).unwrap();
    expect_err(
        get(ctx, MC_WEIGHT_MLP_TO_HIDDEN, 0, MC_DIM_NONE, None),
        MC_ERR_NOT_FOUND,
        &["xf_layers.0.mlp.in_layer.weight"],
    );
    let (s, msg) = get(ctx, MC_WEIGHT_MLP_TO_RESIDUAL, 0, MC_DIM_NONE, None)
        .err()
        .unwrap();
    assert!(s == MC_ERR_FORMAT, "truncated: {s} {msg}");
    assert!(msg.contains("xf_layers.0.mlp.out_layer.weight"), "{msg}");
    expect_err(
        get(ctx, MC_WEIGHT_ATTN_TO_VALUE, 0, MC_DIM_NONE, None),
        MC_ERR_FORMAT,
        &["v_proj"],
    );
    expect_err(
        get(ctx, MC_WEIGHT_ATTN_TO_KEY, 0, MC_DIM_NONE, None),
        MC_ERR_FORBIDDEN,
        &["os.system"],
    );
    expect_err(
        get(ctx, MC_WEIGHT_ATTN_TO_QUERY, 0, MC_DIM_NONE, None),
        MC_ERR_FORMAT,
        &[
            "q_proj",
            "has shape [32]",
            "claims [32, 32]",
            "`d_model * m_attn` = 32",
        ],
    );
    // A shape that disagrees with the config is a false claim: the message names the key of
    // the axis that differs (the vocabulary comes from `enc`), not the one that agrees.
    let (s, msg) = get(ctx, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE, MC_DIM_NONE, None)
        .err()
        .unwrap();
    assert_eq!(s, MC_ERR_FORMAT, "{msg}");
    for part in [
        "has shape [16, 32]",
        "claims [50257, 32]",
        "(`enc` = 50257)",
    ] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
    assert_usable(ctx);
    unsafe { mc_free(ctx) };
}

#[test]
fn names_round_trip_and_constants_follow_the_core_enums() {
    use model_context::{Dimension, WeightLocation};
    for &loc in WeightLocation::ALL {
        let name = unsafe { CStr::from_ptr(mc_weight_location_name(loc as i32)) }
            .to_str()
            .unwrap();
        assert_eq!(name, loc.name());
        let mut out = -9;
        assert_eq!(
            unsafe { mc_weight_location_from_name(c(name).as_ptr(), &mut out) },
            MC_OK
        );
        assert_eq!(out, loc as i32);
    }
    for &d in Dimension::ALL {
        let name = unsafe { CStr::from_ptr(mc_dimension_name(d as i32)) }
            .to_str()
            .unwrap();
        assert_eq!(name, d.name());
    }
    assert_eq!(WeightLocation::ALL.len() as i32, MC_WEIGHT_COUNT);
    assert_eq!(Dimension::ALL.len() as i32, MC_DIM_COUNT);
    assert_eq!(
        WeightLocation::AttnToResidual as i32,
        MC_WEIGHT_ATTN_TO_RESIDUAL
    );
    assert_eq!(
        WeightLocation::LayerNormGainPreMlp as i32,
        MC_WEIGHT_LAYER_NORM_GAIN_PRE_MLP
    );
    assert_eq!(
        Dimension::AutoencoderLatents as i32,
        MC_DIM_AUTOENCODER_LATENTS
    );
    assert!(mc_weight_location_name(MC_WEIGHT_COUNT).is_null());
    let mut out = 5;
    assert_eq!(
        unsafe { mc_weight_location_from_name(c("attn.to_nothing").as_ptr(), &mut out) },
        MC_ERR_NOT_FOUND
    );
    assert_eq!(out, 5);
    assert_eq!(
        unsafe { CStr::from_ptr(mc_status_name(MC_ERR_SHAPE)) }
            .to_str()
            .unwrap(),
        "MC_ERR_SHAPE"
    );
    assert_eq!(
        unsafe { CStr::from_ptr(mc_status_name(99)) }
            .to_str()
            .unwrap(),
        "MC_ERR_UNKNOWN"
    );
}

#[test]
fn version_agrees_with_cargo_toml() {
    let v = unsafe { CStr::from_ptr(mc_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        format!("{MC_VERSION_MAJOR}.{MC_VERSION_MINOR}.{MC_VERSION_PATCH}"),
        v
    );
}

#[test]
fn tensors_outlive_the_context_and_carry_dlpack_metadata() {
    let ctx = open(&basic()).unwrap();
    let q = get(ctx, MC_WEIGHT_ATTN_TO_QUERY, 0, MC_DIM_NONE, None).unwrap();
    let n = get(
        ctx,
        MC_WEIGHT_ATTN_TO_QUERY,
        0,
        MC_DIM_RESIDUAL_STREAM_CHANNELS,
        None,
    )
    .unwrap();
    let mut json: *mut c_char = null_mut();
    assert_eq!(unsafe { mc_config_json(ctx, &mut json) }, MC_OK);
    let cfg: serde_json::Value =
        serde_json::from_str(unsafe { CStr::from_ptr(json) }.to_str().unwrap()).unwrap();
    assert_eq!(cfg["d_model"], 32);
    assert_eq!(cfg.as_object().unwrap().len(), 7);
    unsafe { mc_string_free(json) };
    unsafe { mc_free(ctx) };
    unsafe {
        let t = &(*q).dl_tensor;
        assert_eq!(((*q).version.major, (*q).flags & 1), (1, 1));
        assert_eq!(
            (
                t.ndim,
                t.device.device_type,
                t.dtype.code,
                t.dtype.bits,
                t.dtype.lanes
            ),
            (3, 1, 2, 32, 1)
        );
        let shape = std::slice::from_raw_parts(t.shape, 3);
        let strides = std::slice::from_raw_parts(t.strides, 3);
        assert_eq!(shape, [4, 32, 8]);
        assert_eq!(strides, [256, 1, 32]);
        assert_eq!(t.byte_offset, 0);
        // Readable after mc_free: sum the elements through the strides.
        let p = t.data as *const f32;
        let mut s = 0f64;
        for h in 0..4 {
            for r in 0..32 {
                for k in 0..8 {
                    s += *p.offset(h * 256 + r + k * 32) as f64;
                }
            }
        }
        assert!(s.is_finite() && s != 0.0);
        assert_eq!((*n).flags & 1, 0, "a normalised result is fresh memory");
    }
    free_tensor(q);
    free_tensor(n);
}

#[test]
fn listing_shapes_and_weight_requests() {
    let ctx = open(&basic()).unwrap();
    let mut json: *mut c_char = null_mut();
    assert_eq!(unsafe { mc_describe_json(ctx, &mut json) }, MC_OK);
    let d: serde_json::Value =
        serde_json::from_str(unsafe { CStr::from_ptr(json) }.to_str().unwrap()).unwrap();
    unsafe { mc_string_free(json) };
    assert_eq!(
        d["weights"].as_array().unwrap().len() as i32,
        MC_WEIGHT_COUNT
    );
    assert_eq!(
        d["weights"][MC_WEIGHT_ATTN_QUERY_BIAS as usize]["shape"],
        serde_json::json!([4, 8])
    );
    assert_eq!(d["dimensions"][MC_DIM_VOCAB_SIZE as usize]["size"], 50257);
    assert!(d["dimensions"][MC_DIM_SEQUENCE_TOKENS as usize]["size"].is_null());
    assert_eq!(d["activations"].as_array().unwrap().len(), 20);

    let mut ndim = 0usize;
    assert_eq!(
        unsafe {
            mc_weight_shape(
                ctx,
                MC_WEIGHT_ATTN_TO_VALUE,
                MC_LAYER_ALL,
                null_mut(),
                0,
                &mut ndim,
            )
        },
        MC_OK
    );
    assert_eq!(ndim, 4);
    let mut shape = [0i64; 4];
    assert_eq!(
        unsafe {
            mc_weight_shape(
                ctx,
                MC_WEIGHT_ATTN_TO_VALUE,
                MC_LAYER_ALL,
                shape.as_mut_ptr(),
                2,
                &mut ndim,
            )
        },
        MC_ERR_BUFFER_TOO_SMALL
    );
    assert_eq!(shape, [0; 4]);
    assert_eq!(
        unsafe {
            mc_weight_shape(
                ctx,
                MC_WEIGHT_ATTN_TO_VALUE,
                MC_LAYER_ALL,
                shape.as_mut_ptr(),
                4,
                &mut ndim,
            )
        },
        MC_OK
    );
    assert_eq!(shape, [2, 4, 32, 8]);

    let mut req = common::init(mc_weight_request_init);
    req.location = MC_WEIGHT_MLP_HIDDEN_BIAS;
    req.layer = MC_LAYER_ALL;
    req.dtype = model_context::ffi::MC_DTYPE_BFLOAT16;
    let mut t: *mut DLManagedTensorVersioned = null_mut();
    assert_eq!(unsafe { mc_get_weight_ex(ctx, &req, &mut t) }, MC_OK);
    unsafe {
        let dl = &(*t).dl_tensor;
        assert_eq!((dl.ndim, dl.dtype.code, dl.dtype.bits), (2, 4, 16));
        assert_eq!(std::slice::from_raw_parts(dl.shape, 2), [2, 128]);
    }
    free_tensor(t);
    req.dtype = 7;
    assert_eq!(
        unsafe { mc_get_weight_ex(ctx, &req, &mut t) },
        MC_ERR_INVALID_ARGUMENT
    );
    req.dtype = -1;
    req.location = MC_WEIGHT_EMBEDDING;
    assert_eq!(
        unsafe { mc_get_weight_ex(ctx, &req, &mut t) },
        MC_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("model-wide"));
    unsafe { mc_free(ctx) };
}
