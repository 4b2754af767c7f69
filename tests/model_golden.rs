//! The forward pass against Hugging Face's GPT-2 and a Python reference written from the spec
//! (scripts/gen_model_golden.py, scripts/ref_model.py), padding, simplify and the seed's own
//! weight test.
mod common;
use common::{load, max_diff, parse_key};
use model_context::model::{ActivationKey, ForwardInput, ModelOptions};
use model_context::schema::activations::Activation;
use model_context::{Device, ModelContext, OpenOptions, StandardModelContext, WeightLocation};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tch::Tensor;

fn golden() -> (PathBuf, Value) {
    let dir = common::data_dir(
        "MC_MODEL_GOLDEN_DIR",
        "data/model_golden",
        "scripts/gen_model_golden.py",
    );
    let m = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    (dir, m)
}

fn open(dir: &Path) -> StandardModelContext {
    let opts = OpenOptions {
        device: Some(Device::Cpu),
        ..Default::default()
    };
    StandardModelContext::open(dir.to_str().unwrap(), &opts).unwrap()
}

/// `[B, T, 1...]` true at non-padding positions, ready to broadcast against `like`.
fn real_positions(inp: &ForwardInput, like: &Tensor) -> Option<Tensor> {
    let pad = inp.pad.as_ref()?;
    let mut m = Tensor::from_slice(pad)
        .view([inp.batch, inp.seq_len])
        .logical_not();
    while m.dim() < like.dim() {
        m = m.unsqueeze(-1);
    }
    Some(m)
}

#[test]
fn activations_match_the_python_reference_and_hugging_face() {
    let (dir, manifest) = golden();
    let mut compared = 0;
    for model in manifest["models"].as_array().unwrap() {
        for case in model["cases"].as_array().unwrap() {
            let ctx = open(&dir.join(model["root"].as_str().unwrap()));
            let simplify = case["simplify"].as_bool().unwrap();
            let m = ctx
                .get_or_create_model(Some(ModelOptions {
                    simplify,
                    ..Default::default()
                }))
                .unwrap();
            let refs = case["ref"].as_object().unwrap();
            let wanted: Vec<ActivationKey> = refs.keys().map(|k| parse_key(k)).collect();
            let inp = common::case_input(case);
            let out = m.forward(&inp, &wanted).unwrap();
            // Without the attention pattern among the captures the pass takes the fused
            // attention kernel: it must match the same references.
            let unfused = |k: &ActivationKey| {
                matches!(k.0, Activation::AttnQkLogits | Activation::AttnQkProbs)
            };
            let fused_wanted: Vec<ActivationKey> =
                wanted.iter().copied().filter(|k| !unfused(k)).collect();
            assert!(fused_wanted.len() < wanted.len(), "no attention captured");
            let fused = m.forward(&inp, &fused_wanted).unwrap();
            for (key, entry) in refs {
                let k = parse_key(key);
                let expected = load(&dir, entry);
                for (path, run) in [("explicit", &out), ("fused", &fused)] {
                    let Some(got) = run.get(k) else {
                        assert!(unfused(&k) && path == "fused", "{key} missing");
                        continue;
                    };
                    let d = max_diff(&got.tensor, &expected, None);
                    assert!(
                        d < 1e-4,
                        "{} {} {key} ({path} attention): max diff {d}",
                        model["name"],
                        case["name"]
                    );
                    compared += 1;
                }
            }
            let Some(hf) = case["hf"].as_object() else {
                continue;
            };
            for (path, run) in [("explicit", &out), ("fused", &fused)] {
                let logits = &run.logits.as_ref().unwrap().tensor;
                let keep = real_positions(&inp, logits);
                let d = max_diff(logits, &load(&dir, &hf["logits"]), keep.as_ref());
                assert!(
                    d < 1e-4,
                    "{} {} HF logits ({path} attention): {d}",
                    model["name"],
                    case["name"]
                );
            }
            let n_layers = model["config"]["n_layers"].as_i64().unwrap();
            for (i, hs) in hf["hidden_states"].as_array().unwrap().iter().enumerate() {
                let i = i as i64;
                let key = match i {
                    0 => (Activation::ResidPostEmb, None),
                    i if i == n_layers => (Activation::ResidPostLnF, None),
                    i => (Activation::ResidPostMlp, Some(i - 1)),
                };
                let got = &out.get(key).unwrap().tensor;
                let keep = real_positions(&inp, got);
                let d = max_diff(got, &load(&dir, hs), keep.as_ref());
                assert!(
                    d < 1e-4,
                    "{} {} hidden_states[{i}]: {d}",
                    model["name"],
                    case["name"]
                );
            }
            for (l, att) in hf["attentions"].as_array().unwrap().iter().enumerate() {
                let got = &out
                    .get((Activation::AttnQkProbs, Some(l as i64)))
                    .unwrap()
                    .tensor;
                let theirs = load(&dir, att).permute([0, 2, 3, 1]);
                let keep = real_positions(&inp, got);
                let d = max_diff(got, &theirs, keep.as_ref());
                assert!(
                    d < 1e-5,
                    "{} {} attentions[{l}]: {d}",
                    model["name"],
                    case["name"]
                );
            }
            compared += 1;
        }
    }
    assert!(compared > 100, "only {compared} comparisons");
}

#[test]
fn each_padded_sequence_matches_itself_alone() {
    let (dir, manifest) = golden();
    for model in manifest["models"].as_array().unwrap() {
        let ctx = open(&dir.join(model["root"].as_str().unwrap()));
        let m = ctx.get_or_create_model(None).unwrap();
        for case in model["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| !c["pad"].is_null())
        {
            let inp = common::case_input(case);
            let batch = m.forward(&inp, &[]).unwrap().logits.unwrap().tensor;
            let pad = inp.pad.clone().unwrap();
            for row in 0..inp.batch as usize {
                let t = inp.seq_len as usize;
                let len = pad[row * t..(row + 1) * t].iter().filter(|p| !**p).count();
                let alone = ForwardInput {
                    tokens: inp.tokens[row * t..row * t + len].to_vec(),
                    batch: 1,
                    seq_len: len as i64,
                    pad: None,
                };
                let single = m.forward(&alone, &[]).unwrap().logits.unwrap().tensor;
                let mine = batch.narrow(0, row as i64, 1).narrow(1, 0, len as i64);
                let d = max_diff(&mine, &single, None);
                assert!(d < 1e-5, "{} row {row}: {d}", model["name"]);
            }
        }
    }
}

#[test]
fn weights_are_the_same_before_and_after_creating_the_model_and_simplify_folds() {
    let (dir, manifest) = golden();
    let model = &manifest["models"][1];
    let root = dir.join(model["root"].as_str().unwrap());
    let before = open(&root);
    let after = open(&root);
    after.get_or_create_model(None).unwrap();
    let n_layers = before.n_layers().unwrap();
    for &loc in WeightLocation::ALL {
        let layers: Vec<Option<i64>> = if loc.spec().per_layer() {
            (0..n_layers).map(Some).collect()
        } else {
            vec![None]
        };
        for layer in layers {
            let a = before.get_weight(loc, layer, None, None).unwrap();
            let b = after.get_weight(loc, layer, None, None).unwrap();
            assert!(a.tensor.equal(&b.tensor), "{} {layer:?}", loc.name());
        }
    }
    let simple = open(&root);
    let sm = simple
        .get_or_create_model(Some(ModelOptions {
            simplify: true,
            ..Default::default()
        }))
        .unwrap();
    for layer in 0..n_layers {
        for loc in [
            WeightLocation::LayerNormGainPreAttn,
            WeightLocation::LayerNormGainPreMlp,
        ] {
            let g = simple.get_weight(loc, Some(layer), None, None).unwrap();
            assert!(
                g.tensor.eq(1.0).all().int64_value(&[]) == 1,
                "{} layer {layer} not folded",
                loc.name()
            );
        }
        let q0 = before
            .get_weight(WeightLocation::AttnToQuery, Some(layer), None, None)
            .unwrap();
        let q1 = simple
            .get_weight(WeightLocation::AttnToQuery, Some(layer), None, None)
            .unwrap();
        assert!(
            !q0.tensor.equal(&q1.tensor),
            "simplify changes the query weights"
        );
    }
    let inp = common::case_input(&model["cases"][0]);
    let plain = after
        .get_or_create_model(None)
        .unwrap()
        .forward(&inp, &[])
        .unwrap();
    let folded = sm.forward(&inp, &[]).unwrap();
    let d = max_diff(
        &plain.logits.unwrap().tensor,
        &folded.logits.unwrap().tensor,
        None,
    );
    assert!(d < 1e-4, "simplified logits differ by {d}");
    let e = simple.get_or_create_model(None).map(|_| ());
    assert!(e.is_ok(), "no options: returns the existing model");
    let e = simple
        .get_or_create_model(Some(ModelOptions::default()))
        .err()
        .unwrap();
    assert!(e.message.contains("already created"), "{}", e.message);
}

#[test]
fn bad_forward_inputs_are_clear_errors() {
    let (dir, manifest) = golden();
    let model = &manifest["models"][0];
    let ctx = open(&dir.join(model["root"].as_str().unwrap()));
    let m = ctx.get_or_create_model(None).unwrap();
    let ctx_window = model["config"]["ctx_window"].as_i64().unwrap();
    let ok = ForwardInput {
        tokens: vec![1, 2, 3],
        batch: 1,
        seq_len: 3,
        pad: None,
    };
    let cases: Vec<(ForwardInput, Vec<ActivationKey>, &str)> = vec![
        (
            ForwardInput {
                tokens: vec![1, 50257, 3],
                ..ok.clone()
            },
            vec![],
            "token id 50257",
        ),
        (
            ForwardInput {
                tokens: vec![1, -4, 3],
                ..ok.clone()
            },
            vec![],
            "token id -4",
        ),
        (
            ForwardInput {
                tokens: vec![0; ctx_window as usize + 1],
                seq_len: ctx_window + 1,
                ..ok.clone()
            },
            vec![],
            "exceeds ctx_window",
        ),
        (
            ForwardInput {
                tokens: vec![],
                batch: 0,
                seq_len: 3,
                pad: None,
            },
            vec![],
            "empty batch",
        ),
        (
            ForwardInput {
                pad: Some(vec![false, true]),
                ..ok.clone()
            },
            vec![],
            "pad mask has 2 entries",
        ),
        (
            ForwardInput {
                pad: Some(vec![true, false, false]),
                ..ok.clone()
            },
            vec![],
            "not right-padded",
        ),
        (
            ok.clone(),
            vec![(Activation::MlpPostAct, Some(9))],
            "layer 9 out of range",
        ),
        (
            ok.clone(),
            vec![(Activation::MlpPostAct, None)],
            "per-layer",
        ),
        (
            ok.clone(),
            vec![(Activation::Logits, Some(0))],
            "model-wide",
        ),
    ];
    for (inp, wanted, needle) in cases {
        let e = m
            .forward(&inp, &wanted)
            .err()
            .unwrap_or_else(|| panic!("accepted: {needle}"));
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }
    assert!(
        m.forward(&ok, &[(Activation::MlpPostAct, Some(1))]).is_ok(),
        "still usable"
    );
}

#[test]
fn sampling_is_seeded_and_greedy_follows_the_logits() {
    use model_context::model::sampling::{sample, SampleOptions};
    let (dir, manifest) = golden();
    let ctx = open(&dir.join(manifest["models"][0]["root"].as_str().unwrap()));
    let m = ctx.get_or_create_model(None).unwrap();
    let prompt = vec![464, 2068, 7586];
    let greedy = sample(
        &m,
        &prompt,
        &SampleOptions {
            max_new_tokens: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let mut seq = prompt.clone();
    for &tok in &greedy {
        let inp = ForwardInput {
            tokens: seq.clone(),
            batch: 1,
            seq_len: seq.len() as i64,
            pad: None,
        };
        let logits = m.forward(&inp, &[]).unwrap().logits.unwrap().tensor;
        assert_eq!(
            logits
                .get(0)
                .get(seq.len() as i64 - 1)
                .argmax(None, false)
                .int64_value(&[]),
            tok
        );
        seq.push(tok);
    }
    let hot = |seed| SampleOptions {
        max_new_tokens: 12,
        temperature: 1.5,
        top_p: 0.95,
        seed,
        stop_token: None,
        top_k: 0,
    };
    let a = sample(&m, &prompt, &hot(1)).unwrap();
    assert_eq!(
        a,
        sample(&m, &prompt, &hot(1)).unwrap(),
        "same seed, same tokens"
    );
    assert_ne!(
        a,
        sample(&m, &prompt, &hot(2)).unwrap(),
        "another seed, other tokens"
    );
    // Past the context window: generation stops there, the last token predicted at its end.
    let window = m.config().ctx_window as usize;
    let long = sample(
        &m,
        &prompt,
        &SampleOptions {
            max_new_tokens: 40,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(prompt.len() + 40 > window + 1);
    assert_eq!(long.len(), window - prompt.len() + 1);
}

/// `skip_reorder` keeps a bfloat16 model's products on `linear` with no second copy of the
/// weight matrices: nothing reordered, and the same logits within bfloat16's rounding.
#[test]
fn skip_reorder_keeps_one_copy_and_the_logits() {
    use model_context::model::ModelDType;
    let (dir, manifest) = golden();
    let model = &manifest["models"][0];
    let root = dir.join(model["root"].as_str().unwrap());
    let inp = common::case_input(&model["cases"][0]);
    let run = |skip_reorder| {
        let opts = ModelOptions {
            dtype: ModelDType::BFloat16,
            skip_reorder,
            ..Default::default()
        };
        let m = open(&root).get_or_create_model(Some(opts)).unwrap();
        let l = m.forward(&inp, &[]).unwrap().logits.unwrap().tensor;
        (m.reordered_bytes(), l.to_kind(tch::Kind::Float))
    };
    let ((copied, reordered), (none, plain)) = (run(false), run(true));
    assert_eq!(none, 0, "skip_reorder still reordered {none} bytes");
    if copied == 0 {
        eprintln!("oneDNN took no bfloat16 matrix on this CPU: both ran linear");
    }
    let scale = plain.abs().max().double_value(&[]);
    let d = (&reordered - &plain).abs().max().double_value(&[]);
    assert!(
        d <= 2e-2 * scale,
        "reordered vs linear logits: {d} of {scale}"
    );
}

/// bfloat16 and float16 against float32 on every golden case (docs/performance.md quotes the
/// printed table): the logits stay within a few percent of their own scale, and the top-1
/// token agrees at nearly every real position.
#[test]
fn reduced_precision_logits_stay_close_to_float32() {
    use model_context::model::ModelDType;
    let (dir, manifest) = golden();
    let mut positions = 0;
    for dtype in [ModelDType::BFloat16, ModelDType::Float16] {
        let (mut worst, mut agree, mut total) = (0f64, 0i64, 0i64);
        for model in manifest["models"].as_array().unwrap() {
            let root = dir.join(model["root"].as_str().unwrap());
            let logits_in = |dtype| {
                let ctx = open(&root);
                let opts = ModelOptions {
                    dtype,
                    ..Default::default()
                };
                let m = ctx.get_or_create_model(Some(opts)).unwrap();
                let cases = model["cases"].as_array().unwrap();
                let run = |case: &Value| {
                    let inp = common::case_input(case);
                    let l = m.forward(&inp, &[]).unwrap().logits.unwrap().tensor;
                    (inp, l.to_kind(tch::Kind::Float))
                };
                cases.iter().map(run).collect::<Vec<_>>()
            };
            let full = logits_in(ModelDType::Float32);
            for ((inp, low), (_, f32)) in logits_in(dtype).iter().zip(&full) {
                let keep = real_positions(inp, f32);
                let scale = f32.abs().max().double_value(&[]);
                worst = worst.max(max_diff(low, f32, keep.as_ref()) / scale);
                let same = low.argmax(-1, false).eq_tensor(&f32.argmax(-1, false));
                let real = match &keep {
                    Some(k) => k.squeeze_dim(-1),
                    None => same.ones_like(),
                };
                agree += same
                    .logical_and(&real)
                    .sum(tch::Kind::Int64)
                    .int64_value(&[]);
                total += real.sum(tch::Kind::Int64).int64_value(&[]);
            }
        }
        let rate = agree as f64 / total as f64;
        eprintln!(
            "{dtype:?}: max |logit diff| / max |logit| {worst:.4}, top-1 agreement {agree}/{total} ({rate:.4})"
        );
        assert!(
            worst < 0.05,
            "{dtype:?}: logits differ by {worst} of their scale"
        );
        // Random models have near-tied logits, where any rounding may swap the top two.
        assert!(rate > 0.9, "{dtype:?}: top-1 agrees at {rate}");
        positions += total;
    }
    assert!(positions > 100, "only {positions} positions compared");
}
