//! Objectives of a backward pass (attribution): one scalar per row, differentiated with
//! autograd at the activations a request names. The total is the sum over rows, so each
//! row's gradients are its own.
use crate::error::{err, ErrorKind, Result};
use crate::schema::activations::Activation;
use tch::{Kind, Tensor};

type TchResult<T> = std::result::Result<T, tch::TchError>;

/// The scalar of each row; positions are per row, -1 meaning the row's last non-padding one
/// (an empty list: -1 for every row).
#[derive(Debug)]
pub enum Objective {
    /// The logit of `tokens[row]` at `positions[row]`.
    Logit {
        tokens: Vec<i64>,
        positions: Vec<i64>,
    },
    /// `logit(tokens[row]) - logit(others[row])` at `positions[row]`.
    LogitDiff {
        tokens: Vec<i64>,
        others: Vec<i64>,
        positions: Vec<i64>,
    },
    /// The mean log-probability of the targets over the row's non-padding positions that
    /// have one: `targets` is `[batch * seq_len]` (-1: no target there) or, when None, the
    /// next token (the last non-padding position has none). Its negative is the usual loss.
    LogProb { targets: Option<Vec<i64>> },
    /// The dot product of an activation at `positions[row]` (its per-position shape) with
    /// `direction`, which broadcasts to `[batch, ...per-position shape]`.
    Direction {
        location: Activation,
        layer: Option<i64>,
        positions: Vec<i64>,
        direction: Tensor,
    },
}

/// A backward pass: an objective and the activations to differentiate it at.
#[derive(Debug)]
pub struct Backward {
    pub objective: Objective,
    pub at: Vec<(Activation, Option<i64>)>,
}

fn invalid(m: String) -> crate::error::Error {
    err(ErrorKind::InvalidArgument, format!("objective: {m}"))
}

/// A per-row array's length must be the batch.
fn check_len(v: &[i64], batch: i64, what: &str) -> Result<()> {
    match v.len() as i64 == batch {
        true => Ok(()),
        false => Err(invalid(format!(
            "{} {what} given for a batch of {batch} rows (one per row)",
            v.len()
        ))),
    }
}

/// Each row's length: its non-padding positions.
pub fn row_lengths(pad: Option<&[bool]>, batch: i64, t: i64) -> Vec<i64> {
    match pad {
        None => vec![t; batch as usize],
        Some(p) => p
            .chunks(t as usize)
            .map(|r| r.iter().filter(|&&x| !x).count() as i64)
            .collect(),
    }
}

/// Positions with -1 resolved to each row's last non-padding position (no positions at all:
/// -1 for every row); each must be a non-padding position of its row.
pub fn resolve_positions(positions: &[i64], lengths: &[i64]) -> Result<Vec<i64>> {
    if positions.is_empty() {
        return resolve_positions(&vec![-1; lengths.len()], lengths);
    }
    check_len(positions, lengths.len() as i64, "positions")?;
    positions
        .iter()
        .zip(lengths)
        .enumerate()
        .map(|(row, (&p, &len))| {
            let p = if p == -1 { len - 1 } else { p };
            match (0..len).contains(&p) {
                true => Ok(p),
                false => Err(invalid(format!(
                    "position {} of row {row} is outside its {len} non-padding positions \
                     (0..{len}, or -1 for the last)",
                    positions[row]
                ))),
            }
        })
        .collect()
}

fn check_tokens(ids: &[i64], n_vocab: i64, what: &str) -> Result<()> {
    match ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id < 0 || id >= n_vocab)
    {
        Some((row, id)) => Err(err(
            ErrorKind::Token,
            format!("objective: {what} {id} of row {row} is outside the vocabulary (0..{n_vocab})"),
        )),
        None => Ok(()),
    }
}

impl Objective {
    /// Whether the objective reads the logits (so the request must run to the end).
    pub fn needs_logits(&self) -> bool {
        match self {
            Objective::Direction { location, .. } => *location == Activation::Logits,
            _ => true,
        }
    }

    /// Checks the per-row arrays and token ids against the batch; `lengths` are the rows'
    /// non-padding lengths. Returns the resolved positions (empty for `LogProb`).
    pub fn check(&self, lengths: &[i64], t: i64, n_vocab: i64) -> Result<Vec<i64>> {
        let batch = lengths.len() as i64;
        match self {
            Objective::Logit { tokens, positions } => {
                check_len(tokens, batch, "tokens")?;
                check_tokens(tokens, n_vocab, "token")?;
                resolve_positions(positions, lengths)
            }
            Objective::LogitDiff {
                tokens,
                others,
                positions,
            } => {
                check_len(tokens, batch, "tokens")?;
                check_len(others, batch, "other tokens")?;
                check_tokens(tokens, n_vocab, "token")?;
                check_tokens(others, n_vocab, "other token")?;
                resolve_positions(positions, lengths)
            }
            Objective::LogProb { targets } => {
                if let Some(ts) = targets {
                    if ts.len() as i64 != batch * t {
                        return Err(invalid(format!(
                            "{} targets given for a {batch}x{t} batch (one per position)",
                            ts.len()
                        )));
                    }
                    let real: Vec<i64> = ts.iter().copied().filter(|&x| x != -1).collect();
                    check_tokens(&real, n_vocab, "target")?;
                }
                Ok(Vec::new())
            }
            Objective::Direction { positions, .. } => resolve_positions(positions, lengths),
        }
    }
}

/// Where each row's log-probability terms are: `(targets [B, T], counted [B, T])`, from the
/// caller's targets or the next tokens. A row with nothing counted is an error.
pub fn log_prob_targets(
    targets: Option<&[i64]>,
    tokens: &[i64],
    lengths: &[i64],
    t: i64,
) -> Result<(Vec<i64>, Vec<bool>)> {
    let n = lengths.len() * t as usize;
    let mut ids = crate::error::vec_with_capacity(n, "target ids")?;
    ids.resize(n, 0i64);
    let mut counted = crate::error::vec_with_capacity(n, "target flags")?;
    counted.resize(n, false);
    for (row, &len) in lengths.iter().enumerate() {
        for pos in 0..len {
            let i = row * t as usize + pos as usize;
            let target = match targets {
                Some(ts) => ts[i],
                None if pos + 1 < len => tokens[i + 1],
                None => -1,
            };
            if target != -1 {
                ids[i] = target;
                counted[i] = true;
            }
        }
        if !counted[row * t as usize..(row + 1) * t as usize]
            .iter()
            .any(|&c| c)
        {
            return Err(invalid(format!(
                "row {row} has no position with a target (length {len}; the next-token \
                 default needs at least 2 tokens)"
            )));
        }
    }
    Ok((ids, counted))
}

/// Each row's mean log-probability `[B]` (float32) from logits `[B, T, V]`.
pub fn mean_log_prob(logits: &Tensor, ids: &[i64], counted: &[bool]) -> TchResult<Tensor> {
    let (b, t) = (logits.size()[0], logits.size()[1]);
    let dev = logits.device();
    let ids = Tensor::f_from_slice(ids)?.f_view([b, t, 1])?.f_to(dev)?;
    let keep = Tensor::f_from_slice(counted)?
        .f_view([b, t])?
        .f_to(dev)?
        .f_to_kind(Kind::Float)?;
    let lp = logits
        .f_log_softmax(-1, Kind::Float)?
        .f_gather(2, &ids, false)?
        .f_squeeze_dim(2)?;
    let sum = lp
        .f_mul(&keep)?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?;
    sum.f_div(&keep.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?)
}

/// `x[row, positions[row]]` for each row: `[B, ...]` from `[B, T, ...]`.
pub fn at_positions(x: &Tensor, positions: &[i64]) -> TchResult<Tensor> {
    let dev = x.device();
    let rows = Tensor::f_arange(positions.len() as i64, (Kind::Int64, dev))?;
    let pos = Tensor::f_from_slice(positions)?.f_to(dev)?;
    x.f_index(&[Some(rows), Some(pos)])
}

/// Picks `ids[row]` from each row of `[B, V]` logits, in float32.
pub fn pick(logits: &Tensor, ids: &[i64]) -> TchResult<Tensor> {
    let ids = Tensor::f_from_slice(ids)?
        .f_view([-1, 1])?
        .f_to(logits.device())?;
    logits
        .f_gather(1, &ids, false)?
        .f_squeeze_dim(1)?
        .f_to_kind(Kind::Float)
}

/// Each row's dot product of `x [B, ...]` with `direction` (broadcast), in float32.
pub fn dot(x: &Tensor, direction: &Tensor) -> TchResult<Tensor> {
    let b = x.size()[0];
    x.f_to_kind(Kind::Float)?
        .f_mul(&direction.f_to_kind(Kind::Float)?)?
        .f_reshape([b, -1])?
        .f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
}
