//! The weight table (spec section 3): where each location's tensor is stored and how the
//! stored piece becomes the standard shape. One row per location, keyed by the seed's names.
use crate::named_enum;
use crate::schema::dims::Dimension::{self, *};
use crate::schema::layout::Piece::{self, *};

named_enum! {
    /// A weight location; the order is the C constants' order.
    pub enum WeightLocation {
        MlpToHidden = "mlp.to_hidden",
        MlpToResidual = "mlp.to_residual",
        Embedding = "embedding",
        Unembedding = "unembedding",
        PositionEmbedding = "position_embedding",
        AttnToQuery = "attn.to_query",
        AttnToKey = "attn.to_key",
        AttnToValue = "attn.to_value",
        AttnToResidual = "attn.to_residual",
        LayerNormGainFinal = "layer_norm_gain.final",
        LayerNormBiasFinal = "layer_norm_bias.final",
        LayerNormGainPreAttn = "layer_norm_gain.pre_attn",
        LayerNormGainPreMlp = "layer_norm_gain.pre_mlp",
        // Beyond the seed (appended, so the seed's constants keep their values).
        AttnQueryBias = "attn.query_bias",
        AttnKeyBias = "attn.key_bias",
        AttnValueBias = "attn.value_bias",
        AttnResidualBias = "attn.residual_bias",
        MlpHiddenBias = "mlp.hidden_bias",
        MlpResidualBias = "mlp.residual_bias",
        LayerNormBiasPreAttn = "layer_norm_bias.pre_attn",
        LayerNormBiasPreMlp = "layer_norm_bias.pre_mlp",
    }
}

/// How one location is read: the piece, the head split, the axis permutation and the shape.
#[derive(Debug)]
pub struct WeightSpec {
    /// The state-dict piece; whether it is per-layer and broadcast comes with it.
    pub piece: Piece,
    /// Axis of the stored piece split into `(n_heads, size / n_heads)`.
    pub split_heads: Option<usize>,
    /// Einsum-style permutation applied after the split, as the seed writes it.
    pub reshape: Option<&'static str>,
    pub shape: &'static [Dimension],
}

impl WeightSpec {
    /// Whether the location takes a layer (its piece is per-layer).
    pub fn per_layer(&self) -> bool {
        self.piece.per_layer()
    }
}

const fn row(
    piece: Piece,
    split_heads: Option<usize>,
    reshape: Option<&'static str>,
    shape: &'static [Dimension],
) -> WeightSpec {
    WeightSpec {
        piece,
        split_heads,
        reshape,
        shape,
    }
}

/// Rows in `WeightLocation` order.
#[rustfmt::skip]
static TABLE: [WeightSpec; 21] = [
    row(MlpInWeight, None, Some("hr->rh"), &[ResidualStreamChannels, MlpActs]),
    row(MlpOutWeight, None, Some("rh->hr"), &[MlpActs, ResidualStreamChannels]),
    row(TokEmbed, None, None, &[VocabSize, ResidualStreamChannels]),
    row(Unembed, None, Some("vr->rv"), &[ResidualStreamChannels, VocabSize]),
    row(PosEmbed, None, None, &[MaxContextLength, ResidualStreamChannels]),
    row(QWeight, Some(0), Some("hqr->hrq"), &[AttnHeads, ResidualStreamChannels, QueryAndKeyChannels]),
    row(KWeight, Some(0), Some("hkr->hrk"), &[AttnHeads, ResidualStreamChannels, QueryAndKeyChannels]),
    row(VWeight, Some(0), Some("hvr->hrv"), &[AttnHeads, ResidualStreamChannels, ValueChannels]),
    row(OutWeight, Some(1), Some("rhv->hvr"), &[AttnHeads, ValueChannels, ResidualStreamChannels]),
    row(FinalLnWeight, None, None, &[ResidualStreamChannels]),
    row(FinalLnBias, None, None, &[ResidualStreamChannels]),
    row(Ln1Weight, None, None, &[ResidualStreamChannels]),
    row(Ln2Weight, None, None, &[ResidualStreamChannels]),
    row(QBias, Some(0), None, &[AttnHeads, QueryAndKeyChannels]),
    row(KBias, Some(0), None, &[AttnHeads, QueryAndKeyChannels]),
    row(VBias, Some(0), None, &[AttnHeads, ValueChannels]),
    row(OutBias, None, None, &[ResidualStreamChannels]),
    row(MlpInBias, None, None, &[MlpActs]),
    row(MlpOutBias, None, None, &[ResidualStreamChannels]),
    row(Ln1Bias, None, None, &[ResidualStreamChannels]),
    row(Ln2Bias, None, None, &[ResidualStreamChannels]),
];

impl WeightLocation {
    pub fn spec(self) -> &'static WeightSpec {
        &TABLE[self as usize]
    }

    /// The state-dict key of this location's piece for `layer`.
    pub fn piece_name(self, layer: Option<i64>) -> String {
        self.spec().piece.key(layer)
    }

    /// The axis where `dim` stands in this location's shape, if it stands there exactly once.
    pub fn axis_of(self, dim: Dimension) -> Option<usize> {
        let shape = self.spec().shape;
        let mut hits = shape.iter().enumerate().filter(|(_, d)| **d == dim);
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }
}

/// Turns an einsum permutation such as `"hqr->hrq"` into the axis order `[0, 2, 1]`.
pub fn permutation(reshape: &str) -> Vec<i64> {
    let (input, output) = reshape.split_once("->").unwrap_or((reshape, reshape));
    output
        .chars()
        .map(|c| input.find(c).map_or(0, |i| i as i64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_follow_the_enum_and_names_round_trip() {
        assert_eq!(WeightLocation::ALL.len(), TABLE.len());
        for &loc in WeightLocation::ALL {
            assert_eq!(WeightLocation::from_name(loc.name()), Some(loc));
            let spec = loc.spec();
            if let Some(r) = spec.reshape {
                assert_eq!(permutation(r).len(), spec.shape.len(), "{}", loc.name());
            }
        }
        assert_eq!(WeightLocation::from_index(21), None);
        assert_eq!(WeightLocation::from_index(-1), None);
    }

    #[test]
    fn permutations_match_the_seed_einsums() {
        assert_eq!(permutation("hqr->hrq"), vec![0, 2, 1]);
        assert_eq!(permutation("rhv->hvr"), vec![1, 2, 0]);
        assert_eq!(permutation("hr->rh"), vec![1, 0]);
    }

    #[test]
    fn piece_names_and_axes() {
        assert_eq!(
            WeightLocation::AttnToQuery.piece_name(Some(3)),
            "xf_layers.3.attn.q_proj.weight"
        );
        assert_eq!(
            WeightLocation::Embedding.piece_name(None),
            "tok_embed.weight"
        );
        assert_eq!(WeightLocation::AttnToQuery.axis_of(AttnHeads), Some(0));
        assert_eq!(WeightLocation::AttnToQuery.axis_of(MlpActs), None);
    }
}
