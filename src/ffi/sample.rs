//! Sampling through the C ABI: one prompt (`mc_sample`) or several advanced together
//! (`mc_sample_batch`), each on a decoding state so every new token costs one position.
use super::abi_struct::*;
use super::args::*;
use super::buffers::*;
use super::context::*;
use super::model::*;
use super::status::*;
use crate::context::ModelContext;
use crate::error::{err, ErrorKind, Result};
use crate::model::sampling::{sample, sample_batch, SampleOptions, StopReason};

/// Why a prompt's generation ended: one of the `MC_STOP_*` constants.
pub type mc_stop_reason = i32;

/// It produced `<|endoftext|>` (the last token written).
pub const MC_STOP_END_OF_TEXT: mc_stop_reason = 0;

/// It produced `max_new_tokens` tokens.
pub const MC_STOP_MAX_TOKENS: mc_stop_reason = 1;

/// Its sequence filled the context window (the last token is the one predicted there).
pub const MC_STOP_WINDOW: mc_stop_reason = 2;

/// The sampler's options from the C struct (the stop token from the context's tokenizer).
fn options(ctx: &dyn ModelContext, o: &mc_sample_options) -> Result<SampleOptions> {
    if o.reserved != 0 {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("`opts->reserved` = {} must be zero", o.reserved),
        ));
    }
    let stop_token = crate::model::sampling::end_of_text_stop(ctx, o.stop_at_end_of_text)?;
    Ok(SampleOptions {
        max_new_tokens: o.max_new_tokens as usize,
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k as usize,
        seed: o.seed,
        stop_token,
    })
}

/// Continues `prompt` (`n_prompt` ids) with up to `opts->max_new_tokens` new tokens (only the
/// new ones are written), greedy or sampled with temperature, then top-k, then top-p. Each
/// new token costs one position (a decoding state holds the keys and values). Generation
/// stops after `<|endoftext|>` (when asked), at `max_new_tokens`, or when the sequence fills
/// the context window (`MC_OK` with fewer tokens). Size probe: `tokens` NULL with `capacity`
/// 0 gives `MC_OK` and `*n_tokens = max_new_tokens`; a capacity below it is
/// `MC_ERR_BUFFER_TOO_SMALL` (nothing sampled). Decode the result with `mc_decode`.
/// Thread-safe.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `n_tokens`, `prompt` NULL with `n_prompt` > 0),
/// `MC_ERR_INVALID_ARGUMENT` (`opts->struct_size` below the 0.2 size, an empty prompt or one
/// longer than the context window, a temperature below 0, `top_p` outside (0, 1],
/// `opts->reserved` not zero), `MC_ERR_TOKEN` (a prompt id outside the vocabulary),
/// `MC_ERR_BUFFER_TOO_SMALL` (`capacity` below `max_new_tokens`: `*n_tokens` is
/// `max_new_tokens`), `MC_ERR_UNSUPPORTED` (a tokenizer-only context, a non-zero byte past the
/// library's size of `opts`), the errors of `mc_forward`, `MC_ERR_PANIC`.
///
/// # Safety
/// `prompt` valid for `n_prompt` ids; `tokens` NULL or valid for `capacity` ids; `opts` NULL
/// or valid; `n_tokens` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_sample(
    ctx: *const mc_context,
    prompt: *const u32,
    n_prompt: usize,
    opts: *const mc_sample_options,
    tokens: *mut u32,
    capacity: usize,
    n_tokens: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(n_tokens, "n_tokens")?;
        let ctx = ctx_arg(ctx)?;
        let o = read_options(opts, "opts")?;
        if !fits(
            o.max_new_tokens as usize,
            tokens,
            capacity,
            n_tokens,
            "tokens",
        )? {
            return Ok(()); // a size probe
        }
        let prompt: Vec<i64> = match n_prompt {
            0 => Vec::new(),
            n => arg_slice(prompt, n, "prompt")?
                .iter()
                .map(|&t| t as i64)
                .collect(),
        };
        let options = options(ctx, &o)?;
        let new = sample(&ctx.get_or_create_model(None)?, &prompt, &options)?;
        for (i, &t) in new.iter().enumerate() {
            *tokens.add(i) = t as u32;
        }
        write_out(n_tokens, new.len());
        Ok(())
    })
}

/// Continues several prompts together on one decoding state: prompt `i` is
/// `prompts[prompt_offsets[i] .. prompt_offsets[i + 1]]` (`n_prompt_offsets` = prompts + 1, as
/// `mc_encode_batch` writes them), sampled with `seeds[i]` (`seeds` NULL with 0: every prompt
/// uses `opts->seed`). Writes prompt `i`'s new tokens to `tokens[offsets[i] .. offsets[i +
/// 1]]` (`n_offsets` at least prompts + 1) and why it stopped to `reasons[i]` (`n_reasons` at
/// least prompts); `*n_tokens` is the total. Each prompt gets the tokens it would get alone
/// (its logits within float rounding). Size probe: `tokens` NULL with `capacity` 0 gives
/// `MC_OK` and `*n_tokens = prompts * max_new_tokens`, the most it can write; a smaller
/// capacity is `MC_ERR_BUFFER_TOO_SMALL` (nothing sampled). Thread-safe.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `n_tokens`, `offsets`, `reasons`, an input array
/// NULL with a non-zero length), `MC_ERR_INVALID_ARGUMENT` (no prompts, prompt offsets not
/// starting at 0, decreasing or not ending at `n_prompt_tokens`, an empty prompt or one
/// longer than the context window, `n_seeds` not the number of prompts, `n_offsets` or
/// `n_reasons` too small, the options' errors of `mc_sample`), `MC_ERR_TOKEN`,
/// `MC_ERR_BUFFER_TOO_SMALL`, `MC_ERR_UNSUPPORTED`, the errors of `mc_forward`,
/// `MC_ERR_PANIC`.
///
/// # Safety
/// Every pointer NULL or valid for its length; `n_tokens` NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mc_sample_batch(
    ctx: *const mc_context,
    prompts: *const u32,
    n_prompt_tokens: usize,
    prompt_offsets: *const usize,
    n_prompt_offsets: usize,
    opts: *const mc_sample_options,
    seeds: *const u64,
    n_seeds: usize,
    tokens: *mut u32,
    capacity: usize,
    offsets: *mut usize,
    n_offsets: usize,
    reasons: *mut mc_stop_reason,
    n_reasons: usize,
    n_tokens: *mut usize,
) -> mc_status {
    guard(|| {
        arg_out(n_tokens, "n_tokens")?;
        let ctx = ctx_arg(ctx)?;
        let o = read_options(opts, "opts")?;
        let ids: Vec<i64> = arg_slice(prompts, n_prompt_tokens, "prompts")?
            .iter()
            .map(|&t| t as i64)
            .collect();
        let starts = arg_slice(prompt_offsets, n_prompt_offsets, "prompt_offsets")?;
        let n = n_prompt_offsets.saturating_sub(1);
        let rows = split_rows(&ids, starts, n, "prompts")?;
        let need = n.saturating_mul(o.max_new_tokens as usize);
        for (have, want, what) in [(n_offsets, n + 1, "n_offsets"), (n_reasons, n, "n_reasons")] {
            if have < want {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!("`{what}` = {have}, but {n} prompts need {want}"),
                ));
            }
        }
        arg_out(offsets, "offsets")?;
        arg_out(reasons, "reasons")?;
        if !fits(need, tokens, capacity, n_tokens, "tokens")? {
            return Ok(()); // a size probe
        }
        let options = options(ctx, &o)?;
        let seeds = match (seeds.is_null(), n_seeds) {
            (true, 0) => {
                let mut seeds = crate::error::vec_with_capacity(n, "seeds")?;
                seeds.resize(n, options.seed);
                seeds
            }
            _ => arg_vec(seeds, n_seeds, "seeds")?,
        };
        let out = sample_batch(&ctx.get_or_create_model(None)?, &rows, &options, &seeds)?;
        let mut at = 0;
        for (i, (new, reason)) in out.iter().enumerate() {
            *offsets.add(i) = at;
            for &t in new {
                *tokens.add(at) = t as u32;
                at += 1;
            }
            *reasons.add(i) = match reason {
                StopReason::EndOfText => MC_STOP_END_OF_TEXT,
                StopReason::MaxTokens => MC_STOP_MAX_TOKENS,
                StopReason::Window => MC_STOP_WINDOW,
            };
        }
        *offsets.add(n) = at;
        write_out(n_tokens, at);
        Ok(())
    })
}
