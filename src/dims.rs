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
