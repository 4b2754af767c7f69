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
    /// Set when `layers` are one row of buffers shared with the sequences it was appended with.
    shared: Option<Shared>,
}

/// Buffers allocated for several sequences that grew in one append, `[rows, capacity, heads,
/// d_head]` per layer: while the same rows are appended together in that order, a layer
/// writes and attends for all of them in one call instead of one per row.
struct Shared {
    id: u64,
    row: usize,
    rows: usize,
    layers: Vec<(Tensor, Tensor)>,
}

/// A decoding state over one model (which it keeps alive). Used by one thread at a time;
/// several states on one model run concurrently.
pub struct DecodeState {
    model: Arc<Model>,
    seqs: Vec<Option<Sequence>>,
    /// Names the next shared allocation.
    next_shared: u64,
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
        Ok(DecodeState {
            model,
            seqs,
            next_shared: 0,
        })
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
        self.reserve(rows)?;
        let past = self.past(rows)?;
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
    fn past(&self, rows: &[Append]) -> Result<Past> {
        let seqs: Vec<&Sequence> = rows
            .iter()
            .flat_map(|a| self.seqs[a.seq].as_ref())
            .collect();
        let layers = (0..self.model.config().n_layers as usize)
            .map(|l| {
                let row =
                    |q: &&Sequence| (q.layers[l].0.shallow_clone(), q.layers[l].1.shallow_clone());
                seqs.iter().map(row).collect()
            })
            .collect();
        // The rows are, in order, all the rows of one shared allocation.
        let joint = seqs
            .first()
            .and_then(|q| q.shared.as_ref())
            .filter(|first| {
                first.rows == seqs.len()
                    && seqs.iter().enumerate().all(|(r, q)| {
                        q.shared
                            .as_ref()
                            .is_some_and(|s| s.id == first.id && s.row == r)
                    })
            });
        let joint = joint.map(|s| {
            s.layers
                .iter()
                .map(|(k, v)| (k.shallow_clone(), v.shallow_clone()))
                .collect()
        });
        Ok(Past::new(
            seqs.iter().map(|q| q.len).collect(),
            rows.iter().map(|a| a.tokens.len() as i64).collect(),
            layers,
            joint,
            self.model.device().to_tch(),
        )?)
    }

    /// Makes room for each row's new tokens (creating empty sequences), keeping what the
    /// buffers hold; lengths are not changed, so a failed pass leaves every sequence as it
    /// was. Capacity doubles, capped at the window. When several rows must grow, all rows get
    /// one shared allocation sized for the longest (`Shared`).
    fn reserve(&mut self, rows: &[Append]) -> Result<()> {
        let mut grow = false;
        let mut longest = 0;
        for a in rows {
            let n = self.len(a.seq)? + a.tokens.len() as i64;
            longest = longest.max(n);
            grow |= self.seqs[a.seq].as_ref().is_none_or(|q| q.capacity < n);
        }
        if !grow {
            return Ok(());
        }
        let capacity = ((longest.max(16) as u64).next_power_of_two() as i64)
            .min(self.model.config().ctx_window)
            .max(longest);
        let buffers = self.buffers(rows.len() as i64, capacity)?;
        let id = self.next_shared;
        self.next_shared += 1;
        for (r, a) in rows.iter().enumerate() {
            let layers = buffers
                .iter()
                .map(|(k, v)| Ok((k.f_get(r as i64)?, v.f_get(r as i64)?)))
                .collect::<Result<Vec<_>>>()?;
            let have = self.len(a.seq)?;
            if let Some(q) = self.seqs[a.seq].as_ref().filter(|_| have > 0) {
                for ((k, v), (ok, ov)) in layers.iter().zip(&q.layers) {
                    k.f_narrow(0, 0, have)?.f_copy_(&ok.f_narrow(0, 0, have)?)?;
                    v.f_narrow(0, 0, have)?.f_copy_(&ov.f_narrow(0, 0, have)?)?;
                }
            }
            let shared = (rows.len() > 1).then(|| Shared {
                id,
                row: r,
                rows: rows.len(),
                layers: buffers
                    .iter()
                    .map(|(k, v)| (k.shallow_clone(), v.shallow_clone()))
                    .collect(),
            });
            self.seqs[a.seq] = Some(Sequence {
                len: have,
                capacity,
                layers,
                shared,
            });
        }
        Ok(())
    }

    /// Zeroed key and value buffers `[rows, capacity, heads, d_head]` for every layer.
    fn buffers(&self, rows: i64, capacity: i64) -> Result<Vec<(Tensor, Tensor)>> {
        let c = self.model.config();
        let (heads, dqk, dv) = (c.n_heads, c.d_head_qk(), c.d_head_v());
        let dev = (self.model.cache_kind(), self.model.device().to_tch());
        (0..c.n_layers)
            .map(|_| {
                Ok((
                    Tensor::f_zeros([rows, capacity, heads, dqk], dev)?,
                    Tensor::f_zeros([rows, capacity, heads, dv], dev)?,
                ))
            })
            .collect()
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
            shared: None,
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
