//! Invariants of edits, start/stop and the logits choice that hold whatever the weights, each
//! of which a wrong implementation breaks; bad requests; concurrent passes with different
//! edits; and a property test of random edit lists against an element-by-element oracle.
mod common;
use common::padded as input;
use common::Rng;
use model_context::model::edits::{AxisSelection, Edit, EditOp};
use model_context::model::{Experiment, ForwardInput, ForwardOutput, LogitsChoice, Model, Start};
use model_context::schema::activations::Activation::{self, *};
use model_context::ErrorKind;
use std::sync::Arc;
use tch::{Kind, Tensor};

fn model() -> Arc<Model> {
    common::golden_model(
        "MC_EDIT_GOLDEN_DIR",
        "data/edit_golden",
        "scripts/gen_edit_golden.py",
        "e24_l3_h3",
    )
}

const CLEAN: &[i64] = &[464, 2068, 7586, 21831, 18045];
const CORRUPT: &[i64] = &[464, 3105, 7586, 21831, 18045];

fn edit(location: Activation, layer: Option<i64>, sel: Vec<AxisSelection>, op: EditOp) -> Edit {
    Edit {
        location,
        layer,
        selection: sel,
        op,
    }
}

fn run(
    m: &Model,
    inp: &ForwardInput,
    wanted: &[(Activation, Option<i64>)],
    x: Experiment,
) -> ForwardOutput {
    m.forward_with(inp, wanted, &x).unwrap()
}

fn logits(o: &ForwardOutput) -> Tensor {
    o.logits.as_ref().unwrap().tensor.shallow_clone()
}

fn same_bits(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && common::tensor_bytes(a) == common::tensor_bytes(b)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    common::max_diff(a, b, None)
}

#[test]
fn setting_an_activation_to_its_own_value_leaves_the_logits_bit_identical() {
    let m = model();
    let inp = input(&[CLEAN, &CORRUPT[..3]]);
    let keys = [
        (ResidPostMlp, Some(0)),
        (AttnQkProbs, Some(1)),
        (MlpPostAct, Some(2)),
    ];
    let plain = run(&m, &inp, &keys, Experiment::default());
    let edits = keys
        .iter()
        .map(|&(a, l)| {
            edit(
                a,
                l,
                vec![],
                EditOp::Replace(plain.get((a, l)).unwrap().tensor.copy()),
            )
        })
        .collect();
    let same = run(
        &m,
        &inp,
        &[],
        Experiment {
            edits,
            ..Default::default()
        },
    );
    assert!(same_bits(&logits(&plain), &logits(&same)));
    // A selection of a few elements set to what they hold, too.
    let post = plain.get((MlpPostAct, Some(2))).unwrap().tensor.copy();
    let sel = vec![
        AxisSelection::Indices(vec![1]),
        AxisSelection::All,
        AxisSelection::Indices(vec![5, 0]),
    ];
    let sub = post
        .index_select(0, &Tensor::from_slice(&[1i64]))
        .index_select(2, &Tensor::from_slice(&[5i64, 0]));
    let x = Experiment {
        edits: vec![edit(MlpPostAct, Some(2), sel, EditOp::Replace(sub))],
        ..Default::default()
    };
    // Like with like: capturing the pattern at layer 1 keeps that layer on the explicit path.
    let again = run(&m, &inp, &keys, x);
    assert!(same_bits(&logits(&plain), &logits(&again)));
}

#[test]
fn zero_ablating_every_head_leaves_only_the_output_bias() {
    let m = model();
    let inp = input(&[CLEAN]);
    let x = Experiment {
        edits: vec![edit(AttnVOut, Some(1), vec![], EditOp::Set(0.0))],
        ..Default::default()
    };
    let out = run(
        &m,
        &inp,
        &[(ResidDeltaAttn, Some(1)), (AttnVOut, Some(1))],
        x,
    );
    let delta = &out.get((ResidDeltaAttn, Some(1))).unwrap().tensor;
    let bias = &m.param("xf_layers.1.attn.out_proj.bias").unwrap().tensor;
    assert!(max_abs(delta, &bias.view([1, 1, -1]).expand_as(delta)) == 0.0);
    let captured = &out.get((AttnVOut, Some(1))).unwrap().tensor;
    assert_eq!(
        captured.abs().sum(Kind::Double).double_value(&[]),
        0.0,
        "capture is the edited value"
    );
}

#[test]
fn patching_a_middle_layer_from_the_clean_run_reproduces_the_clean_logits() {
    let m = model();
    let key = (ResidPostMlp, Some(1));
    let clean = run(&m, &input(&[CLEAN]), &[key], Experiment::default());
    let corrupt = run(&m, &input(&[CORRUPT]), &[], Experiment::default());
    assert!(
        max_abs(&logits(&clean), &logits(&corrupt)) > 0.1,
        "the prompts differ"
    );
    let x = Experiment {
        edits: vec![edit(
            key.0,
            key.1,
            vec![],
            EditOp::Replace(clean.get(key).unwrap().tensor.copy()),
        )],
        ..Default::default()
    };
    let patched = run(&m, &input(&[CORRUPT]), &[], x);
    assert!(same_bits(&logits(&clean), &logits(&patched)));
}

#[test]
fn starting_at_a_layer_from_the_previous_layer_output_reproduces_the_full_run() {
    let m = model();
    let inp = input(&[CLEAN, &CORRUPT[..2]]);
    let full = run(
        &m,
        &inp,
        &[(ResidPostMlp, Some(0)), (MlpPostAct, Some(2))],
        Experiment::default(),
    );
    let start = Start {
        layer: 1,
        resid: full.get((ResidPostMlp, Some(0))).unwrap().tensor.copy(),
    };
    let no_tokens = ForwardInput {
        tokens: vec![],
        ..inp.clone()
    };
    let resumed = run(
        &m,
        &no_tokens,
        &[(MlpPostAct, Some(2))],
        Experiment {
            start: Some(start),
            ..Default::default()
        },
    );
    assert!(max_abs(&logits(&full), &logits(&resumed)) < 1e-5);
    assert!(
        max_abs(
            &full.get((MlpPostAct, Some(2))).unwrap().tensor,
            &resumed.get((MlpPostAct, Some(2))).unwrap().tensor
        ) < 1e-5
    );
}

#[test]
fn stopping_after_the_last_layer_and_finishing_by_hand_gives_the_logits() {
    let m = model();
    let inp = input(&[CLEAN]);
    let full = run(&m, &inp, &[], Experiment::default());
    let x = Experiment {
        end_layer: Some(3),
        ..Default::default()
    };
    let stopped = run(&m, &inp, &[(ResidPostMlp, Some(2))], x);
    assert!(stopped.logits.is_none());
    let h = &stopped.get((ResidPostMlp, Some(2))).unwrap().tensor;
    let centered = h - h.mean_dim([-1i64].as_slice(), true, Kind::Float);
    let scale = (centered
        .square()
        .mean_dim([-1i64].as_slice(), true, Kind::Float)
        + 1e-5)
        .sqrt();
    let g = &m.param("final_ln.weight").unwrap().tensor;
    let b = &m.param("final_ln.bias").unwrap().tensor;
    let by_hand =
        (centered / scale * g + b).matmul(&m.param("unembed.weight").unwrap().tensor.tr());
    assert!(max_abs(&by_hand, &logits(&full)) < 1e-4);
}

#[test]
fn the_logits_choice_computes_the_last_position_or_nothing() {
    let m = model();
    let inp = input(&[CLEAN, &CORRUPT[..3]]);
    let all = logits(&run(&m, &inp, &[], Experiment::default()));
    let last = logits(&run(
        &m,
        &inp,
        &[],
        Experiment {
            logits: LogitsChoice::Last,
            ..Default::default()
        },
    ));
    assert_eq!(last.size(), [2, 1, 50257]);
    assert!(max_abs(&last.get(0).get(0), &all.get(0).get(4)) < 1e-5);
    assert!(
        max_abs(&last.get(1).get(0), &all.get(1).get(2)) < 1e-5,
        "row 1's last non-padding position"
    );
    let none = run(
        &m,
        &inp,
        &[(ResidPostLnF, None)],
        Experiment {
            logits: LogitsChoice::None,
            ..Default::default()
        },
    );
    assert!(none.logits.is_none() && none.get((ResidPostLnF, None)).is_some());
}

#[test]
fn an_edit_of_a_future_key_is_masked_again() {
    let m = model();
    let inp = input(&[CLEAN]);
    // Both runs capture layer 0's pattern, so both take the explicit attention path there.
    let probs = [(AttnQkProbs, Some(0))];
    let plain = logits(&run(&m, &inp, &probs, Experiment::default()));
    let future = edit(
        AttnQkLogits,
        Some(0),
        vec![
            AxisSelection::All,
            AxisSelection::Indices(vec![0, 1]),
            AxisSelection::Indices(vec![3, 4]),
        ],
        EditOp::Set(1e4),
    );
    let got = run(
        &m,
        &inp,
        &probs,
        Experiment {
            edits: vec![future],
            ..Default::default()
        },
    );
    assert!(
        same_bits(&plain, &logits(&got)),
        "a query saw a later position"
    );
}

#[test]
fn bad_requests_name_the_field_and_leave_the_model_usable() {
    let m = model();
    let inp = input(&[CLEAN]);
    let all = |n| vec![AxisSelection::All; n];
    let cases: Vec<(Experiment, ErrorKind, &str)> = vec![
        (
            Experiment {
                edits: vec![edit(
                    MlpPostAct,
                    Some(0),
                    vec![
                        AxisSelection::All,
                        AxisSelection::All,
                        AxisSelection::Indices(vec![96]),
                    ],
                    EditOp::Set(0.0),
                )],
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "axis 2: index 96 out of range 0..96",
        ),
        (
            Experiment {
                edits: vec![edit(
                    MlpPostAct,
                    Some(0),
                    vec![AxisSelection::Indices(vec![1])],
                    EditOp::Set(0.0),
                )],
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "axis 0: index 1 out of range 0..1",
        ),
        (
            Experiment {
                edits: vec![edit(MlpPostAct, Some(0), all(4), EditOp::Set(0.0))],
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "4 axes selected",
        ),
        (
            Experiment {
                edits: vec![edit(Logits, None, vec![], EditOp::Set(0.0))],
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "logits cannot be edited",
        ),
        (
            Experiment {
                edits: vec![edit(
                    MlpPostAct,
                    Some(0),
                    vec![],
                    EditOp::Add(Tensor::zeros([7], (Kind::Float, tch::Device::Cpu))),
                )],
                ..Default::default()
            },
            ErrorKind::Shape,
            "operand of shape [7] does not broadcast to the selection's shape [1, 5, 96]",
        ),
        (
            Experiment {
                edits: vec![edit(MlpPostAct, Some(5), vec![], EditOp::Set(0.0))],
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "layer 5 out of range",
        ),
        (
            Experiment {
                start: Some(Start {
                    layer: 2,
                    resid: Tensor::zeros([1, 5, 24], (Kind::Float, tch::Device::Cpu)),
                }),
                end_layer: Some(2),
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "start layer 2 and end layer 2 are out of order",
        ),
        (
            Experiment {
                start: Some(Start {
                    layer: 1,
                    resid: Tensor::zeros([1, 5, 23], (Kind::Float, tch::Device::Cpu)),
                }),
                ..Default::default()
            },
            ErrorKind::Shape,
            "the start residual has shape [1, 5, 23] but layer 1's input is [1, 5, 24]",
        ),
        (
            Experiment {
                edits: vec![edit(MlpPostAct, Some(0), vec![], EditOp::Set(0.0))],
                start: Some(Start {
                    layer: 1,
                    resid: Tensor::zeros([1, 5, 24], (Kind::Float, tch::Device::Cpu)),
                }),
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "layer 0 is not run by this request (it runs layers 1..3)",
        ),
        (
            Experiment {
                edits: vec![edit(ResidPostLnF, None, vec![], EditOp::Set(0.0))],
                end_layer: Some(1),
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "not computed: the request stops after layer 0",
        ),
    ];
    for (x, kind, needle) in cases {
        let e = m
            .forward_with(&inp, &[], &x)
            .err()
            .unwrap_or_else(|| panic!("accepted: {needle}"));
        assert_eq!(e.kind, kind, "{needle}: {}", e.message);
        assert!(e.message.contains(needle), "{needle}: {}", e.message);
    }
    assert!(m.forward(&inp, &[]).is_ok());
}

#[test]
fn concurrent_passes_with_different_edits_get_their_own_results() {
    let m = model();
    let inp = input(&[CLEAN]);
    let expected: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let x = Experiment {
                edits: vec![edit(MlpPostAct, Some(1), vec![], EditOp::Scale(i as f64))],
                ..Default::default()
            };
            common::tensor_bytes(&logits(&run(&m, &inp, &[], x)))
        })
        .collect();
    std::thread::scope(|s| {
        for (i, want) in expected.iter().enumerate() {
            let (m, inp) = (&m, &inp);
            s.spawn(move || {
                for _ in 0..5 {
                    let x = Experiment {
                        edits: vec![edit(MlpPostAct, Some(1), vec![], EditOp::Scale(i as f64))],
                        ..Default::default()
                    };
                    assert!(
                        *want == common::tensor_bytes(&logits(&run(m, inp, &[], x))),
                        "thread {i}"
                    );
                }
            });
        }
    });
}

/// Random edit lists at resid.post_mlp of layer 0: the library's result equals starting at
/// layer 1 from a residual edited element by element here; random lists elsewhere never
/// panic and each error is well-formed.
#[test]
fn random_edit_lists_match_an_element_by_element_oracle() {
    let m = model();
    let inp = input(&[CLEAN, &CORRUPT[..4]]);
    let key = (ResidPostMlp, Some(0));
    let plain = run(&m, &inp, &[key], Experiment::default());
    let base: Vec<f32> = Vec::try_from(plain.get(key).unwrap().tensor.flatten(0, -1)).unwrap();
    let shape = [2usize, 5, 24];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..60 {
        let mut oracle = base.clone();
        let mut edits = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let sel: Vec<AxisSelection> = shape
                .iter()
                .take(rng.below(4))
                .map(|&n| match rng.below(2) {
                    0 => AxisSelection::All,
                    _ => {
                        // Distinct indices in random order (duplicates would race in index_put).
                        let mut ix: Vec<i64> = Vec::new();
                        for _ in 0..1 + rng.below(3) {
                            let i = rng.below(n) as i64;
                            if !ix.contains(&i) {
                                ix.push(i);
                            }
                        }
                        AxisSelection::Indices(ix)
                    }
                })
                .collect();
            let axis = |a: usize| -> Vec<usize> {
                match sel.get(a) {
                    Some(AxisSelection::Indices(ix)) => ix.iter().map(|&i| i as usize).collect(),
                    _ => (0..shape[a]).collect(),
                }
            };
            let (ax0, ax1, ax2) = (axis(0), axis(1), axis(2));
            let value = rng.below(7) as f64 - 3.0;
            let vec: Vec<f32> = (0..ax2.len())
                .map(|_| rng.below(100) as f32 / 10.0 - 5.0)
                .collect();
            let op = rng.below(4);
            let before = oracle.clone();
            for &i in &ax0 {
                for &j in &ax1 {
                    for (k_at, &k) in ax2.iter().enumerate() {
                        let at = (i * shape[1] + j) * shape[2] + k;
                        oracle[at] = match op {
                            0 => value as f32,
                            1 => before[at] * value as f32,
                            2 => before[at] + vec[k_at],
                            _ => vec[k_at],
                        };
                    }
                }
            }
            let operand = || Tensor::from_slice(&vec);
            let op = match op {
                0 => EditOp::Set(value),
                1 => EditOp::Scale(value),
                2 => EditOp::Add(operand()),
                _ => EditOp::Replace(operand()),
            };
            edits.push(edit(key.0, key.1, sel, op));
        }
        let got = run(
            &m,
            &inp,
            &[],
            Experiment {
                edits,
                ..Default::default()
            },
        );
        let start = Start {
            layer: 1,
            resid: Tensor::from_slice(&oracle).view([2, 5, 24]),
        };
        let want = run(
            &m,
            &inp,
            &[],
            Experiment {
                start: Some(start),
                ..Default::default()
            },
        );
        let d = max_abs(&logits(&got), &logits(&want));
        assert!(d < 1e-4, "round {round}: {d}");
    }
    // Random garbage edits anywhere: an error with a message, or a result; never a panic.
    for _ in 0..200 {
        let loc = Activation::ALL[rng.below(Activation::ALL.len())];
        let layer = match rng.below(3) {
            0 => None,
            _ => Some(rng.below(5) as i64 - 1),
        };
        let sel = (0..rng.below(6))
            .map(|_| match rng.below(3) {
                0 => AxisSelection::All,
                1 => AxisSelection::Indices(vec![]),
                _ => AxisSelection::Indices(vec![rng.below(200) as i64 - 5]),
            })
            .collect();
        let shape: Vec<i64> = (0..rng.below(4))
            .map(|_| 1 + rng.below(30) as i64)
            .collect();
        let op = match rng.below(3) {
            0 => EditOp::Set(1.0),
            1 => EditOp::Add(Tensor::ones(
                shape.as_slice(),
                (Kind::Float, tch::Device::Cpu),
            )),
            _ => EditOp::Replace(Tensor::ones(
                shape.as_slice(),
                (Kind::Float, tch::Device::Cpu),
            )),
        };
        let x = Experiment {
            edits: vec![edit(loc, layer, sel, op)],
            ..Default::default()
        };
        if let Err(e) = m.forward_with(&inp, &[], &x) {
            assert!(
                !e.message.is_empty()
                    && e.kind != ErrorKind::Panic
                    && e.kind != ErrorKind::Internal,
                "{e:?}"
            );
        }
    }
}
