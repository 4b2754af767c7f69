//! The TDB state-dict layout (spec section 1): every piece's key and expected shape, derived
//! from the config, so model creation and converters check pieces against one table.
use crate::config::Config;
use crate::error::{err, ErrorKind, Result};
use crate::named_enum;
use crate::schema::dims::broadcasts;

/// A size a config claims, from which piece shapes are derived: one row per size says how
/// it is computed and which config keys it comes from (named when a piece disagrees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Vocab,
    Context,
    Width,
    AttnQk,
    AttnV,
    Mlp,
}

impl Size {
    /// Its value under config `c`.
    pub fn of(self, c: &Config, n_vocab: i64) -> i64 {
        match self {
            Size::Vocab => n_vocab,
            Size::Context => c.ctx_window,
            Size::Width => c.d_model,
            Size::AttnQk => c.d_attn_qk(),
            Size::AttnV => c.d_attn_v(),
            Size::Mlp => c.d_ff(),
        }
    }

    /// The TDB config keys it is computed from.
    pub fn keys(self) -> &'static str {
        match self {
            Size::Vocab => "enc",
            Size::Context => "ctx_window",
            Size::Width => "d_model",
            Size::AttnQk | Size::AttnV => "d_model * m_attn",
            Size::Mlp => "d_model * m_mlp",
        }
    }
}

use Size::*;

named_enum! {
    /// A piece of the TDB state dict: the one place piece names are spelled. Per-layer pieces
    /// (those between `PosEmbed` and `FinalLnWeight`) live under `xf_layers.{layer}.`.
    pub enum Piece {
        TokEmbed = "tok_embed.weight",
        PosEmbed = "pos_embed.weight",
        Ln1Weight = "ln_1.weight",
        Ln1Bias = "ln_1.bias",
        QWeight = "attn.q_proj.weight",
        QBias = "attn.q_proj.bias",
        KWeight = "attn.k_proj.weight",
        KBias = "attn.k_proj.bias",
        VWeight = "attn.v_proj.weight",
        VBias = "attn.v_proj.bias",
        OutWeight = "attn.out_proj.weight",
        OutBias = "attn.out_proj.bias",
        Ln2Weight = "ln_2.weight",
        Ln2Bias = "ln_2.bias",
        MlpInWeight = "mlp.in_layer.weight",
        MlpInBias = "mlp.in_layer.bias",
        MlpOutWeight = "mlp.out_layer.weight",
        MlpOutBias = "mlp.out_layer.bias",
        FinalLnWeight = "final_ln.weight",
        FinalLnBias = "final_ln.bias",
        Unembed = "unembed.weight",
    }
}

/// The axes of each piece, in `Piece` order: its expected shape under a config.
const SIZES: [&[Size]; 21] = [
    &[Vocab, Width],
    &[Context, Width],
    &[Width],
    &[Width],
    &[AttnQk, Width],
    &[AttnQk],
    &[AttnQk, Width],
    &[AttnQk],
    &[AttnV, Width],
    &[AttnV],
    &[Width, AttnV],
    &[Width],
    &[Width],
    &[Width],
    &[Mlp, Width],
    &[Mlp],
    &[Width, Mlp],
    &[Width],
    &[Width],
    &[Width],
    &[Vocab, Width],
];

/// The per-layer pieces are `Piece::ALL[LAYER_PIECES]`.
const LAYER_PIECES: std::ops::Range<usize> = 2..18;
/// How many pieces each layer has.
const PIECES_PER_LAYER: usize = LAYER_PIECES.end - LAYER_PIECES.start;
const LAYER_PREFIX: &str = "xf_layers.";

/// A piece of a particular layer (`None` for model-wide pieces).
pub type PieceKey = (Piece, Option<i64>);

impl Piece {
    /// Whether the piece exists once per layer.
    pub fn per_layer(self) -> bool {
        LAYER_PIECES.contains(&(self as usize))
    }

    /// The sizes of its axes.
    pub fn sizes(self) -> &'static [Size] {
        SIZES[self as usize]
    }

    /// Pieces the model broadcasts, so they may be stored with fewer dimensions (a scalar
    /// gain): the one place this rule is stated.
    pub fn may_broadcast(self) -> bool {
        self == Piece::FinalLnWeight
    }

    /// The state-dict key of this piece at `layer` (ignored for model-wide pieces).
    pub fn key(self, layer: Option<i64>) -> String {
        match layer {
            Some(l) if self.per_layer() => format!("{LAYER_PREFIX}{l}.{}", self.name()),
            _ => self.name().to_string(),
        }
    }

    /// The piece and layer a state-dict key names; None for a key outside the layout.
    pub fn parse(key: &str) -> Option<PieceKey> {
        match key.strip_prefix(LAYER_PREFIX) {
            Some(rest) => {
                let (layer, name) = rest.split_once('.')?;
                let layer: i64 = layer.parse().ok().filter(|l| *l >= 0)?;
                let piece = Piece::from_name(name).filter(|p| p.per_layer())?;
                Some((piece, Some(layer)))
            }
            None => Some((Piece::from_name(key).filter(|p| !p.per_layer())?, None)),
        }
    }

    /// The per-layer pieces, in state-dict order.
    pub fn of_layer() -> &'static [Piece] {
        &Piece::ALL[LAYER_PIECES]
    }
}

fn shape(sizes: &[Size], c: &Config, n_vocab: i64) -> Vec<i64> {
    sizes.iter().map(|s| s.of(c, n_vocab)).collect()
}

/// Every piece of a checkpoint, in state-dict order. Lazy: a config that claims a huge layer
/// count costs nothing until its pieces are read (and fail).
pub fn piece_keys(c: &Config) -> impl Iterator<Item = PieceKey> + '_ {
    let head = Piece::ALL[..LAYER_PIECES.start].iter().map(|&p| (p, None));
    let tail = Piece::ALL[LAYER_PIECES.end..].iter().map(|&p| (p, None));
    let layers = (0..c.n_layers).flat_map(|l| Piece::of_layer().iter().map(move |&p| (p, Some(l))));
    head.chain(layers).chain(tail)
}

/// Every piece of a checkpoint with its key and expected shape, in state-dict order (lazy).
pub fn pieces(c: &Config, n_vocab: i64) -> impl Iterator<Item = (String, Vec<i64>)> + '_ {
    piece_keys(c).map(move |(p, l)| (p.key(l), shape(p.sizes(), c, n_vocab)))
}

/// Checks a piece's stored shape against what the config claims. A disagreement is a false
/// claim (`Format`) naming the config keys of the axes that differ and the shape found.
pub fn check(c: &Config, n_vocab: i64, key: &str, stored: &[i64], origin: &str) -> Result<()> {
    let Some((piece, _)) = Piece::parse(key) else {
        return Ok(());
    };
    let expected = shape(piece.sizes(), c, n_vocab);
    let broadcast = piece.may_broadcast() && broadcasts(stored, &expected);
    if stored == expected.as_slice() || broadcast {
        return Ok(());
    }
    let axes: Vec<(i64, &str)> = expected
        .iter()
        .zip(piece.sizes())
        .map(|(&n, s)| (n, s.keys()))
        .collect();
    Err(err(
        ErrorKind::Format,
        format!(
            "{origin}: piece `{key}` has shape {stored:?}, but the config claims {expected:?} ({})",
            false_claims(stored, &axes)
        ),
    ))
}

/// The claims behind the axes (`(size, config key)`) that `stored` does not match, every one
/// when the ranks differ, as "`key` = size": what a false-claim message names.
pub fn false_claims(stored: &[i64], axes: &[(i64, &str)]) -> String {
    let rank_differs = stored.len() != axes.len();
    let claims: Vec<String> = axes
        .iter()
        .enumerate()
        .filter(|&(i, &(n, _))| rank_differs || stored.get(i) != Some(&n))
        .map(|(_, &(n, k))| format!("`{k}` = {n}"))
        .collect();
    claims.join(", ")
}

/// How many pieces `pieces` yields (saturating: only for progress reports).
pub fn piece_count(c: &Config) -> usize {
    (c.n_layers.max(0) as usize)
        .saturating_mul(PIECES_PER_LAYER)
        .saturating_add(Piece::ALL.len() - PIECES_PER_LAYER)
}

/// The layer a per-layer piece key belongs to (`xf_layers.{l}.…`).
pub fn layer_of(key: &str) -> Option<i64> {
    Piece::parse(key)?.1
}

/// The key whose presence shows that layer `l` exists.
pub fn layer_probe(l: i64) -> String {
    Piece::Ln1Weight.key(Some(l))
}

/// One value per piece of a model (its parameters, or pieces being processed), found by
/// index: no key is formatted or hashed. Grows with what is inserted, never from a claim.
#[derive(Debug)]
pub struct PieceMap<T> {
    model_wide: [Option<T>; 5],
    layers: Vec<[Option<T>; PIECES_PER_LAYER]>,
}

impl<T> Default for PieceMap<T> {
    fn default() -> Self {
        PieceMap {
            model_wide: Default::default(),
            layers: Vec::new(),
        }
    }
}

impl<T> PieceMap<T> {
    fn model_wide_index(piece: Piece) -> usize {
        let i = piece as usize;
        if i < LAYER_PIECES.start {
            i
        } else {
            i - PIECES_PER_LAYER
        }
    }

    /// The value of a piece, None when absent (or a layer past those inserted).
    pub fn get(&self, (piece, layer): PieceKey) -> Option<&T> {
        match layer {
            Some(l) if piece.per_layer() => self
                .layers
                .get(usize::try_from(l).ok()?)?
                .get(piece as usize - LAYER_PIECES.start)?
                .as_ref(),
            _ => self.model_wide[Self::model_wide_index(piece)].as_ref(),
        }
    }

    /// Sets a piece's value. Layers are added as they are reached, so inserting in state-dict
    /// order grows the map one layer at a time (a layer far past the last one is an error).
    pub fn insert(&mut self, (piece, layer): PieceKey, value: T) -> Result<()> {
        let slot = match layer {
            Some(l) if piece.per_layer() => {
                let l = usize::try_from(l).unwrap_or(usize::MAX);
                if l > self.layers.len() {
                    return Err(err(
                        ErrorKind::Internal,
                        format!(
                            "piece {} of layer {l} before layer {}",
                            piece.name(),
                            self.layers.len()
                        ),
                    ));
                }
                if l == self.layers.len() {
                    self.layers.try_reserve(1).map_err(|_| {
                        err(
                            ErrorKind::OutOfMemory,
                            format!("cannot allocate layer {l}'s pieces"),
                        )
                    })?;
                    self.layers.push(Default::default());
                }
                &mut self.layers[l][piece as usize - LAYER_PIECES.start]
            }
            _ => &mut self.model_wide[Self::model_wide_index(piece)],
        };
        *slot = Some(value);
        Ok(())
    }

    /// Every value held, for conversions applied to all of them.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.model_wide
            .iter_mut()
            .chain(self.layers.iter_mut().flatten())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_back_to_its_piece() {
        let c = Config::default();
        let keys: Vec<PieceKey> = piece_keys(&c).collect();
        assert_eq!(keys.len(), piece_count(&c));
        for (p, l) in keys {
            assert_eq!(Piece::parse(&p.key(l)), Some((p, l)), "{}", p.key(l));
        }
        assert_eq!(
            Piece::QWeight.key(Some(3)),
            "xf_layers.3.attn.q_proj.weight"
        );
        for bad in [
            "xf_layers.x.ln_1.weight",
            "xf_layers.-1.ln_1.weight",
            "xf_layers.0.unembed.weight",
            "ln_1.weight",
            "attn.bias",
        ] {
            assert_eq!(Piece::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_piece_map_grows_one_layer_at_a_time() {
        let mut m = PieceMap::default();
        m.insert((Piece::Unembed, None), 1).unwrap();
        m.insert((Piece::Ln1Weight, Some(0)), 2).unwrap();
        assert!(m.insert((Piece::Ln1Weight, Some(5)), 3).is_err());
        assert_eq!(m.get((Piece::Unembed, None)), Some(&1));
        assert_eq!(m.get((Piece::Ln1Weight, Some(0))), Some(&2));
        assert_eq!(m.get((Piece::Ln1Bias, Some(0))), None);
        assert_eq!(m.get((Piece::Ln1Weight, Some(1 << 40))), None);
        assert_eq!(m.values_mut().count(), 2);
    }
}
