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
        let elt = self.model.options().dtype.kind().elt_size_in_bytes() as i64;
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
        let past = self.past(rows)?;
        let (out, new_kv) = self.model.forward_after(&input, wanted, x, &past)?;
        for (r, a) in rows.iter().enumerate() {
            self.store(a.seq, &new_kv, r as i64, a.tokens.len() as i64)?;
        }
        Ok(out)
    }

    /// The cached keys and values of each row's sequence (views, no copy).
    fn past(&self, rows: &[Append]) -> Result<Past> {
        let n_layers = self.model.config().n_layers as usize;
        let mut past = Past {
            lengths: Vec::with_capacity(rows.len()),
            layers: (0..n_layers)
                .map(|_| Vec::with_capacity(rows.len()))
                .collect(),
        };
        let (heads, dqk, dv) = {
            let c = self.model.config();
            (c.n_heads, c.d_head_qk(), c.d_head_v())
        };
        let dev = (
            self.model.options().dtype.kind(),
            self.model.device().to_tch(),
        );
        for a in rows {
            match &self.seqs[a.seq] {
                Some(q) => {
                    past.lengths.push(q.len);
                    for (l, (k, v)) in q.layers.iter().enumerate() {
                        past.layers[l].push((k.f_narrow(0, 0, q.len)?, v.f_narrow(0, 0, q.len)?));
                    }
                }
                None => {
                    past.lengths.push(0);
                    for layer in past.layers.iter_mut() {
                        let k = Tensor::f_zeros([0, heads, dqk], dev)?;
                        layer.push((k, Tensor::f_zeros([0, heads, dv], dev)?));
                    }
                }
            }
        }
        Ok(past)
    }

    /// Writes row `r`'s first `n` new keys and values after its sequence's cached ones,
    /// growing the cache (doubling, capped at the window) when full.
    fn store(&mut self, seq: usize, new_kv: &[(Tensor, Tensor)], r: i64, n: i64) -> Result<()> {
        let window = self.model.config().ctx_window;
        let have = self.len(seq)?;
        let need = have + n;
        let slot = &mut self.seqs[seq];
        let grow = slot.as_ref().is_none_or(|q| q.capacity < need);
        if grow {
            let capacity = ((need.max(16) as u64).next_power_of_two() as i64)
                .min(window)
                .max(need);
            let mut layers = Vec::with_capacity(new_kv.len());
            for (l, (k, v)) in new_kv.iter().enumerate() {
                let (ks, vs) = (k.size(), v.size());
                let nk = Tensor::f_zeros([capacity, ks[2], ks[3]], (k.kind(), k.device()))?;
                let nv = Tensor::f_zeros([capacity, vs[2], vs[3]], (v.kind(), v.device()))?;
                if let Some(q) = slot.as_ref() {
                    nk.f_narrow(0, 0, have)?
                        .f_copy_(&q.layers[l].0.f_narrow(0, 0, have)?)?;
                    nv.f_narrow(0, 0, have)?
                        .f_copy_(&q.layers[l].1.f_narrow(0, 0, have)?)?;
                }
                layers.push((nk, nv));
            }
            *slot = Some(Sequence {
                len: have,
                capacity,
                layers,
            });
        }
        let q = slot
            .as_mut()
            .ok_or_else(|| err(ErrorKind::Internal, "no sequence"))?;
        for ((k, v), (nk, nv)) in q.layers.iter().zip(new_kv) {
            k.f_narrow(0, have, n)?
                .f_copy_(&nk.f_get(r)?.f_narrow(0, 0, n)?)?;
            v.f_narrow(0, have, n)?
                .f_copy_(&nv.f_get(r)?.f_narrow(0, 0, n)?)?;
        }
        q.len = need;
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
