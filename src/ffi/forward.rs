//! `mc_forward` through the C ABI: the request read field by field (tokens, padding,
//! activations, edits, start and end, the objective of a backward pass), one call to the
//! model, and the output's logits, activations, objective and gradients as DLPack tensors.
use super::abi_struct::*;
use super::args::*;
use super::buffers::*;
use super::context::*;
use super::dlpack::*;
use super::enums::*;
use super::model::*;
use super::status::*;
use crate::error::{err, ErrorKind, Result};
use crate::model::edits::{AxisSelection, Edit, EditOp};
use crate::model::objective::{Backward, Objective};
use crate::model::{ActivationKey, Experiment, ForwardInput, ForwardOutput, LogitsChoice, Start};
use crate::schema::activations::Activation;
use std::ffi::c_void;

/// The result of `mc_forward` (opaque): logits and the requested activations.
/// Free with `mc_forward_output_free`.
pub struct mc_forward_output {
    pub(crate) inner: ForwardOutput,
}

/// `request->n_tokens`, checked against `batch * seq_len` before a single id is read.
fn check_count(n: usize, r: &mc_forward_request, what: &str) -> Result<()> {
    let expected = r
        .batch
        .checked_mul(r.seq_len)
        .filter(|_| r.batch > 0 && r.seq_len > 0);
    match expected {
        Some(e) if e as u64 == n as u64 => Ok(()),
        Some(e) => Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "`request->{what}` = {n} but batch * seq_len = {} * {} = {e}",
                r.batch, r.seq_len
            ),
        )),
        None => Err(err(
            ErrorKind::InvalidArgument,
            format!(
                "empty or overflowing batch: batch = {}, seq_len = {} (each at least 1)",
                r.batch, r.seq_len
            ),
        )),
    }
}

unsafe fn tokens_arg(r: &mc_forward_request) -> Result<Vec<i64>> {
    if !r.start_residual.is_null() && r.n_tokens == 0 {
        return Ok(Vec::new()); // a start residual makes the tokens optional
    }
    check_count(r.n_tokens, r, "n_tokens")?;
    ids_arg_typed(r.tokens, r.n_tokens, r.token_type)
}

/// `n` token ids of `token_type` at `tokens`, as int64.
pub(crate) unsafe fn ids_arg_typed(
    tokens: *const c_void,
    n: usize,
    token_type: mc_token_type,
) -> Result<Vec<i64>> {
    Ok(match token_type {
        MC_TOKENS_INT64 => arg_vec(tokens as *const i64, n, "request->tokens")?,
        MC_TOKENS_UINT32 => {
            let ids = arg_slice(tokens as *const u32, n, "request->tokens")?;
            let mut out = crate::error::vec_with_capacity(n, "token ids")?;
            out.extend(ids.iter().map(|&t| t as i64));
            out
        }
        t => {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!(
                    "`request->token_type` = {t} is out of range (MC_TOKENS_INT64 or \
                     MC_TOKENS_UINT32)"
                ),
            ))
        }
    })
}

unsafe fn pad_arg(r: &mc_forward_request) -> Result<Option<Vec<bool>>> {
    if r.pad.is_null() {
        return match r.n_pad {
            0 => Ok(None),
            n => Err(err(
                ErrorKind::NullArgument,
                format!("`request->pad` is NULL but `request->n_pad` is {n}"),
            )),
        };
    }
    check_count(r.n_pad, r, "n_pad")?;
    Ok(Some(arg_vec(r.pad, r.n_pad, "request->pad")?))
}

/// Locations with their layers (`what` names the arrays); `MC_LAYER_ALL` is every layer the
/// request runs (`run`).
pub(crate) unsafe fn keys_arg(
    (acts, layers, n): (*const mc_activation, *const i32, usize),
    run: std::ops::Range<i64>,
    what: (&str, &str),
) -> Result<Vec<ActivationKey>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let acts = arg_slice(acts, n, &format!("request->{}", what.0))?;
    let layers = arg_slice(layers, n, &format!("request->{}", what.1))?;
    let mut keys = Vec::new();
    for (&a, &l) in acts.iter().zip(layers) {
        let act = activation(a)?;
        let layers =
            layer_arg(l).map_err(|e| err(e.kind, format!("{}: {}", act.name(), e.message)))?;
        keys.extend(layers.expand(run.clone()).into_iter().map(|l| (act, l)));
    }
    Ok(keys)
}

/// A per-row array of the objective: NULL with 0 is `absent`, otherwise the ids as given
/// (the core checks each length against the batch).
unsafe fn ids_arg(p: *const i64, n: usize, what: &str, absent: Vec<i64>) -> Result<Vec<i64>> {
    match (p.is_null(), n) {
        (true, 0) => Ok(absent),
        _ => arg_vec(p, n, &format!("objective->{what}")),
    }
}

/// The request's backward pass: its objective and the gradient locations.
unsafe fn backward_arg(
    r: &mc_forward_request,
    run: std::ops::Range<i64>,
) -> Result<Option<Backward>> {
    if r.objective.is_null() {
        return match r.n_grads {
            0 => Ok(None),
            n => Err(err(
                ErrorKind::InvalidArgument,
                format!("`request->n_grads` is {n} but `request->objective` is NULL"),
            )),
        };
    }
    let o = read_request(r.objective, "objective")?;
    let positions = || ids_arg(o.positions, o.n_positions, "positions", Vec::new());
    let tokens = || ids_arg(o.tokens, o.n_tokens, "tokens", Vec::new());
    let objective = match o.kind {
        MC_OBJECTIVE_LOGIT => Objective::Logit {
            tokens: tokens()?,
            positions: positions()?,
        },
        MC_OBJECTIVE_LOGIT_DIFF => Objective::LogitDiff {
            tokens: tokens()?,
            others: ids_arg(o.other_tokens, o.n_other_tokens, "other_tokens", Vec::new())?,
            positions: positions()?,
        },
        MC_OBJECTIVE_LOG_PROB => Objective::LogProb {
            targets: match o.targets.is_null() && o.n_targets == 0 {
                true => None,
                false => Some(ids_arg(o.targets, o.n_targets, "targets", Vec::new())?),
            },
        },
        MC_OBJECTIVE_DIRECTION => Objective::Direction {
            location: activation(o.location)?,
            layer: layer_arg(o.layer)?.single("objective->layer")?,
            positions: positions()?,
            direction: import_borrowed(o.direction, "objective->direction")?,
        },
        k => {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("`objective->kind` = {k} is out of range (MC_OBJECTIVE_LOGIT .. MC_OBJECTIVE_DIRECTION)"),
            ))
        }
    };
    let grads = (r.grad_activations, r.grad_layers, r.n_grads);
    Ok(Some(Backward {
        objective,
        at: keys_arg(grads, run, ("grad_activations", "grad_layers"))?,
    }))
}

/// One axis of an edit's selection.
unsafe fn axis_arg(s: &mc_axis_selection, what: &str) -> Result<AxisSelection> {
    match (s.indices.is_null(), s.n_indices) {
        (true, 0) => Ok(AxisSelection::All),
        (false, 0) => Err(err(
            ErrorKind::InvalidArgument,
            format!("`{what}.indices` is given but `{what}.n_indices` is 0 (NULL selects the whole axis)"),
        )),
        (_, n) => Ok(AxisSelection::Indices(
            arg_vec(s.indices, n, &format!("{what}.indices"))?,
        )),
    }
}

unsafe fn edit_arg(e: &mc_edit, i: usize) -> Result<Edit> {
    let what = format!("request->edits[{i}]");
    let location = activation(e.location)?;
    let selection = arg_slice(e.selection, e.n_selection, &format!("{what}.selection"))?
        .iter()
        .enumerate()
        .map(|(axis, s)| axis_arg(s, &format!("{what}.selection[{axis}]")))
        .collect::<Result<Vec<_>>>()?;
    let operand = || import_borrowed(e.operand, &format!("{what}.operand"));
    let op = match e.op {
        MC_EDIT_SET => EditOp::Set(e.value),
        MC_EDIT_SCALE => EditOp::Scale(e.value),
        MC_EDIT_ADD => EditOp::Add(operand()?),
        MC_EDIT_REPLACE => EditOp::Replace(operand()?),
        op => {
            return Err(err(
                ErrorKind::InvalidArgument,
                format!("`{what}.op` = {op} is out of range (MC_EDIT_SET .. MC_EDIT_REPLACE)"),
            ))
        }
    };
    Ok(Edit {
        location,
        layer: layer_arg(e.layer)?.single(&format!("{what}.layer"))?,
        selection,
        op,
    })
}

/// The request's edits, read with the stride of their own `struct_size` (all equal).
pub(crate) unsafe fn edits_arg(edits: *const mc_edit, n_edits: usize) -> Result<Vec<Edit>> {
    if n_edits == 0 {
        return Ok(Vec::new());
    }
    let first = arg_ref(edits, "request->edits")?;
    let stride = first.struct_size as usize;
    (0..n_edits)
        .map(|i| {
            let p = (edits as *const u8).add(i * stride) as *const mc_edit;
            let what = format!("request->edits[{i}]");
            if std::ptr::read_unaligned(p as *const u32) as usize != stride {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    format!("`{what}.struct_size` differs from edits[0]'s {stride}"),
                ));
            }
            edit_arg(&read_request(p, &what)?, i)
        })
        .collect()
}

/// A request's logits choice, and its `reserved` field (must be zero).
pub(crate) fn logits_arg(l: mc_logits_choice, reserved: u32) -> Result<LogitsChoice> {
    if reserved != 0 {
        return Err(err(
            ErrorKind::InvalidArgument,
            format!("`request->reserved` = {reserved} must be zero"),
        ));
    }
    match l {
        MC_LOGITS_ALL => Ok(LogitsChoice::All),
        MC_LOGITS_LAST => Ok(LogitsChoice::Last),
        MC_LOGITS_NONE => Ok(LogitsChoice::None),
        l => Err(err(
            ErrorKind::InvalidArgument,
            format!("`request->logits` = {l} is out of range (MC_LOGITS_ALL .. MC_LOGITS_NONE)"),
        )),
    }
}

/// The request's experiment: edits, start, end and logits choice.
unsafe fn experiment_arg(r: &mc_forward_request) -> Result<Experiment> {
    let logits = logits_arg(r.logits, r.reserved)?;
    let start = match r.start_residual.is_null() {
        true => None,
        false => Some(Start {
            layer: r.start_layer as i64,
            resid: import_borrowed(r.start_residual, "request->start_residual")?,
        }),
    };
    Ok(Experiment {
        edits: edits_arg(r.edits, r.n_edits)?,
        start,
        end_layer: (r.end_layer != 0).then_some(r.end_layer as i64),
        logits,
        backward: None,
    })
}

/// Runs a forward pass (no gradients) and returns the logits (`[batch, seq_len, vocab]`, or as
/// `req->logits` chooses) and the requested activations, each `[batch, ...per-sequence
/// shape]`, in `*out` (free with `mc_forward_output_free`). With `req->edits`, each edit is
/// applied where its activation is produced (docs/experiments.md): `attn.qk_logits` before the
/// causal and padding masks, which are applied again after it; `attn.qk_probs` after the
/// softmax, not renormalised; a layer-norm scale is what the normalisation divides by. A
/// captured activation at an edited location is the edited value (a copy). The request may
/// start from a residual stream at a layer's input and stop after a layer. With
/// `req->objective`, a backward pass follows: each row's objective and its gradients at
/// `req->grad_activations` are read with `mc_forward_output_objective` and
/// `mc_forward_output_grad` (parameters are never updated). Creates a default model if the
/// context has none. Thread-safe: concurrent passes with different edits each get their own
/// result.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`ctx`, `req`, `out`, an edit's operand for ADD/REPLACE, or
/// an array NULL with a non-zero length), `MC_ERR_INVALID_ARGUMENT` (`req->struct_size` below
/// the 0.2 size; `batch` or `seq_len` below 1 or `seq_len` above the context window;
/// `n_tokens` or `n_pad` not `batch * seq_len`; `token_type`, `logits`, an activation, an edit
/// op or a layer out of range; a layer the request does not run; a pad row not right-padded;
/// an edit at `logits`; a selection index out of range, or a selection list without its
/// length; start and end layers out of order; `reserved` not zero; an operand that is not
/// float32, float16 or bfloat16; an objective kind out of range, a per-row array whose length
/// is not `batch`, a position past its row or on padding, a row without a log-probability
/// target, an objective reading the logits with `end_layer` set, a gradient at `logits` or
/// at a layer not run, `n_grads` without an objective), `MC_ERR_TOKEN` (an objective token
/// or target outside the vocabulary), `MC_ERR_SHAPE` (an operand that does not broadcast to its
/// selection, a start residual not `[batch, seq_len, d_model]`, a direction that does not
/// broadcast to its location at one position; the message gives both shapes), `MC_ERR_DEVICE` (an operand or start residual on a device other than the CPU and
/// the model's), `MC_ERR_TOKEN` (an id outside the vocabulary, with its position),
/// `MC_ERR_UNSUPPORTED` (a tokenizer-only context, a non-zero byte past the library's size of
/// `req`, of an edit or of the objective, an operand of another DLPack major version), the errors of
/// `mc_create_model` when it creates the model, `MC_ERR_OUT_OF_MEMORY`, `MC_ERR_PANIC`. The
/// context stays usable after every error.
///
/// # Safety
/// `ctx` NULL or live; `req` NULL or valid with the arrays it points to; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_forward(
    ctx: *const mc_context,
    req: *const mc_forward_request,
    out: *mut *mut mc_forward_output,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let ctx = ctx_arg(ctx)?;
        let r = read_request(req, "request")?;
        let model = ctx.get_or_create_model(None)?;
        let input = ForwardInput {
            tokens: tokens_arg(&r)?,
            batch: r.batch,
            seq_len: r.seq_len,
            pad: pad_arg(&r)?,
        };
        let mut x = experiment_arg(&r)?;
        let (first, end) = model.layer_range(&x)?;
        let acts = (r.activations, r.layers, r.n_activations);
        let wanted = keys_arg(acts, first..end, ("activations", "layers"))?;
        x.backward = backward_arg(&r, first..end)?;
        let inner = model.forward_with(&input, &wanted, &x)?;
        write_out(out, Box::into_raw(Box::new(mc_forward_output { inner })));
        Ok(())
    })
}

/// One activation of a forward output as a DLPack tensor (`layer`: the layer, or
/// `MC_LAYER_NONE` for model-wide locations; `MC_ACT_LOGITS` gives the logits). Each call
/// hands out a new tensor sharing the output's memory: free it with its deleter; it stays
/// valid after `mc_forward_output_free`. Not found if it was not requested (the logits:
/// if the request chose `MC_LOGITS_NONE` or stopped before the end).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`output`, `out`), `MC_ERR_INVALID_ARGUMENT` (`act` out of
/// range), `MC_ERR_NOT_FOUND` (not requested), `MC_ERR_PANIC`.
///
/// # Safety
/// `output` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_forward_output_get(
    output: *const mc_forward_output,
    act: mc_activation,
    layer: i32,
    out: *mut *mut DLManagedTensorVersioned,
) -> mc_status {
    hand_out_at(output, (act, layer), out, "activation", ForwardOutput::get)
}

/// A location and layer as the output's key (`MC_LAYER_NONE`: model-wide).
fn key_arg(act: mc_activation, layer: i32) -> Result<(Activation, ActivationKey)> {
    let act = activation(act)?;
    Ok((act, (act, layer_arg(layer)?.single("layer")?)))
}

/// Hands out one tensor of an output, chosen by `pick`, as a new DLPack tensor.
unsafe fn hand_out(
    output: *const mc_forward_output,
    out: *mut *mut DLManagedTensorVersioned,
    pick: impl FnOnce(&ForwardOutput) -> Result<&crate::tensor::OwnedTensor>,
) -> mc_status {
    guard(|| {
        arg_out(out, "out")?;
        let o = arg_ref(output, "output")?;
        write_out(out, export_versioned(pick(&o.inner)?.share())?);
        Ok(())
    })
}

/// Hands out the `what` (activation or gradient) that `pick` finds at one location and layer;
/// one that was not requested is `NotFound` naming it.
unsafe fn hand_out_at(
    output: *const mc_forward_output,
    (act, layer): (mc_activation, i32),
    out: *mut *mut DLManagedTensorVersioned,
    what: &str,
    pick: impl FnOnce(&ForwardOutput, ActivationKey) -> Option<&crate::tensor::OwnedTensor>,
) -> mc_status {
    hand_out(output, out, |o| {
        let (act, key) = key_arg(act, layer)?;
        pick(o, key).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!(
                    "{} layer {layer} was not requested in this forward pass (no {what} there)",
                    act.name()
                ),
            )
        })
    })
}

/// Each row's objective value `[batch]` (float32) of a request with a backward pass, as a new
/// DLPack tensor (free it with its deleter; it outlives the output).
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`output`, `out`), `MC_ERR_NOT_FOUND` (the request had no
/// objective), `MC_ERR_PANIC`.
///
/// # Safety
/// `output` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_forward_output_objective(
    output: *const mc_forward_output,
    out: *mut *mut DLManagedTensorVersioned,
) -> mc_status {
    hand_out(output, out, |o| {
        o.objective.as_ref().ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                "this forward pass had no objective (request->objective was NULL)",
            )
        })
    })
}

/// The gradient of the rows' summed objective at one requested location and layer, with the
/// activation's shape and the model's dtype, as a new DLPack tensor (free it with its deleter;
/// it outlives the output). At an edited location it is the gradient with respect to the
/// edited value; where the objective does not depend on the location it is zeros.
///
/// Errors: `MC_ERR_NULL_ARGUMENT` (`output`, `out`), `MC_ERR_INVALID_ARGUMENT` (`act` out of
/// range), `MC_ERR_NOT_FOUND` (no gradient was requested there), `MC_ERR_PANIC`.
///
/// # Safety
/// `output` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mc_forward_output_grad(
    output: *const mc_forward_output,
    act: mc_activation,
    layer: i32,
    out: *mut *mut DLManagedTensorVersioned,
) -> mc_status {
    hand_out_at(output, (act, layer), out, "gradient", ForwardOutput::grad)
}

/// Frees a forward output (NULL: no-op); tensors taken from it stay valid.
///
/// Returns no status; never fails.
///
/// # Safety
/// `output` is NULL or from `mc_forward`, not freed before.
#[no_mangle]
pub unsafe extern "C" fn mc_forward_output_free(output: *mut mc_forward_output) {
    if !output.is_null() {
        let _ =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(Box::from_raw(output))));
    }
}
