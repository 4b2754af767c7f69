//! Beyond the seed: bias locations, stacks over layers, dtype conversion, listing, and the
//! weight processing of docs/weight-processing.md (golden from scripts/gen_processing_golden.py).
mod common;
use model_context::context::processing::Processing;
use model_context::context::{Layers, WeightRequest};
use model_context::model::ForwardInput;
use model_context::{
    Device, Dimension, ModelContext, OpenOptions, StandardModelContext, WeightLocation,
};
use serde_json::Value;
use std::path::Path;
use tch::Kind;

fn open(dir: &Path, processing: Processing) -> StandardModelContext {
    let opts = OpenOptions {
        device: Some(Device::Cpu),
        processing,
        ..Default::default()
    };
    StandardModelContext::open(dir.to_str().unwrap(), &opts).unwrap()
}

fn steps(names: &Value) -> Processing {
    let has = |s: &str| names.as_array().unwrap().iter().any(|n| n == s);
    Processing {
        fold_ln: has("fold_ln"),
        center_writing_weights: has("center_writing_weights"),
        center_unembed: has("center_unembed"),
        fold_value_biases: has("fold_value_biases"),
    }
}

fn layers_of(ctx: &dyn ModelContext, loc: WeightLocation) -> Vec<Option<i64>> {
    match loc.spec().per_layer() {
        true => (0..ctx.n_layers().unwrap()).map(Some).collect(),
        false => vec![None],
    }
}

fn logits(ctx: &StandardModelContext) -> tch::Tensor {
    let input = ForwardInput {
        tokens: vec![464, 2068, 7586, 21831, 11, 50256, 13, 0],
        batch: 2,
        seq_len: 4,
        pad: Some(vec![false, false, false, false, false, false, true, true]),
    };
    ctx.get_or_create_model(None)
        .unwrap()
        .forward(&input, &[])
        .unwrap()
        .logits
        .unwrap()
        .tensor
}

fn max_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn processed_weights_match_python_and_keep_the_logits() {
    let dir = common::data_dir(
        "MC_PROCESSING_GOLDEN_DIR",
        "data/processing_golden",
        "scripts/gen_processing_golden.py",
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut compared = 0;
    for ckpt in manifest["checkpoints"].as_array().unwrap() {
        let original = dir.join(ckpt["original"].as_str().unwrap());
        let plain = open(&original, Processing::default());
        let base_logits = logits(&plain);
        for (name, variant) in ckpt["variants"].as_object().unwrap() {
            let p = steps(&variant["steps"]);
            let processed = open(&original, p);
            let expected = open(
                &dir.join(variant["root"].as_str().unwrap()),
                Processing::default(),
            );
            for &loc in WeightLocation::ALL {
                for layer in layers_of(&processed, loc) {
                    let a = processed.get_weight(loc, layer, None, None).unwrap().tensor;
                    let b = expected.get_weight(loc, layer, None, None).unwrap().tensor;
                    let d = max_diff(&a, &b);
                    assert!(d < 1e-5, "{name} {} {layer:?}: {d}", loc.name());
                    compared += 1;
                }
            }
            let got = logits(&processed);
            let d = if p.center_unembed {
                max_diff(
                    &got.log_softmax(-1, Kind::Float),
                    &base_logits.log_softmax(-1, Kind::Float),
                )
            } else {
                max_diff(&got, &base_logits)
            };
            assert!(d < 1e-4, "{} {name}: logits moved by {d}", ckpt["name"]);
        }
    }
    assert!(compared > 300, "{compared}");
}

#[test]
fn processing_invariants_hold_on_the_weights() {
    let dir = common::data_dir(
        "MC_PROCESSING_GOLDEN_DIR",
        "data/processing_golden",
        "scripts/gen_processing_golden.py",
    );
    let ctx = open(
        &dir.join("basic/original"),
        Processing {
            fold_ln: true,
            center_writing_weights: true,
            center_unembed: true,
            fold_value_biases: true,
        },
    );
    let w = |loc, layer| ctx.get_weight(loc, layer, None, None).unwrap().tensor;
    assert!(
        w(WeightLocation::LayerNormGainPreAttn, Some(1))
            .eq(1.0)
            .all()
            .int64_value(&[])
            == 1
    );
    assert!(
        w(WeightLocation::LayerNormBiasPreMlp, Some(0))
            .eq(0.0)
            .all()
            .int64_value(&[])
            == 1
    );
    assert!(
        w(WeightLocation::AttnValueBias, Some(1))
            .eq(0.0)
            .all()
            .int64_value(&[])
            == 1
    );
    // Writing weights have zero mean over d_model; the unembedding zero mean over the vocabulary.
    let zero_mean = |t: tch::Tensor, axis: i64| {
        t.mean_dim([axis].as_slice(), false, Kind::Float)
            .abs()
            .max()
            .double_value(&[])
            < 1e-6
    };
    assert!(zero_mean(w(WeightLocation::Embedding, None), 1));
    assert!(zero_mean(w(WeightLocation::AttnToResidual, Some(0)), 2));
    assert!(zero_mean(w(WeightLocation::MlpToResidual, Some(1)), 1));
    assert!(zero_mean(w(WeightLocation::Unembedding, None), 1));
}

#[test]
fn stacks_equal_per_layer_results_and_dtype_conversion_converts_only_the_result() {
    let dir = common::data_dir(
        "MC_CONTEXT_GOLDEN_DIR",
        "data/context_golden",
        "scripts/gen_context_golden.py",
    );
    let ctx = open(&dir.join("m_attn_heads3"), Processing::default());
    let n = ctx.n_layers().unwrap();
    for &loc in WeightLocation::ALL.iter().filter(|l| l.spec().per_layer()) {
        for nd in [None, Some(loc.spec().shape[0])] {
            let req = |layer, dtype| WeightRequest {
                location: loc,
                layer,
                normalize_dim: nd,
                device: None,
                dtype,
            };
            let stacked = ctx.weight(&req(Layers::All, None)).unwrap();
            assert_eq!(stacked.shape(), ctx.weight_shape(loc, Layers::All).unwrap());
            assert_eq!(stacked.shape()[0], n);
            for l in 0..n {
                let one = ctx.weight(&req(Layers::One(l), None)).unwrap();
                assert!(
                    stacked.tensor.get(l).equal(&one.tensor),
                    "{} layer {l}",
                    loc.name()
                );
            }
            for kind in [Kind::Half, Kind::BFloat16] {
                let conv = ctx.weight(&req(Layers::All, Some(kind))).unwrap();
                assert_eq!(conv.tensor.kind(), kind);
                assert!(
                    conv.tensor.equal(&stacked.tensor.to_kind(kind)),
                    "{} {kind:?}",
                    loc.name()
                );
            }
        }
    }
    let e = ctx.weight(&WeightRequest {
        location: WeightLocation::Embedding,
        layer: Layers::All,
        normalize_dim: None,
        device: None,
        dtype: None,
    });
    assert!(e.err().unwrap().message.contains("model-wide"));
    let f32 = ctx
        .weight(&WeightRequest {
            location: WeightLocation::AttnQueryBias,
            layer: Layers::One(0),
            normalize_dim: None,
            device: None,
            dtype: Some(Kind::Float),
        })
        .unwrap();
    assert!(
        f32.read_only,
        "no conversion needed: still the mapped piece"
    );
    assert_eq!(f32.shape(), vec![3, 4]);
    assert_eq!(
        ctx.weight_shape(WeightLocation::MlpHiddenBias, Layers::One(0))
            .unwrap(),
        vec![60]
    );
    assert_eq!(ctx.get_dim_size(Dimension::QueryAndKeyChannels).unwrap(), 4);
}
