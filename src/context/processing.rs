//! Standard weight processing (TransformerLens' names), off by default so the seed's results
//! are unchanged. Definitions and invariants: docs/weight-processing.md. Each step rewrites
//! state-dict pieces (float32) so that the model's logits stay the same.
use crate::config::Config;
use crate::error::Result;
use crate::schema::layout::{Piece, Piece::*, PieceKey, PieceMap};
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

/// The pieces a processing step reads and writes.
pub type Pieces = PieceMap<Tensor>;

fn get(p: &Pieces, key: PieceKey) -> TchResult<&Tensor> {
    p.get(key).ok_or_else(|| {
        tch::TchError::Kind(format!("processing needs piece `{}`", key.0.key(key.1)))
    })
}

/// Applies the enabled steps to `pieces` (float32 tensors of every state-dict piece).
pub fn process(pieces: &mut Pieces, config: &Config, steps: Processing) -> Result<()> {
    let layers = 0..config.n_layers;
    if steps.fold_ln {
        for l in layers.clone() {
            let qkv = [(QWeight, QBias), (KWeight, KBias), (VWeight, VBias)];
            fold_ln(pieces, l, (Ln1Weight, Ln1Bias), &qkv)?;
            fold_ln(pieces, l, (Ln2Weight, Ln2Bias), &[(MlpInWeight, MlpInBias)])?;
        }
    }
    if steps.center_writing_weights {
        let mut writers: Vec<PieceKey> = vec![(TokEmbed, None), (PosEmbed, None)];
        for l in layers.clone() {
            for p in [OutWeight, OutBias, MlpOutWeight, MlpOutBias] {
                writers.push((p, Some(l)));
            }
        }
        for key in writers {
            // Embeddings are [rows, d_model]; output weights [d_model, in]; biases [d_model].
            let axis = if matches!(key.0, TokEmbed | PosEmbed) {
                -1
            } else {
                0
            };
            let t = get(pieces, key)?;
            let centered = t.f_sub(&t.f_mean_dim([axis].as_slice(), true, tch::Kind::Float)?)?;
            pieces.insert(key, centered)?;
        }
    }
    if steps.center_unembed {
        let u = get(pieces, (Unembed, None))?;
        let centered = u.f_sub(&u.f_mean_dim([0i64].as_slice(), true, tch::Kind::Float)?)?;
        pieces.insert((Unembed, None), centered)?;
    }
    if steps.fold_value_biases {
        for l in layers {
            let at = |p: Piece| (p, Some(l));
            let bv = get(pieces, at(VBias))?;
            let wo = get(pieces, at(OutWeight))?;
            let bo = get(pieces, at(OutBias))?;
            let (new_bo, zeros) = (bo.f_add(&wo.f_mv(bv)?)?, bv.f_zeros_like()?);
            pieces.insert(at(OutBias), new_bo)?;
            pieces.insert(at(VBias), zeros)?;
        }
    }
    Ok(())
}

/// Folds LayerNorm `ln` (gain, bias) of `layer` into the linear layers `targets` (weight, bias)
/// that read its output: `W' = W * g` (per input column), `b' = b + W @ beta`, then centres
/// `W'` over its input (the normalised input has zero mean), and sets the gain to 1 and the
/// bias to 0.
fn fold_ln(
    pieces: &mut Pieces,
    layer: i64,
    ln: (Piece, Piece),
    targets: &[(Piece, Piece)],
) -> Result<()> {
    let at = |p: Piece| (p, Some(layer));
    let g = get(pieces, at(ln.0))?.shallow_clone();
    let beta = get(pieces, at(ln.1))?.shallow_clone();
    for &(wk, bk) in targets {
        let w = get(pieces, at(wk))?;
        let b = get(pieces, at(bk))?.f_add(&w.f_mv(&beta)?)?;
        let w = w.f_mul(&g.f_unsqueeze(0)?)?;
        let w = w.f_sub(&w.f_mean_dim([1i64].as_slice(), true, tch::Kind::Float)?)?;
        pieces.insert(at(wk), w)?;
        pieces.insert(at(bk), b)?;
    }
    pieces.insert(at(ln.0), g.f_ones_like()?)?;
    pieces.insert(at(ln.1), beta.f_zeros_like()?)?;
    Ok(())
}
