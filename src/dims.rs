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
