//! Backward passes against torch.autograd on the Python reference (scripts/gen_grad_golden.py,
//! which first checks the reference itself by central finite differences): every objective,
//! gradients at every layer's mlp.post_act, attn.qk_probs, attn.v_out and resid.post_attn and
//! at a start residual, with edits, three seeded models, single rows and padded batches; CUDA
//! too where a GPU is visible (a SKIPPED line otherwise).
mod common;
use common::{devices, edits, load, max_diff, parse_key};
use model_context::model::objective::{Backward, Objective};
use model_context::model::{Experiment, ModelDType, ModelOptions, Start};
use model_context::{Device, ModelContext, OpenOptions, StandardModelContext};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tch::Tensor;

fn golden() -> (PathBuf, Value) {
    let dir = common::data_dir(
        "MC_GRAD_GOLDEN_DIR",
        "data/grad_golden",
        "scripts/gen_grad_golden.py",
    );
    let m = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    (dir, m)
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// The manifest's objective as the library's (positions absent: -1 for every row).
fn objective(dir: &Path, o: &Value, batch: usize) -> Objective {
    let positions = match o.get("positions") {
        Some(p) => ids(p),
        None => vec![-1; batch],
    };
    match o["kind"].as_str().unwrap() {
        "logit" => Objective::Logit {
            tokens: ids(&o["tokens"]),
            positions,
        },
        "logit_diff" => Objective::LogitDiff {
            tokens: ids(&o["tokens"]),
            others: ids(&o["others"]),
            positions,
        },
        "log_prob" => Objective::LogProb {
            targets: match o["default"].as_bool().unwrap() {
                true => None,
                false => Some(
                    o["targets"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(ids)
                        .collect(),
                ),
            },
        },
        "direction" => {
            let (location, layer) = parse_key(&format!(
                "{}.{}",
                o["location"].as_str().unwrap(),
                o["layer"]
            ));
            Objective::Direction {
                location,
                layer,
                positions,
                direction: load(dir, &o["direction"]),
            }
        }
        k => panic!("unknown objective {k}"),
    }
}

fn experiment(dir: &Path, case: &Value) -> Experiment {
    let batch = case["tokens"].as_array().unwrap().len();
    let start = case.get("start").map(|s| Start {
        layer: s["layer"].as_i64().unwrap(),
        resid: load(dir, &s["resid"]),
    });
    let at = case["grads"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| parse_key(k))
        .collect();
    Experiment {
        edits: edits(dir, case),
        start,
        backward: Some(Backward {
            objective: objective(dir, &case["objective"], batch),
            at,
        }),
        ..Default::default()
    }
}

fn cpu(t: &Tensor) -> Tensor {
    t.to_device(tch::Device::Cpu)
}

fn selected(model: &Value, case: &Value) -> bool {
    common::selected("MC_GRAD_GOLDEN_ONLY", model, case)
}

/// Largest |got - want| relative to the largest |want| (1 where want is all zeros).
fn relative(got: &Tensor, want: &Tensor) -> f64 {
    let scale = want.abs().max().double_value(&[]).max(1.0);
    max_diff(got, want, None) / scale
}

/// Every case: logits, objective values and gradients within `tol` of the reference
/// (relative to each tensor's largest entry when above 1). Returns the worst seen.
fn run_all(device: Device, dtype: ModelDType, tol: f64) -> f64 {
    let (dir, manifest) = golden();
    let (mut worst, mut checked, mut grads) = (0.0f64, 0, 0);
    for model in manifest["models"].as_array().unwrap() {
        if !model["cases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| selected(model, c))
        {
            continue;
        }
        let root = dir.join(model["root"].as_str().unwrap());
        let opts = OpenOptions {
            device: Some(device),
            ..Default::default()
        };
        let ctx = StandardModelContext::open(root.to_str().unwrap(), &opts).unwrap();
        let options = ModelOptions {
            dtype,
            ..Default::default()
        };
        let m = ctx.get_or_create_model(Some(options)).unwrap();
        for case in model["cases"].as_array().unwrap() {
            if !selected(model, case) {
                continue;
            }
            let what = format!("{} {} {}", model["name"], case["input"], case["name"]);
            let x = experiment(&dir, case);
            let out = m.forward_with(&common::case_input(case), &[], &x).unwrap();
            let mut check = |name: &str, got: &Tensor, want: &Tensor| {
                let d = relative(&cpu(got), want);
                assert!(
                    d <= tol,
                    "{what}: {name} differs by {d:.2e} (tolerance {tol})"
                );
                worst = worst.max(d);
            };
            let logits = &out.logits.as_ref().unwrap().tensor;
            check("logits", logits, &load(&dir, &case["logits"]));
            let value: Vec<f32> = case["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let got = &out.objective.as_ref().unwrap().tensor;
            check("objective", got, &Tensor::from_slice(&value));
            for (key, entry) in case["grads"].as_object().unwrap() {
                let g = out.grad(parse_key(key)).unwrap();
                check(&format!("gradient at {key}"), &g.tensor, &load(&dir, entry));
                grads += 1;
            }
            checked += 1;
        }
    }
    let least = match std::env::var_os("MC_GRAD_GOLDEN_ONLY") {
        Some(_) => (8, 60),
        None => (48, 350),
    };
    assert!(
        checked >= least.0 && grads >= least.1,
        "only {checked} cases, {grads} gradients"
    );
    worst
}

#[test]
fn gradients_match_torch_autograd_on_the_reference_in_float32() {
    for device in devices() {
        let worst = run_all(device, ModelDType::Float32, 1e-4);
        eprintln!("float32 on {device:?}: worst difference {worst:.2e}");
    }
}

/// bfloat16 keeps 8 bits of mantissa: within 0.05 (worst seen 2.2e-2) of the float32 reference relative to each
/// tensor's largest entry; float32 is the precise check, this proves the path runs.
#[test]
fn gradients_match_the_reference_in_bfloat16() {
    let worst = run_all(Device::Cpu, ModelDType::BFloat16, 0.05);
    eprintln!("bfloat16 on CPU: worst relative difference {worst:.2e}");
}

/// float16 keeps 11 bits: within 0.01 relative (worst seen 4.3e-3; on the CPU, where libtorch has the kernels).
#[test]
fn gradients_match_the_reference_in_float16() {
    let worst = run_all(Device::Cpu, ModelDType::Float16, 0.01);
    eprintln!("float16 on CPU: worst relative difference {worst:.2e}");
}
