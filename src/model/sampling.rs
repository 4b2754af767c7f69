//! Sampling from the model: greedy (temperature 0), temperature, top-k and nucleus (top-p),
//! seeded so a run can be repeated exactly; several prompts at once on one decoding state, so
//! each new token costs one position.
use crate::error::{err, ErrorKind, Result};
use crate::model::decode::{Append, DecodeState};
use crate::model::{Experiment, LogitsChoice, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// How to sample; the defaults are greedy decoding of 16 tokens.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// 0: greedy (argmax, lowest id on ties); otherwise logits are divided by it.
    pub temperature: f64,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f64,
    /// Keep the `top_k` most likely tokens before top-p (0: all).
    pub top_k: usize,
    pub seed: u64,
    /// Stop after producing this token (the encoding's `<|endoftext|>`), if any.
    pub stop_token: Option<i64>,
}

/// The stop token of a context's sampler: `<|endoftext|>` of its encoding when `on`.
pub fn end_of_text_stop(ctx: &dyn crate::context::ModelContext, on: bool) -> Result<Option<i64>> {
    Ok(match on {
        true => Some(ctx.tokenizer()?.endoftext() as i64),
        false => None,
    })
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            max_new_tokens: 16,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            stop_token: None,
        }
    }
}

impl SampleOptions {
    fn check(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "temperature must be finite and >= 0, got {}",
                    self.temperature
                ),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("top_p must be in (0, 1], got {}", self.top_p),
            ));
        }
        Ok(())
    }
}

/// Why a prompt's generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It produced the stop token (`<|endoftext|>`), which is the last token returned.
    EndOfText,
    /// It produced `max_new_tokens` tokens.
    MaxTokens,
    /// The sequence filled the context window: the last token returned is the one predicted
    /// at the window's last position.
    Window,
}

/// Continues `prompt` by up to `max_new_tokens` tokens; returns only the new ones.
pub fn sample(model: &Arc<Model>, prompt: &[i64], opts: &SampleOptions) -> Result<Vec<i64>> {
    let mut out = sample_batch(model, &[prompt.to_vec()], opts, &[opts.seed])?;
    Ok(out.swap_remove(0).0)
}

/// Continues each prompt (one random stream per prompt, seeded by `seeds`) on one decoding
/// state, all prompts advanced together; returns each prompt's new tokens and why it stopped.
/// A prompt longer than the context window is an error.
pub fn sample_batch(
    model: &Arc<Model>,
    prompts: &[Vec<i64>],
    opts: &SampleOptions,
    seeds: &[u64],
) -> Result<Vec<(Vec<i64>, StopReason)>> {
    opts.check()?;
    let bad = |m: String| Err(err(ErrorKind::InvalidArgument, m));
    let window = model.config().ctx_window;
    if prompts.is_empty() || seeds.len() != prompts.len() {
        return bad(format!(
            "{} prompts and {} seeds: at least one prompt, one seed per prompt",
            prompts.len(),
            seeds.len()
        ));
    }
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return bad(format!(
                "empty prompt: prompt {i} has no tokens (sampling needs at least one)"
            ));
        }
        if p.len() as i64 > window {
            return bad(format!(
                "prompt {i} has {} tokens, more than the context window of {window}",
                p.len()
            ));
        }
    }
    let mut results: Vec<(Vec<i64>, Option<StopReason>)> = vec![(Vec::new(), None); prompts.len()];
    if opts.max_new_tokens == 0 {
        return Ok(results
            .into_iter()
            .map(|(t, _)| (t, StopReason::MaxTokens))
            .collect());
    }
    let mut state = DecodeState::new(model.clone(), prompts.len())?;
    let mut rngs: Vec<ChaCha8Rng> = seeds
        .iter()
        .map(|&s| ChaCha8Rng::seed_from_u64(s))
        .collect();
    let x = Experiment {
        logits: LogitsChoice::Last,
        ..Default::default()
    };
    let mut rows: Vec<Append> = Append::each(prompts);
    while !rows.is_empty() {
        let out = state.append(&rows, &[], &x)?;
        let logits = out
            .logits
            .ok_or_else(|| err(ErrorKind::Internal, "a forward pass without logits"))?;
        let all = logits
            .tensor
            .f_to_dtype(tch::Kind::Float, false, false)?
            .f_to(tch::Device::Cpu)?
            .f_contiguous()?;
        let n_vocab = all.size()[2] as usize;
        let flat = Vec::<f32>::try_from(all.f_view([-1])?)?;
        let mut next = Vec::with_capacity(rows.len());
        for (r, a) in rows.iter().enumerate() {
            let row = &flat[r * n_vocab..(r + 1) * n_vocab];
            let token = choose(row, opts, &mut rngs[a.seq]) as i64;
            let (tokens, reason) = &mut results[a.seq];
            tokens.push(token);
            *reason = if Some(token) == opts.stop_token {
                Some(StopReason::EndOfText)
            } else if tokens.len() >= opts.max_new_tokens {
                Some(StopReason::MaxTokens)
            } else if state.len(a.seq)? >= window {
                Some(StopReason::Window)
            } else {
                None
            };
            if reason.is_none() {
                next.push(Append {
                    seq: a.seq,
                    tokens: vec![token],
                });
            }
        }
        rows = next;
    }
    Ok(results
        .into_iter()
        .map(|(t, r)| (t, r.unwrap_or(StopReason::MaxTokens)))
        .collect())
}

/// Picks one token id from a row of logits.
fn choose(logits: &[f32], opts: &SampleOptions, rng: &mut ChaCha8Rng) -> usize {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 {
                    (i, l)
                } else {
                    best
                }
            })
            .0
    };
    if opts.temperature == 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, ((l as f64 - max) / opts.temperature).exp()))
        .collect();
    if opts.top_k > 0 && opts.top_k < probs.len() {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        probs.truncate(opts.top_k);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    if opts.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut cum = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                cum += p.1;
                cum >= opts.top_p * total
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    let kept: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f64>() * kept;
    for &(i, p) in &probs {
        if u < p {
            return i;
        }
        u -= p;
    }
    probs.last().map_or_else(argmax, |p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(temperature: f64, top_p: f64) -> SampleOptions {
        SampleOptions {
            temperature,
            top_p,
            ..Default::default()
        }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(choose(&[0.0, 3.0, 3.0, -1.0], &opts(0.0, 1.0), &mut rng), 1);
    }

    #[test]
    fn tiny_top_p_is_greedy_and_sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln(), 0.0, f32::NEG_INFINITY];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            assert_eq!(choose(&logits, &opts(1.0, 1e-6), &mut rng), 1);
        }
        let mut counts = [0usize; 4];
        for _ in 0..20000 {
            counts[choose(&logits, &opts(1.0, 1.0), &mut rng)] += 1;
        }
        // Probabilities 0.2, 0.6, 0.2, 0.
        assert_eq!(counts[3], 0);
        assert!(
            (counts[1] as f64 / 20000.0 - 0.6).abs() < 0.02,
            "{counts:?}"
        );
        // top_p 0.7 keeps ids 1 and 0 (0.6 + 0.2 >= 0.7): never id 2.
        let mut seen2 = false;
        for _ in 0..2000 {
            seen2 |= choose(&logits, &opts(1.0, 0.7), &mut rng) == 2;
        }
        assert!(!seen2);
    }

    #[test]
    fn top_k_keeps_the_k_most_likely_before_top_p() {
        let logits = [0.0f32, 2.0, 1.0, 1.5];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let o = SampleOptions {
            temperature: 1.0,
            top_k: 2,
            ..Default::default()
        };
        let mut seen = [0usize; 4];
        for _ in 0..3000 {
            seen[choose(&logits, &o, &mut rng)] += 1;
        }
        assert_eq!((seen[0], seen[2]), (0, 0), "{seen:?}");
        assert!(seen[1] > seen[3] && seen[3] > 0, "{seen:?}");
        let one = SampleOptions { top_k: 1, ..o };
        assert!((0..100).all(|_| choose(&logits, &one, &mut rng) == 1));
    }

    #[test]
    fn rejects_bad_options() {
        assert!(opts(-1.0, 1.0).check().is_err());
        assert!(opts(f64::NAN, 1.0).check().is_err());
        assert!(opts(1.0, 0.0).check().is_err());
        assert!(opts(1.0, 1.5).check().is_err());
    }
}
