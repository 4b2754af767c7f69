//! Incremental decoding against the full forward pass and Hugging Face's `generate`: every
//! step's logits equal a full pass over the whole sequence, for several sequences of different
//! lengths advanced in one call, after a fork and after a truncate; captures at new positions
//! equal the full pass's; greedy output equals HF's cached greedy decoding token for token
//! (scripts/gen_decode_golden.py); bad requests leave the other sequences untouched; and a
//! property test of random state operations on a tiny model. CUDA too where a GPU is visible.
mod common;
use common::{devices, Rng};
use model_context::model::decode::{Append, DecodeState};
use model_context::model::edits::{AxisSelection, Edit, EditOp};
use model_context::model::objective::{Backward, Objective};
use model_context::model::sampling::{sample, sample_batch, SampleOptions, StopReason};
use model_context::model::{ActivationKey, Experiment, ForwardInput, LogitsChoice, Model};
use model_context::schema::activations::Activation::{self, *};
use model_context::{Device, ErrorKind, ModelContext, OpenOptions, StandardModelContext};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use tch::Tensor;

fn golden() -> (PathBuf, Value) {
    let dir = common::data_dir(
        "MC_DECODE_GOLDEN_DIR",
        "data/decode_golden",
        "scripts/gen_decode_golden.py",
    );
    let m = serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    (dir, m)
}

fn model_on(name: &str, device: Device) -> Arc<Model> {
    let (dir, _) = golden();
    let opts = OpenOptions {
        device: Some(device),
        ..Default::default()
    };
    let ctx = StandardModelContext::open(dir.join(name).to_str().unwrap(), &opts).unwrap();
    ctx.get_or_create_model(None).unwrap()
}

fn cpu(t: &Tensor) -> Tensor {
    t.to_device(tch::Device::Cpu)
}

/// The full pass over one whole sequence: logits `[T, V]` and the wanted captures.
fn full(m: &Model, seq: &[i64], wanted: &[ActivationKey]) -> (Tensor, Vec<Tensor>) {
    let input = ForwardInput {
        tokens: seq.to_vec(),
        batch: 1,
        seq_len: seq.len() as i64,
        pad: None,
    };
    let out = m.forward(&input, wanted).unwrap();
    let acts = wanted
        .iter()
        .map(|&k| cpu(&out.get(k).unwrap().tensor.get(0)))
        .collect();
    (cpu(&out.logits.unwrap().tensor.get(0)), acts)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

const WANTED: [ActivationKey; 3] = [
    (ResidPostMlp, Some(1)),
    (AttnK, Some(0)),
    (AttnQkProbs, Some(1)),
];

/// Appends `rows` and checks each row's new logits and captures against the full pass over
/// its whole sequence (`history` holds every sequence's tokens). Returns the worst difference.
fn step(m: &Model, st: &mut DecodeState, history: &mut [Vec<i64>], rows: &[Append]) -> f64 {
    let before: Vec<i64> = rows.iter().map(|a| st.len(a.seq).unwrap()).collect();
    let out = st.append(rows, &WANTED, &Experiment::default()).unwrap();
    let logits = cpu(&out.logits.as_ref().unwrap().tensor);
    let mut worst = 0f64;
    for (r, a) in rows.iter().enumerate() {
        history[a.seq].extend(&a.tokens);
        let (p, n) = (before[r], a.tokens.len() as i64);
        assert_eq!(st.len(a.seq).unwrap(), p + n);
        let (want, acts) = full(m, &history[a.seq], &WANTED);
        let got = logits.get(r as i64).narrow(0, 0, n);
        worst = worst.max(max_abs(&got, &want.narrow(0, p, n)));
        for (k, (key, full_act)) in WANTED.iter().zip(&acts).enumerate() {
            let got = cpu(&out.get(*key).unwrap().tensor.get(r as i64)).narrow(0, 0, n);
            let want = full_act.narrow(0, p, n);
            let got = match key.0 {
                // New queries over the row's keys 0..p+n (the rest is padding).
                AttnQkProbs => got.narrow(1, 0, p + n),
                _ => got,
            };
            let want = match key.0 {
                AttnQkProbs => want.narrow(1, 0, p + n),
                _ => want,
            };
            let d = max_abs(&got, &want);
            assert!(
                d <= 1e-4,
                "row {r} capture {k} ({:?}) differs by {d}",
                key.0
            );
        }
    }
    worst
}

fn ids(rng: &mut Rng, n: usize) -> Vec<i64> {
    (0..n).map(|_| rng.below(50257) as i64).collect()
}

#[test]
fn every_step_equals_a_full_pass_over_the_whole_sequence() {
    for device in devices() {
        let m = model_on("e24_l3_h3", device);
        let mut st = DecodeState::new(m.clone(), 4).unwrap();
        let mut history = vec![Vec::new(); 4];
        let mut rng = Rng(7);
        let append = |seq: usize, tokens: Vec<i64>| Append { seq, tokens };
        let mut worst = 0f64;
        // Three prompts of different lengths in one call, then mixed steps.
        let first = [
            append(0, ids(&mut rng, 3)),
            append(1, ids(&mut rng, 5)),
            append(2, ids(&mut rng, 1)),
        ];
        worst = worst.max(step(&m, &mut st, &mut history, &first));
        for i in 0..4 {
            let rows = [
                append(0, ids(&mut rng, 1)),
                append(1, ids(&mut rng, 1 + i % 2)),
                append(2, ids(&mut rng, 2)),
            ];
            worst = worst.max(step(&m, &mut st, &mut history, &rows));
        }
        // A fork: sequence 3 continues from sequence 0's history, each on its own.
        st.copy(0, 3).unwrap();
        history[3] = history[0].clone();
        let rows = [append(0, ids(&mut rng, 2)), append(3, ids(&mut rng, 3))];
        worst = worst.max(step(&m, &mut st, &mut history, &rows));
        // A truncate followed by new tokens.
        st.truncate(1, 2).unwrap();
        history[1].truncate(2);
        let rows = [append(1, ids(&mut rng, 4)), append(3, ids(&mut rng, 1))];
        worst = worst.max(step(&m, &mut st, &mut history, &rows));
        // A removed sequence starts again at position 0.
        st.remove(2).unwrap();
        history[2].clear();
        worst = worst.max(step(
            &m,
            &mut st,
            &mut history,
            &[append(2, ids(&mut rng, 3))],
        ));
        assert!(worst <= 1e-4, "{device:?}: worst logit difference {worst}");
        eprintln!("{device:?}: worst difference from the full pass {worst:.2e}");
    }
}

#[test]
fn greedy_decoding_equals_hugging_face_generate() {
    let (_, manifest) = golden();
    for model in manifest["models"].as_array().unwrap() {
        let m = model_on(model["name"].as_str().unwrap(), Device::Cpu);
        let cases = model["cases"].as_array().unwrap();
        let parse = |v: &Value| -> Vec<i64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        };
        let prompts: Vec<Vec<i64>> = cases.iter().map(|c| parse(&c["prompt"])).collect();
        let expected: Vec<Vec<i64>> = cases.iter().map(|c| parse(&c["greedy"])).collect();
        for (p, want) in prompts.iter().zip(&expected) {
            let opts = SampleOptions {
                max_new_tokens: want.len(),
                ..Default::default()
            };
            assert_eq!(&sample(&m, p, &opts).unwrap(), want, "{}", model["name"]);
        }
        // All prompts at once: each gets what it gets alone (the longest budget for all).
        let opts = SampleOptions {
            max_new_tokens: expected.iter().map(|e| e.len()).max().unwrap(),
            ..Default::default()
        };
        let seeds = vec![0; prompts.len()];
        let batch = sample_batch(&m, &prompts, &opts, &seeds).unwrap();
        let window = model["ctx_window"].as_i64().unwrap() as usize;
        for ((p, want), (got, reason)) in prompts.iter().zip(&expected).zip(&batch) {
            assert_eq!(&got[..want.len()], &want[..], "batched");
            let room = window - p.len() + 1; // the last token is predicted at the window's end
            match reason {
                StopReason::Window => assert_eq!(got.len(), room),
                StopReason::MaxTokens => assert_eq!(got.len(), opts.max_new_tokens),
                StopReason::EndOfText => panic!("no stop token was set"),
            }
        }
    }
}

#[test]
fn sampling_stops_at_the_window_and_refuses_a_longer_prompt() {
    let m = model_on("e24_l3_h3", Device::Cpu);
    let window = m.config().ctx_window as usize;
    let opts = SampleOptions {
        max_new_tokens: 100,
        temperature: 1.0,
        top_k: 50,
        top_p: 0.9,
        seed: 5,
        ..Default::default()
    };
    let prompt = vec![464; window - 4];
    let got = sample(&m, &prompt, &opts).unwrap();
    assert_eq!(
        got.len(),
        5,
        "the window holds 4 more tokens, and one is predicted at its end"
    );
    assert_eq!(
        got,
        sample(&m, &prompt, &opts).unwrap(),
        "equal seeds, equal samples"
    );
    let other = SampleOptions {
        seed: 6,
        ..opts.clone()
    };
    let runs: Vec<_> = (0..4)
        .map(|s| {
            sample(
                &m,
                &prompt,
                &SampleOptions {
                    seed: s,
                    ..other.clone()
                },
            )
            .unwrap()
        })
        .collect();
    assert!(
        runs.iter().any(|r| r != &got),
        "different seeds never differ"
    );
    let e = sample(&m, &vec![464; window + 1], &opts).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("more than the context window"), "{e}");
}

#[test]
fn a_batched_append_gives_each_row_what_it_gets_alone() {
    let m = model_on("e32_l2_h4", Device::Cpu);
    let mut rng = Rng(11);
    let prompts: Vec<Vec<i64>> = [4, 1, 6].iter().map(|&n| ids(&mut rng, n)).collect();
    let mut together = DecodeState::new(m.clone(), 3).unwrap();
    let rows: Vec<Append> = Append::each(&prompts);
    let x = Experiment {
        logits: LogitsChoice::Last,
        ..Default::default()
    };
    let all = cpu(&together
        .append(&rows, &[], &x)
        .unwrap()
        .logits
        .unwrap()
        .tensor);
    for (r, p) in prompts.iter().enumerate() {
        let mut alone = DecodeState::new(m.clone(), 1).unwrap();
        let one = alone
            .append(
                &[Append {
                    seq: 0,
                    tokens: p.clone(),
                }],
                &[],
                &x,
            )
            .unwrap();
        let d = max_abs(&all.get(r as i64), &cpu(&one.logits.unwrap().tensor.get(0)));
        assert!(d <= 1e-4, "row {r} differs from its run alone by {d}");
    }
}

/// Next-token logits of sequence `seq` after appending `token` on a copy (the state is left as
/// it was by removing the copy).
fn probe(st: &mut DecodeState, seq: usize, spare: usize) -> Tensor {
    st.copy(seq, spare).unwrap();
    let out = st
        .append(
            &[Append {
                seq: spare,
                tokens: vec![13],
            }],
            &[],
            &Experiment::default(),
        )
        .unwrap();
    st.remove(spare).unwrap();
    cpu(&out.logits.unwrap().tensor)
}

#[test]
fn bad_requests_name_the_cause_and_change_no_sequence() {
    let m = model_on("e24_l3_h3", Device::Cpu);
    let window = m.config().ctx_window;
    let mut st = DecodeState::new(m.clone(), 3).unwrap();
    let x = Experiment::default();
    st.append(
        &[
            Append {
                seq: 0,
                tokens: vec![464, 2068, 7586],
            },
            Append {
                seq: 1,
                tokens: vec![11; 10],
            },
        ],
        &[],
        &x,
    )
    .unwrap();
    let before = probe(&mut st, 0, 2);
    let lens = |st: &DecodeState| (st.len(0).unwrap(), st.len(1).unwrap(), st.len(2).unwrap());
    let cases: Vec<(Vec<Append>, Experiment, ErrorKind, &str)> = vec![
        (
            vec![Append {
                seq: 3,
                tokens: vec![1],
            }],
            Experiment::default(),
            ErrorKind::InvalidArgument,
            "outside 0..3",
        ),
        (
            vec![
                Append {
                    seq: 0,
                    tokens: vec![1],
                },
                Append {
                    seq: 1,
                    tokens: vec![1; window as usize - 9],
                },
            ],
            Experiment::default(),
            ErrorKind::InvalidArgument,
            "sequence 1 holds 10 tokens",
        ),
        (
            vec![Append {
                seq: 0,
                tokens: vec![],
            }],
            Experiment::default(),
            ErrorKind::InvalidArgument,
            "no tokens",
        ),
        (
            vec![
                Append {
                    seq: 0,
                    tokens: vec![1],
                },
                Append {
                    seq: 0,
                    tokens: vec![2],
                },
            ],
            Experiment::default(),
            ErrorKind::InvalidArgument,
            "appears twice",
        ),
        (
            vec![Append {
                seq: 0,
                tokens: vec![1, 99999],
            }],
            Experiment::default(),
            ErrorKind::Token,
            "99999",
        ),
        (
            vec![Append {
                seq: 0,
                tokens: vec![1, 2],
            }],
            Experiment {
                edits: vec![Edit {
                    location: ResidPostAttn,
                    layer: Some(0),
                    selection: vec![AxisSelection::All, AxisSelection::Indices(vec![2])],
                    op: EditOp::Set(0.0),
                }],
                ..Default::default()
            },
            ErrorKind::InvalidArgument,
            "index 2 out of range 0..2",
        ),
        (
            vec![Append {
                seq: 0,
                tokens: vec![1],
            }],
            Experiment {
                backward: Some(Backward {
                    objective: Objective::LogProb { targets: None },
                    at: vec![],
                }),
                ..Default::default()
            },
            ErrorKind::Unsupported,
            "gradients",
        ),
        (
            vec![Append {
                seq: 0,
                tokens: vec![1],
            }],
            Experiment {
                end_layer: Some(1),
                ..Default::default()
            },
            ErrorKind::Unsupported,
            "an end layer",
        ),
    ];
    for (rows, x, kind, needle) in cases {
        let e = st.append(&rows, &[], &x).err().expect("accepted");
        assert_eq!(e.kind, kind, "{e}");
        assert!(
            e.message.contains(needle),
            "`{needle}` not in: {}",
            e.message
        );
        assert_eq!(lens(&st), (3, 10, 0), "an error changed a sequence: {e}");
    }
    for (r, needle) in [
        (st.copy(2, 0), "sequence 2 is empty"),
        (st.truncate(0, 4), "cannot keep 4"),
        (st.copy(5, 0), "outside 0..3"),
    ] {
        let e = r.expect_err("accepted");
        assert!(
            e.message.contains(needle),
            "`{needle}` not in: {}",
            e.message
        );
    }
    assert_eq!(lens(&st), (3, 10, 0));
    assert_eq!(
        max_abs(&before, &probe(&mut st, 0, 2)),
        0.0,
        "sequence 0's next logits changed"
    );
    assert!(DecodeState::new(m, 0).is_err());
}

/// Random appends, forks, truncates and removes on the smallest model; after each operation
/// one sequence's next-token logits are checked against the full pass.
#[test]
fn random_state_operations_keep_the_full_pass_invariant() {
    let m = model_on("e32_l2_h4", Device::Cpu);
    let window = m.config().ctx_window as usize;
    let n = 4;
    let mut st = DecodeState::new(m.clone(), n).unwrap();
    let mut history = vec![Vec::<i64>::new(); n];
    let mut rng = Rng(2024);
    let mut checked = 0;
    for _ in 0..150 {
        let seq = rng.below(n);
        match rng.below(10) {
            0 if !history[seq].is_empty() => {
                let dst = rng.below(n);
                st.copy(seq, dst).unwrap();
                history[dst] = history[seq].clone();
            }
            1 => {
                let keep = rng.below(history[seq].len() + 1);
                st.truncate(seq, keep as i64).unwrap();
                history[seq].truncate(keep);
            }
            2 => {
                st.remove(seq).unwrap();
                history[seq].clear();
            }
            _ => {
                // Often every sequence in order (so rows that grew together attend jointly),
                // else a random subset in random order (row by row).
                let mut order: Vec<usize> = (0..n).collect();
                let batch = match rng.below(3) {
                    0 => {
                        for i in (1..n).rev() {
                            order.swap(i, rng.below(i + 1));
                        }
                        1 + rng.below(n)
                    }
                    _ => n,
                };
                let rows: Vec<Append> = order[..batch]
                    .iter()
                    .filter(|&&s| history[s].len() < window)
                    .map(|&s| {
                        let count = 1 + rng.below((window - history[s].len()).min(3));
                        Append {
                            seq: s,
                            tokens: ids(&mut rng, count),
                        }
                    })
                    .collect();
                if rows.is_empty() {
                    continue;
                }
                let out = st.append(&rows, &[], &Experiment::default()).unwrap();
                let logits = cpu(&out.logits.unwrap().tensor);
                for (r, a) in rows.iter().enumerate() {
                    history[a.seq].extend(&a.tokens);
                    let (want, _) = full(&m, &history[a.seq], &[]);
                    let k = a.tokens.len() as i64;
                    let p = history[a.seq].len() as i64 - k;
                    let d = max_abs(&logits.get(r as i64).narrow(0, 0, k), &want.narrow(0, p, k));
                    assert!(
                        d <= 1e-4,
                        "after {checked} checks: sequence {} differs by {d}",
                        a.seq
                    );
                    checked += 1;
                }
            }
        }
        for (s, h) in history.iter().enumerate() {
            assert_eq!(st.len(s).unwrap(), h.len() as i64);
        }
    }
    assert!(checked >= 60, "only {checked} appends checked");
}

/// The cache costs what the docs say per token and sequence.
#[test]
fn a_token_costs_the_documented_bytes() {
    let m = model_on("e24_l3_h3", Device::Cpu);
    let st = DecodeState::new(m.clone(), 1).unwrap();
    let c = m.config();
    assert_eq!(st.bytes_per_token(), c.n_layers * 2 * c.d_model * 4);
    let _ = Activation::Logits;
}

/// An edit during an append is part of the cached history: a later token sees the edited
/// key, exactly as a full pass with the same edit at that absolute position does.
#[test]
fn an_edited_key_is_what_later_tokens_attend_to() {
    let m = model_on("e24_l3_h3", Device::Cpu);
    let prompt = vec![464, 2068, 7586, 21831];
    let edit = |position: i64| Edit {
        location: AttnK,
        layer: Some(0),
        selection: vec![AxisSelection::All, AxisSelection::Indices(vec![position])],
        op: EditOp::Scale(3.0),
    };
    let mut st = DecodeState::new(m.clone(), 1).unwrap();
    let x = Experiment {
        edits: vec![edit(2)],
        ..Default::default()
    };
    st.append(
        &[Append {
            seq: 0,
            tokens: prompt.clone(),
        }],
        &[],
        &x,
    )
    .unwrap();
    let next = st
        .append(
            &[Append {
                seq: 0,
                tokens: vec![18045],
            }],
            &[],
            &Experiment::default(),
        )
        .unwrap();
    let got = cpu(&next.logits.unwrap().tensor.get(0).get(0));
    let whole: Vec<i64> = prompt.iter().copied().chain([18045]).collect();
    let input = ForwardInput {
        tokens: whole.clone(),
        batch: 1,
        seq_len: 5,
        pad: None,
    };
    let full_x = Experiment {
        edits: vec![edit(2)],
        ..Default::default()
    };
    let want = cpu(&m
        .forward_with(&input, &[], &full_x)
        .unwrap()
        .logits
        .unwrap()
        .tensor
        .get(0)
        .get(4));
    assert!(
        max_abs(&got, &want) <= 1e-4,
        "the edited key was not cached"
    );
    let (plain, _) = full(&m, &whole, &[]);
    assert!(
        max_abs(&got, &plain.get(4)) > 1e-3,
        "the edit changed nothing"
    );
}

/// In bfloat16 or float16 on the CPU the cache holds float32 (each value converted exactly)
/// and steps attend in float32: each step's logits stay as close to the full pass in the same
/// dtype as two roundings of it, and pick the same tokens; the cache costs 4 bytes a value.
#[test]
fn reduced_precision_steps_match_the_full_pass_in_their_dtype() {
    use model_context::model::{ModelDType, ModelOptions};
    let (dir, _) = golden();
    for dtype in [ModelDType::BFloat16, ModelDType::Float16] {
        let path = dir.join("e24_l3_h3");
        let ctx = StandardModelContext::open(path.to_str().unwrap(), &OpenOptions::default());
        let opts = ModelOptions {
            dtype,
            ..Default::default()
        };
        let m = ctx.unwrap().get_or_create_model(Some(opts)).unwrap();
        let mut st = DecodeState::new(m.clone(), 2).unwrap();
        let c = m.config();
        assert_eq!(st.bytes_per_token(), c.n_layers * 2 * c.d_model * 4);
        let mut rng = Rng(11);
        let mut history = vec![ids(&mut rng, 6), ids(&mut rng, 2)];
        st.append(&Append::each(&history), &[], &Experiment::default())
            .unwrap();
        let (mut worst, mut scale) = (0f64, 0f64);
        for _ in 0..12 {
            let rows = Append::each(&[ids(&mut rng, 1), ids(&mut rng, 1)]);
            let out = st.append(&rows, &[], &Experiment::default()).unwrap();
            let logits = out.logits.unwrap().tensor.to_kind(tch::Kind::Float);
            for (r, a) in rows.iter().enumerate() {
                history[r].extend(&a.tokens);
                let (want, _) = full(&m, &history[r], &[]);
                let want = want.get(-1).to_kind(tch::Kind::Float);
                let got = logits.get(r as i64).get(0);
                worst = worst.max(max_abs(&got, &want));
                scale = scale.max(want.abs().max().double_value(&[]));
                // The same token wherever the full pass's top two are not within rounding.
                let top = want.topk(2, -1, true, true).0;
                let margin = (top.get(0) - top.get(1)).double_value(&[]);
                let (g, w) = (got.argmax(-1, false), want.argmax(-1, false));
                let same = g.int64_value(&[]) == w.int64_value(&[]);
                assert!(
                    same || margin <= 2e-2 * scale,
                    "{dtype:?}: row {r}, margin {margin}"
                );
            }
        }
        eprintln!("{dtype:?}: worst step difference {worst:.2e} on logits up to {scale:.2}");
        assert!(
            worst <= 2e-2 * scale,
            "{dtype:?}: {worst} on logits up to {scale}"
        );
    }
}
