//! Standard weight processing (TransformerLens' names), off by default so the seed's results
//! are unchanged. Definitions and invariants: docs/weight-processing.md. Each step rewrites
//! state-dict pieces (float32) so that the model's logits stay the same.
use crate::config::Config;
use crate::error::Result;
use std::collections::HashMap;
use tch::Tensor;

/// Which steps to apply, in this order: fold_ln, center_writing_weights, center_unembed,
/// fold_value_biases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Processing {
    pub fold_ln: bool,
    pub center_writing_weights: bool,
    pub center_unembed: bool,
    pub fold_value_biases: bool,
}

impl Processing {
    pub fn any(&self) -> bool {
        self.fold_ln || self.center_writing_weights || self.center_unembed || self.fold_value_biases
    }
}

type TchResult<T> = std::result::Result<T, tch::TchError>;

/// The pieces a processing step reads and writes, by state-dict key.
pub type Pieces = HashMap<String, Tensor>;

fn get<'a>(p: &'a Pieces, key: &str) -> TchResult<&'a Tensor> {
    p.get(key)
        .ok_or_else(|| tch::TchError::Kind(format!("processing needs piece `{key}`")))
}

/// Applies the enabled steps to `pieces` (float32 tensors of every state-dict key).
pub fn process(pieces: &mut Pieces, config: &Config, steps: Processing) -> Result<()> {
    let layers: Vec<String> = (0..config.n_layers)
        .map(|l| format!("xf_layers.{l}."))
        .collect();
    if steps.fold_ln {
        for l in &layers {
            fold_ln(
                pieces,
                &format!("{l}ln_1"),
                &["attn.q_proj", "attn.k_proj", "attn.v_proj"].map(|t| format!("{l}{t}")),
            )?;
            fold_ln(pieces, &format!("{l}ln_2"), &[format!("{l}mlp.in_layer")])?;
        }
    }
    if steps.center_writing_weights {
        let mut writers = vec![
            "tok_embed.weight".to_string(),
            "pos_embed.weight".to_string(),
        ];
        for l in &layers {
            for t in ["attn.out_proj", "mlp.out_layer"] {
                writers.push(format!("{l}{t}.weight"));
                writers.push(format!("{l}{t}.bias"));
            }
        }
        for key in writers {
            // Embeddings are [rows, d_model]; output weights [d_model, in]; biases [d_model].
            let axis = if key.contains("embed") { -1 } else { 0 };
            let t = get(pieces, &key)?;
            let centered = t.f_sub(&t.f_mean_dim([axis].as_slice(), true, tch::Kind::Float)?)?;
            pieces.insert(key, centered);
        }
    }
    if steps.center_unembed {
        let u = get(pieces, "unembed.weight")?;
        let centered = u.f_sub(&u.f_mean_dim([0i64].as_slice(), true, tch::Kind::Float)?)?;
        pieces.insert("unembed.weight".into(), centered);
    }
    if steps.fold_value_biases {
        for l in &layers {
            let bv = get(pieces, &format!("{l}attn.v_proj.bias"))?;
            let wo = get(pieces, &format!("{l}attn.out_proj.weight"))?;
            let bo = get(pieces, &format!("{l}attn.out_proj.bias"))?;
            let (new_bo, zeros) = (bo.f_add(&wo.f_mv(bv)?)?, bv.f_zeros_like()?);
            pieces.insert(format!("{l}attn.out_proj.bias"), new_bo);
            pieces.insert(format!("{l}attn.v_proj.bias"), zeros);
        }
    }
    Ok(())
}

/// Folds LayerNorm `ln` into the linear layers `targets` that read its output:
/// `W' = W * g` (per input column), `b' = b + W @ beta`, then centres `W'` over its input
/// (the normalised input has zero mean), and sets the gain to 1 and the bias to 0.
fn fold_ln(pieces: &mut Pieces, ln: &str, targets: &[String]) -> Result<()> {
    let g = get(pieces, &format!("{ln}.weight"))?.shallow_clone();
    let beta = get(pieces, &format!("{ln}.bias"))?.shallow_clone();
    for t in targets {
        let (wk, bk) = (format!("{t}.weight"), format!("{t}.bias"));
        let w = get(pieces, &wk)?;
        let b = get(pieces, &bk)?.f_add(&w.f_mv(&beta)?)?;
        let w = w.f_mul(&g.f_unsqueeze(0)?)?;
        let w = w.f_sub(&w.f_mean_dim([1i64].as_slice(), true, tch::Kind::Float)?)?;
        pieces.insert(wk, w);
        pieces.insert(bk, b);
    }
    pieces.insert(format!("{ln}.weight"), g.f_ones_like()?);
    pieces.insert(format!("{ln}.bias"), beta.f_zeros_like()?);
    Ok(())
}
