//! Sampling from the model: greedy (temperature 0), temperature and nucleus (top-p), seeded
//! so a run can be repeated exactly.
use crate::error::{err, ErrorKind, Result};
use crate::model::{ForwardInput, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How to sample; the defaults are greedy decoding of 16 tokens.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// 0: greedy (argmax, lowest id on ties); otherwise logits are divided by it.
    pub temperature: f64,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1: all).
    pub top_p: f64,
    pub seed: u64,
    /// Stop after producing this token (the encoding's `<|endoftext|>`), if any.
    pub stop_token: Option<i64>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            max_new_tokens: 16,
            temperature: 0.0,
            top_p: 1.0,
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

/// Continues `prompt` by up to `max_new_tokens` tokens; returns only the new ones. When the
/// sequence outgrows the context window, the model sees its last `ctx_window` tokens.
pub fn sample(model: &Model, prompt: &[i64], opts: &SampleOptions) -> Result<Vec<i64>> {
    opts.check()?;
    if prompt.is_empty() {
        return Err(err(
            ErrorKind::InvalidArgument,
            "empty prompt: sampling needs at least one token",
        ));
    }
    let ctx = model.config().ctx_window as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut seq = prompt.to_vec();
    let mut new = Vec::with_capacity(opts.max_new_tokens);
    while new.len() < opts.max_new_tokens {
        let window = &seq[seq.len().saturating_sub(ctx)..];
        let input = ForwardInput {
            tokens: window.to_vec(),
            batch: 1,
            seq_len: window.len() as i64,
            pad: None,
        };
        let out = model.forward(&input, &[])?;
        let logits = out
            .logits
            .ok_or_else(|| err(ErrorKind::Internal, "a forward pass without logits"))?;
        let last = logits.tensor.f_get(0)?.f_get(window.len() as i64 - 1)?;
        let logits = Vec::<f32>::try_from(
            last.f_to_dtype(tch::Kind::Float, false, false)?
                .f_to(tch::Device::Cpu)?,
        )?;
        let token = choose(&logits, opts, &mut rng) as i64;
        seq.push(token);
        new.push(token);
        if Some(token) == opts.stop_token {
            break;
        }
    }
    Ok(new)
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
    fn rejects_bad_options() {
        assert!(opts(-1.0, 1.0).check().is_err());
        assert!(opts(f64::NAN, 1.0).check().is_err());
        assert!(opts(1.0, 0.0).check().is_err());
        assert!(opts(1.0, 1.5).check().is_err());
    }
}
