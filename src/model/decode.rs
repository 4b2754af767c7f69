//! Incremental decoding: a state holding up to `n_seq_max` sequences, each with its keys and
//! values at every layer, so that appending tokens costs only the new positions. Sequences
//! are addressed by caller-chosen ids `0..n_seq_max` (as llama.cpp's `seq_id`).
use crate::error::{err, ErrorKind, Result};
use crate::model::{ActivationKey, Experiment, ForwardInput, ForwardOutput, Model, Past};
use std::sync::Arc;
use tch::Tensor;

/// The most sequences one state may hold (ids are `0..n_seq_max`).
pub const MAX_SEQUENCES: usize = 4096;

/// One sequence's cache: per layer, keys and values `[capacity, heads, d_head]`, of which the
/// first `len` positions are filled. Capacity doubles as tokens arrive (never past the
/// context window), so memory follows the tokens appended.
struct Sequence {
    len: i64,
    capacity: i64,
    layers: Vec<(Tensor, Tensor)>,
}

/// A decoding state over one model (which it keeps alive). Used by one thread at a time;
/// several states on one model run concurrently.
pub struct DecodeState {
    model: Arc<Model>,
    seqs: Vec<Option<Sequence>>,
}

/// One row of an append: a sequence id and its new tokens.
#[derive(Clone, Debug)]
pub struct Append {
    pub seq: usize,
    pub tokens: Vec<i64>,
}

impl Append {
    /// One row per sequence `0..`, sequence `i` getting `rows[i]`.
    pub fn each(rows: &[Vec<i64>]) -> Vec<Append> {
        rows.iter()
            .enumerate()
            .map(|(seq, t)| Append {
                seq,
                tokens: t.clone(),
            })
            .collect()
    }
}

fn invalid(m: String) -> crate::error::Error {
    err(ErrorKind::InvalidArgument, m)
}

impl DecodeState {
    pub fn new(model: Arc<Model>, n_seq_max: usize) -> Result<DecodeState> {
        if !(1..=MAX_SEQUENCES).contains(&n_seq_max) {
            return Err(invalid(format!(
                "n_seq_max = {n_seq_max}: a state holds 1..={MAX_SEQUENCES} sequences"
            )));
        }
        let mut seqs = Vec::new();
        seqs.try_reserve_exact(n_seq_max).map_err(|_| {
            err(
                ErrorKind::OutOfMemory,
                format!("{n_seq_max} sequence slots"),
            )
        })?;
        seqs.resize_with(n_seq_max, || None);
        Ok(DecodeState { model, seqs })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn n_seq_max(&self) -> usize {
        self.seqs.len()
    }

    fn slot(&self, seq: usize, what: &str) -> Result<usize> {
        match seq < self.seqs.len() {
            true => Ok(seq),
            false => Err(invalid(format!(
                "{what}: sequence id {seq} is outside 0..{} (n_seq_max)",
                self.seqs.len()
            ))),
        }
    }

    /// The number of tokens a sequence holds (0 when empty or removed).
    pub fn len(&self, seq: usize) -> Result<i64> {
        let s = self.slot(seq, "length")?;
        Ok(self.seqs[s].as_ref().map_or(0, |q| q.len))
    }

    /// Bytes of cache one token of one sequence takes (keys and values at every layer).
    pub fn bytes_per_token(&self) -> i64 {
        let c = self.model.config();
        let elt = self.model.cache_kind().elt_size_in_bytes() as i64;
        c.n_layers * c.n_heads * (c.d_head_qk() + c.d_head_v()) * elt
    }

    /// Appends each row's tokens to its sequence and returns the output over the new
    /// positions (`[rows, T_max, ...]`, rows right-padded). Checked whole before any work:
    /// on an error nothing is appended anywhere.
    pub fn append(
        &mut self,
        rows: &[Append],
        wanted: &[ActivationKey],
        x: &Experiment,
    ) -> Result<ForwardOutput> {
        let window = self.model.config().ctx_window;
        let mut seen = vec![false; self.seqs.len()];
        for (r, a) in rows.iter().enumerate() {
            let s = self.slot(a.seq, &format!("append row {r}"))?;
            if std::mem::replace(&mut seen[s], true) {
                return Err(invalid(format!(
                    "append row {r}: sequence {s} appears twice"
                )));
            }
            if a.tokens.is_empty() {
                return Err(invalid(format!(
                    "append row {r}: no tokens for sequence {s}"
                )));
            }
            let have = self.len(s)?;
            if have + a.tokens.len() as i64 > window {
                return Err(invalid(format!(
                    "sequence {s} holds {have} tokens: {} more would pass the context window \
                     of {window} (nothing was appended)",
                    a.tokens.len()
                )));
            }
        }
        if rows.is_empty() {
            return Err(invalid("append: no rows".into()));
        }
        let t = rows.iter().map(|a| a.tokens.len()).max().unwrap_or(0);
        let input = ForwardInput {
            tokens: rows
                .iter()
                .flat_map(|a| {
                    a.tokens
                        .iter()
                        .copied()
                        .chain(std::iter::repeat_n(0, t - a.tokens.len()))
                })
                .collect(),
            batch: rows.len() as i64,
            seq_len: t as i64,
            pad: rows.iter().any(|a| a.tokens.len() < t).then(|| {
                rows.iter()
                    .flat_map(|a| (0..t).map(move |i| i >= a.tokens.len()))
                    .collect()
            }),
        };
        for a in rows {
            self.reserve(a.seq, a.tokens.len() as i64)?;
        }
        let past = self.past(rows);
        let out = self.model.forward_after(&input, wanted, x, &past)?;
        for a in rows {
            if let Some(q) = self.seqs[a.seq].as_mut() {
                q.len += a.tokens.len() as i64;
            }
        }
        Ok(out)
    }

    /// Each row's buffers, its cached length and its new count: the pass writes the new keys
    /// and values into the buffers in place (shallow handles, no copy).
    fn past(&self, rows: &[Append]) -> Past {
        let seqs = rows.iter().flat_map(|a| self.seqs[a.seq].as_ref());
        Past {
            lengths: seqs.clone().map(|q| q.len).collect(),
            new: rows.iter().map(|a| a.tokens.len() as i64).collect(),
            layers: (0..self.model.config().n_layers as usize)
                .map(|l| {
                    seqs.clone()
                        .map(|q| (q.layers[l].0.shallow_clone(), q.layers[l].1.shallow_clone()))
                        .collect()
                })
                .collect(),
        }
    }

    /// Makes room for `n` more tokens in a sequence (creating it when empty), growing its
    /// buffers by doubling, capped at the window, and keeping what they hold. The length is
    /// not changed: a failed pass leaves the sequence as it was.
    fn reserve(&mut self, seq: usize, n: i64) -> Result<()> {
        let have = self.len(seq)?;
        let need = have + n;
        if self.seqs[seq].as_ref().is_some_and(|q| q.capacity >= need) {
            return Ok(());
        }
        let capacity = ((need.max(16) as u64).next_power_of_two() as i64)
            .min(self.model.config().ctx_window)
            .max(need);
        let c = self.model.config();
        let (heads, dqk, dv) = (c.n_heads, c.d_head_qk(), c.d_head_v());
        let dev = (self.model.cache_kind(), self.model.device().to_tch());
        let old = self.seqs[seq].as_ref();
        let mut layers = Vec::with_capacity(c.n_layers as usize);
        for l in 0..c.n_layers as usize {
            let k = Tensor::f_zeros([capacity, heads, dqk], dev)?;
            let v = Tensor::f_zeros([capacity, heads, dv], dev)?;
            if let Some(q) = old.as_ref().filter(|_| have > 0) {
                k.f_narrow(0, 0, have)?
                    .f_copy_(&q.layers[l].0.f_narrow(0, 0, have)?)?;
                v.f_narrow(0, 0, have)?
                    .f_copy_(&q.layers[l].1.f_narrow(0, 0, have)?)?;
            }
            layers.push((k, v));
        }
        self.seqs[seq] = Some(Sequence {
            len: have,
            capacity,
            layers,
        });
        Ok(())
    }

    /// Copies sequence `src` into `dst` (replacing what `dst` held): a full copy, so the
    /// two then evolve independently; it costs `len(src) * bytes_per_token()`.
    pub fn copy(&mut self, src: usize, dst: usize) -> Result<()> {
        let s = self.slot(src, "copy source")?;
        let d = self.slot(dst, "copy destination")?;
        let q = self.seqs[s]
            .as_ref()
            .filter(|q| q.len > 0)
            .ok_or_else(|| invalid(format!("copy: sequence {s} is empty")))?;
        if s == d {
            return Ok(());
        }
        let layers = q
            .layers
            .iter()
            .map(|(k, v)| {
                let own = |t: &Tensor| {
                    t.f_narrow(0, 0, q.len)?
                        .f_to_device_(t.device(), t.kind(), false, true)
                };
                Ok((own(k)?, own(v)?))
            })
            .collect::<Result<Vec<_>>>()?;
        self.seqs[d] = Some(Sequence {
            len: q.len,
            capacity: q.len,
            layers,
        });
        Ok(())
    }

    /// Empties a sequence and frees its cache (an empty one stays empty).
    pub fn remove(&mut self, seq: usize) -> Result<()> {
        let s = self.slot(seq, "remove")?;
        self.seqs[s] = None;
        Ok(())
    }

    /// Keeps the first `len` tokens of a sequence (its capacity stays for what comes next).
    pub fn truncate(&mut self, seq: usize, len: i64) -> Result<()> {
        let s = self.slot(seq, "truncate")?;
        let have = self.len(s)?;
        if !(0..=have).contains(&len) {
            return Err(invalid(format!(
                "truncate: sequence {s} holds {have} tokens, cannot keep {len}"
            )));
        }
        match len {
            0 => self.seqs[s] = None,
            _ => {
                if let Some(q) = self.seqs[s].as_mut() {
                    q.len = len;
                }
            }
        }
        Ok(())
    }
}
