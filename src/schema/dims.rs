//! Model dimensions (spec section 2): the vocabulary shapes are spelled in.
use crate::named_enum;

named_enum! {
    /// A named axis of a weight or activation.
    pub enum Dimension {
        MaxContextLength = "max_context_length",
        ResidualStreamChannels = "residual_stream_channels",
        VocabSize = "vocab_size",
        AttnHeads = "attn_heads",
        QueryAndKeyChannels = "query_and_key_channels",
        ValueChannels = "value_channels",
        MlpActs = "mlp_acts",
        Layers = "layers",
        Singleton = "singleton",
        SequenceTokens = "sequence_tokens",
        AttendedToSequenceTokens = "attended_to_sequence_tokens",
        AutoencoderLatents = "autoencoder_latents",
    }
}

impl Dimension {
    /// This dimension's size in a model of config `c` (one table for the context and the
    /// model); None for the activation-only dimensions (sequence positions, latents).
    pub fn size_in(self, c: &crate::config::Config, n_vocab: i64) -> Option<i64> {
        use Dimension::*;
        Some(match self {
            MaxContextLength => c.ctx_window,
            ResidualStreamChannels => c.d_model,
            VocabSize => n_vocab,
            AttnHeads => c.n_heads,
            QueryAndKeyChannels => c.d_head_qk(),
            ValueChannels => c.d_head_v(),
            MlpActs => c.d_ff(),
            Layers => c.n_layers,
            Singleton => 1,
            SequenceTokens | AttendedToSequenceTokens | AutoencoderLatents => return None,
        })
    }
}

/// Whether a tensor of shape `from` broadcasts to `to` (numpy's rules).
pub fn broadcasts(from: &[i64], to: &[i64]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(f, t)| *f == 1 || f == t)
}

/// Which layers a request covers: the one check of a layer argument is the C ABI's conversion
/// into this, and every call derives what it needs from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layers {
    /// A model-wide location.
    None,
    One(i64),
    /// Every layer (weights stacked as `[n_layers, ...]`; activations of every layer run).
    All,
}

impl Layers {
    /// The layer of each key this covers among the layers `run`.
    pub fn expand(self, run: std::ops::Range<i64>) -> Vec<Option<i64>> {
        match self {
            Layers::None => vec![None],
            Layers::One(l) => vec![Some(l)],
            Layers::All => run.map(Some).collect(),
        }
    }

    /// The one layer (or none) of a call that takes a single location; `All` is an error
    /// naming `what`.
    pub fn single(self, what: &str) -> crate::error::Result<Option<i64>> {
        match self {
            Layers::None => Ok(None),
            Layers::One(l) => Ok(Some(l)),
            Layers::All => Err(crate::error::err(
                crate::error::ErrorKind::InvalidArgument,
                format!("`{what}` is MC_LAYER_ALL, but this takes one layer"),
            )),
        }
    }
}
