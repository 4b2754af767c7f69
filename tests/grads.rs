//! Invariants of backward passes that hold whatever the weights, each of which a wrong
//! implementation breaks: first-order agreement with the library's own edits, logits unchanged
//! by a gradient request, zeros where the objective cannot depend on a location; and bad
//! requests that leave the model usable.
mod common;
use model_context::model::edits::{AxisSelection, Edit, EditOp};
use model_context::model::objective::{Backward, Objective};
use model_context::model::{ActivationKey, Experiment, ForwardInput, ForwardOutput, Model};
use model_context::schema::activations::Activation::{self, *};
use model_context::ErrorKind;
use std::sync::Arc;
use tch::{Kind, Tensor};

fn model() -> Arc<Model> {
    common::golden_model(
        "MC_GRAD_GOLDEN_DIR",
        "data/grad_golden",
        "scripts/gen_grad_golden.py",
        "e24_l3_h3",
    )
}

/// Two rows, the second right-padded to the first's length.
fn input() -> ForwardInput {
    common::padded(&[
        &[464, 2068, 7586, 21831, 18045, 625],
        &[464, 3105, 7586, 11],
    ])
}

fn logit_diff() -> Objective {
    Objective::LogitDiff {
        tokens: vec![198, 262],
        others: vec![13, 11],
        positions: vec![-1, -1],
    }
}

fn every_layer(act: Activation) -> Vec<ActivationKey> {
    (0..3).map(|l| (act, Some(l))).collect()
}

fn run(m: &Model, objective: Objective, at: Vec<ActivationKey>, edits: Vec<Edit>) -> ForwardOutput {
    let x = Experiment {
        edits,
        backward: Some(Backward { objective, at }),
        ..Default::default()
    };
    m.forward_with(&input(), &[], &x).unwrap()
}

fn objective_of(o: &ForwardOutput) -> Vec<f32> {
    Vec::<f32>::try_from(&o.objective.as_ref().unwrap().tensor).unwrap()
}

/// Scaling one neuron's `mlp.post_act` by (1 + e) changes each row's objective by
/// e * sum_t act * grad to first order: checked for the ten neurons of largest |act x grad|
/// (row 0, layer 1) at e = 1e-3, within 2% of the change plus 2e-6 (float32 rounding).
#[test]
fn scaling_a_neuron_changes_the_objective_by_act_times_grad() {
    let m = model();
    let key = (MlpPostAct, Some(1));
    let x = Experiment {
        backward: Some(Backward {
            objective: logit_diff(),
            at: vec![key],
        }),
        ..Default::default()
    };
    let base = m.forward_with(&input(), &[key], &x).unwrap();
    let act = base.get(key).unwrap().tensor.get(0);
    let grad = base.grad(key).unwrap().tensor.get(0);
    let attribution = (&act * &grad).sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
    let top = attribution.abs().argsort(0, true).narrow(0, 0, 10);
    let before = objective_of(&base)[0] as f64;
    let e = 1e-3;
    let mut worst = 0f64;
    for n in Vec::<i64>::try_from(&top).unwrap() {
        let scale = Edit {
            location: MlpPostAct,
            layer: Some(1),
            selection: vec![
                AxisSelection::All,
                AxisSelection::All,
                AxisSelection::Indices(vec![n]),
            ],
            op: EditOp::Scale(1.0 + e),
        };
        let after = objective_of(&run(&m, logit_diff(), vec![], vec![scale]))[0] as f64;
        let predicted = e * attribution.double_value(&[n]);
        let got = after - before;
        worst = worst.max((got - predicted).abs() / predicted.abs());
        assert!(
            (got - predicted).abs() <= 0.02 * predicted.abs() + 2e-6,
            "neuron {n}: objective moved by {got:.3e}, act x grad predicts {predicted:.3e}"
        );
    }
    eprintln!("first order: worst relative difference {worst:.2e}");
}

/// Central finite differences through the library's own edits (an ADD of +-h at one element
/// of resid.post_attn.0), float32, h = 1e-2: within 2e-3 + 2% of the gradient, for every
/// objective kind.
#[test]
fn finite_differences_through_edits_agree_with_the_gradient() {
    let m = model();
    let key = (ResidPostAttn, Some(0));
    let mut direction = vec![0f32; 24];
    direction[4] = 1.0;
    direction[9] = -0.5;
    let objectives = || {
        vec![
            Objective::Logit {
                tokens: vec![198, 262],
                positions: vec![-1, 2],
            },
            logit_diff(),
            Objective::LogProb { targets: None },
            Objective::Direction {
                location: ResidPostMlp,
                layer: Some(2),
                positions: vec![-1, -1],
                direction: Tensor::from_slice(&direction),
            },
        ]
    };
    let h = 1e-2;
    let mut worst = 0f64;
    for (i, objective) in objectives().into_iter().enumerate() {
        let grad = run(&m, objective, vec![key], vec![])
            .grad(key)
            .unwrap()
            .tensor
            .shallow_clone();
        for (row, pos, c) in [(0, 5, 3), (0, 1, 17), (1, 3, 0), (1, 0, 11)] {
            let at = |delta: f64| {
                let bump = Edit {
                    location: ResidPostAttn,
                    layer: Some(0),
                    selection: [row, pos, c]
                        .map(|k| AxisSelection::Indices(vec![k]))
                        .to_vec(),
                    op: EditOp::Add(Tensor::from_slice(&[delta as f32])),
                };
                let o = objectives().swap_remove(i);
                objective_of(&run(&m, o, vec![], vec![bump]))
                    .iter()
                    .sum::<f32>() as f64
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let g = grad.double_value(&[row, pos, c]);
            worst = worst.max((fd - g).abs());
            assert!(
                (fd - g).abs() <= 2e-3 + 0.02 * g.abs(),
                "objective {i} at [{row}, {pos}, {c}]: finite differences {fd:.5} vs gradient {g:.5}"
            );
        }
    }
    eprintln!("finite differences: worst |fd - grad| {worst:.2e}");
}

/// The golden model in bfloat16 (its products through the few-row kernels or oneDNN's
/// reordered weights).
fn model_bf16() -> Arc<Model> {
    use model_context::model::{ModelDType, ModelOptions};
    let bf16 = ModelOptions {
        dtype: ModelDType::BFloat16,
        ..Default::default()
    };
    common::golden_model_with(
        "MC_GRAD_GOLDEN_DIR",
        "data/grad_golden",
        "scripts/gen_grad_golden.py",
        "e24_l3_h3",
        Some(bf16),
    )
}

/// A gradient request computes the same forward pass: logits and captures bit-identical, in
/// float32 and in bfloat16 (where the products a gradient flows through still take their
/// value from the reordered weights).
#[test]
fn a_gradient_request_does_not_change_the_logits() {
    for m in [model(), model_bf16()] {
        let wanted = [(MlpPostAct, Some(1)), (AttnQkProbs, Some(2))];
        let plain = m
            .forward_with(&input(), &wanted, &Experiment::default())
            .unwrap();
        assert!(plain.objective.is_none() && plain.grads.is_empty());
        let x = Experiment {
            backward: Some(Backward {
                objective: Objective::LogProb { targets: None },
                at: wanted.to_vec(),
            }),
            ..Default::default()
        };
        let with = m.forward_with(&input(), &wanted, &x).unwrap();
        let same = |a: &Tensor, b: &Tensor| a.equal(b);
        let kind = m.options().dtype;
        assert!(
            same(
                &plain.logits.as_ref().unwrap().tensor,
                &with.logits.as_ref().unwrap().tensor
            ),
            "{kind:?}: logits changed"
        );
        for k in wanted {
            assert!(same(
                &plain.get(k).unwrap().tensor,
                &with.get(k).unwrap().tensor
            ));
            assert!(!with.get(k).unwrap().tensor.requires_grad());
        }
    }
}

fn is_zero(t: &Tensor) -> bool {
    t.abs().max().double_value(&[]) == 0.0
}

/// An objective at layer 0's MLP cannot depend on later layers; a location whose value a
/// whole-tensor SET replaces has no influence; padding positions influence no other row's
/// position; and gradients upstream of the objective are not zero.
#[test]
fn gradients_are_zero_exactly_where_the_objective_cannot_depend() {
    let m = model();
    let mut neuron = vec![0f32; 96];
    neuron[3] = 1.0;
    let direction = Objective::Direction {
        location: MlpPostAct,
        layer: Some(0),
        positions: vec![-1, 2],
        direction: Tensor::from_slice(&neuron),
    };
    let at = [every_layer(MlpPostAct), every_layer(AttnVOut)].concat();
    let out = run(&m, direction, at, vec![]);
    assert!(!is_zero(&out.grad((MlpPostAct, Some(0))).unwrap().tensor));
    assert!(!is_zero(&out.grad((AttnVOut, Some(0))).unwrap().tensor));
    for l in 1..3 {
        assert!(is_zero(&out.grad((MlpPostAct, Some(l))).unwrap().tensor));
        assert!(is_zero(&out.grad((AttnVOut, Some(l))).unwrap().tensor));
    }
    let set = Edit {
        location: ResidPostAttn,
        layer: Some(1),
        selection: vec![],
        op: EditOp::Set(0.5),
    };
    let out = run(&m, logit_diff(), every_layer(MlpPostAct), vec![set]);
    assert!(is_zero(&out.grad((MlpPostAct, Some(0))).unwrap().tensor));
    let g1 = &out.grad((MlpPostAct, Some(1))).unwrap().tensor;
    assert!(!is_zero(g1));
    // Row 1 has 4 tokens: its padding positions 4 and 5 influence nothing.
    assert!(is_zero(&g1.get(1).narrow(0, 4, 2)));
}

/// Each row's gradients are its own: row 0's objective alone gives row 0's gradients.
#[test]
fn each_rows_gradients_are_its_own() {
    let m = model();
    let key = (ResidPostAttn, Some(0));
    let both = run(&m, logit_diff(), vec![key], vec![]);
    let mut one = input();
    one.batch = 1;
    one.tokens.truncate(6);
    one.pad.as_mut().unwrap().truncate(6);
    let x = Experiment {
        backward: Some(Backward {
            objective: Objective::LogitDiff {
                tokens: vec![198],
                others: vec![13],
                positions: vec![-1],
            },
            at: vec![key],
        }),
        ..Default::default()
    };
    let alone = m.forward_with(&one, &[], &x).unwrap();
    let d = (both.grad(key).unwrap().tensor.get(0) - alone.grad(key).unwrap().tensor.get(0))
        .abs()
        .max()
        .double_value(&[]);
    assert!(d <= 1e-5, "row 0's gradient changes with row 1 by {d}");
}

/// An objective, gradient locations, an end layer, and the error kind and text expected.
type BadCase = (
    Objective,
    Vec<ActivationKey>,
    Option<i64>,
    ErrorKind,
    &'static str,
);

#[test]
fn bad_objectives_name_the_cause_and_leave_the_model_usable() {
    let m = model();
    let try_run = |objective: Objective, at: Vec<ActivationKey>, end: Option<i64>| {
        let x = Experiment {
            end_layer: end,
            backward: Some(Backward { objective, at }),
            ..Default::default()
        };
        m.forward_with(&input(), &[], &x).err().expect("accepted")
    };
    let logit = |tokens: Vec<i64>, positions: Vec<i64>| Objective::Logit { tokens, positions };
    let cases: Vec<BadCase> = vec![
        (
            logit(vec![1, 60000], vec![-1, -1]),
            vec![],
            None,
            ErrorKind::Token,
            "60000",
        ),
        (
            logit(vec![1, 2], vec![6, -1]),
            vec![],
            None,
            ErrorKind::InvalidArgument,
            "position 6 of row 0",
        ),
        (
            logit(vec![1, 2], vec![0, 4]),
            vec![],
            None,
            ErrorKind::InvalidArgument,
            "position 4 of row 1",
        ),
        (
            logit(vec![1], vec![-1, -1]),
            vec![],
            None,
            ErrorKind::InvalidArgument,
            "1 tokens given for a batch of 2",
        ),
        (
            logit(vec![1, 2], vec![-1]),
            vec![],
            None,
            ErrorKind::InvalidArgument,
            "1 positions",
        ),
        (
            Objective::Direction {
                location: MlpPostAct,
                layer: Some(0),
                positions: vec![-1, -1],
                direction: Tensor::zeros([95], (Kind::Float, tch::Device::Cpu)),
            },
            vec![],
            None,
            ErrorKind::Shape,
            "[95]",
        ),
        (
            logit(vec![1, 2], vec![-1, -1]),
            vec![(MlpPostAct, Some(0))],
            Some(1),
            ErrorKind::InvalidArgument,
            "stops before them",
        ),
        (
            Objective::Direction {
                location: MlpPostAct,
                layer: Some(0),
                positions: vec![-1, -1],
                direction: Tensor::zeros([96], (Kind::Float, tch::Device::Cpu)),
            },
            vec![(MlpPostAct, Some(2))],
            Some(1),
            ErrorKind::InvalidArgument,
            "layer 2 is not run",
        ),
        (
            logit(vec![1, 2], vec![-1, -1]),
            vec![(Logits, None)],
            None,
            ErrorKind::InvalidArgument,
            "gradient at logits",
        ),
        (
            Objective::LogProb {
                targets: Some(vec![1; 11]),
            },
            vec![],
            None,
            ErrorKind::InvalidArgument,
            "11 targets",
        ),
        (
            Objective::LogProb {
                targets: Some([vec![-1; 6], vec![5; 6]].concat()),
            },
            vec![],
            None,
            ErrorKind::InvalidArgument,
            "row 0 has no position with a target",
        ),
    ];
    for (objective, at, end, kind, needle) in cases {
        let e = try_run(objective, at, end);
        assert_eq!(e.kind, kind, "{e}");
        assert!(
            e.message.contains(needle),
            "`{needle}` not in: {}",
            e.message
        );
    }
    let ok = run(&m, logit_diff(), vec![(MlpPostAct, Some(2))], vec![]);
    assert_eq!(objective_of(&ok).len(), 2);
}
