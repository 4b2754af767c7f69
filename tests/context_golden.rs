//! Every (location, layer, normalize_dim) of several random checkpoints against Python
//! torch computing the seed's get_weight (scripts/gen_context_golden.py).
mod common;
use model_context::{
    Device, Dimension, ModelContext, OpenOptions, StandardModelContext, WeightLocation,
};
use serde_json::Value;

fn open(dir: &std::path::Path) -> StandardModelContext {
    let opts = OpenOptions {
        device: Some(Device::Cpu),
        ..Default::default()
    };
    StandardModelContext::open(dir.to_str().unwrap(), &opts).unwrap()
}

fn as_f64(bytes: &[u8], dtype: &str) -> Vec<f64> {
    let kind = match dtype {
        "float32" => tch::Kind::Float,
        "float16" => tch::Kind::Half,
        other => panic!("unexpected dtype {other}"),
    };
    let n = bytes.len() / kind.elt_size_in_bytes();
    let t = tch::Tensor::f_from_data_size(bytes, &[n as i64], kind).unwrap();
    Vec::<f64>::try_from(t.to_kind(tch::Kind::Double)).unwrap()
}

#[test]
fn every_weight_matches_the_seed() {
    let dir = common::data_dir(
        "MC_CONTEXT_GOLDEN_DIR",
        "data/context_golden",
        "scripts/gen_context_golden.py",
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut checked = 0;
    for ckpt in manifest["checkpoints"].as_array().unwrap() {
        let ctx = open(&dir.join(ckpt["root"].as_str().unwrap()));
        for (name, size) in ckpt["dims"].as_object().unwrap() {
            let dim = Dimension::from_name(name).unwrap();
            assert_eq!(
                ctx.get_dim_size(dim).unwrap(),
                size.as_i64().unwrap(),
                "{name}"
            );
        }
        assert_eq!(&ctx.config_json().unwrap(), &ckpt["config"]);
        for case in ckpt["cases"].as_array().unwrap() {
            let loc = WeightLocation::from_name(case["location"].as_str().unwrap()).unwrap();
            let layer = case["layer"].as_i64();
            let nd = case["normalize_dim"]
                .as_str()
                .map(|n| Dimension::from_name(n).unwrap());
            let what = format!("{} {case}", ckpt["name"]);
            let w = ctx.get_weight(loc, layer, nd, None).unwrap();
            let shape: Vec<i64> = serde_json::from_value(case["shape"].clone()).unwrap();
            assert_eq!(w.shape(), shape, "{what}");
            let expected = std::fs::read(dir.join(case["file"].as_str().unwrap())).unwrap();
            let got = common::tensor_bytes(&w.tensor);
            if nd.is_none() {
                let stride: Vec<i64> = serde_json::from_value(case["stride"].clone()).unwrap();
                assert_eq!(
                    w.tensor.stride(),
                    stride,
                    "views keep the seed's strides: {what}"
                );
                assert!(w.read_only, "{what}");
                assert!(got == expected, "bit-exact: {what}");
            } else {
                let dtype = case["dtype"].as_str().unwrap();
                let tol = if dtype == "float16" { 1e-3 } else { 1e-6 };
                for (a, b) in as_f64(&got, dtype).iter().zip(as_f64(&expected, dtype)) {
                    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs {b}");
                }
            }
            checked += 1;
        }
        let helper = ctx.get_unembedding_with_ln_gain(None).unwrap();
        let expected =
            std::fs::read(dir.join(ckpt["unembedding_with_ln_gain"]["file"].as_str().unwrap()))
                .unwrap();
        assert!(
            common::tensor_bytes(&helper.tensor) == expected,
            "unembedding_with_ln_gain {}",
            ckpt["name"]
        );
    }
    assert!(checked > 200, "only {checked} cases");
}

#[test]
fn unnormalised_weights_are_views_of_the_mapped_piece() {
    let dir = common::data_dir(
        "MC_CONTEXT_GOLDEN_DIR",
        "data/context_golden",
        "scripts/gen_context_golden.py",
    );
    let ctx = open(&dir.join("basic"));
    let a = ctx
        .get_weight(WeightLocation::AttnToQuery, Some(0), None, None)
        .unwrap();
    let b = ctx
        .get_weight(WeightLocation::AttnToQuery, Some(0), None, None)
        .unwrap();
    assert_eq!(
        a.tensor.data_ptr(),
        b.tensor.data_ptr(),
        "piece is cached and not copied"
    );
    let e = ctx
        .get_weight(WeightLocation::Embedding, None, None, None)
        .unwrap();
    assert_eq!(
        e.tensor.data_ptr(),
        ctx.get_embedding(None).unwrap().tensor.data_ptr()
    );
}
