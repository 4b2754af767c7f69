//! Activation locations (spec section 6): what a forward pass can expose, with each one's
//! per-sequence shape and whether it exists once per layer or once per model.
use crate::named_enum;
use crate::schema::dims::Dimension::{self, *};

named_enum! {
    /// An activation location; the order is the C constants' order.
    pub enum Activation {
        ResidPostEmb = "resid.post_emb",
        ResidDeltaAttn = "resid.delta_attn",
        ResidPostAttn = "resid.post_attn",
        ResidDeltaMlp = "resid.delta_mlp",
        ResidPostMlp = "resid.post_mlp",
        AttnLnScale = "attn_ln.scale",
        MlpLnScale = "mlp_ln.scale",
        ResidLnFScale = "resid.ln_f.scale",
        ResidPostAttnLn = "resid.post_attn_ln",
        ResidPostMlpLn = "resid.post_mlp_ln",
        ResidPostLnF = "resid.post_ln_f",
        AttnQ = "attn.q",
        AttnK = "attn.k",
        AttnV = "attn.v",
        AttnQkLogits = "attn.qk_logits",
        AttnQkProbs = "attn.qk_probs",
        AttnVOut = "attn.v_out",
        MlpPreAct = "mlp.pre_act",
        MlpPostAct = "mlp.post_act",
        Logits = "logits",
    }
}

impl Activation {
    /// Model-wide locations take no layer; the others exist in every block.
    pub fn per_layer(self) -> bool {
        !matches!(
            self,
            Activation::ResidPostEmb
                | Activation::ResidLnFScale
                | Activation::ResidPostLnF
                | Activation::Logits
        )
    }

    /// The per-sequence shape; results carry a leading batch axis.
    pub fn shape(self) -> &'static [Dimension] {
        use Activation::*;
        match self {
            ResidPostEmb | ResidDeltaAttn | ResidPostAttn | ResidDeltaMlp | ResidPostMlp
            | ResidPostAttnLn | ResidPostMlpLn | ResidPostLnF => {
                &[SequenceTokens, ResidualStreamChannels]
            }
            AttnLnScale | MlpLnScale | ResidLnFScale => &[SequenceTokens, Singleton],
            AttnQ => &[SequenceTokens, AttnHeads, QueryAndKeyChannels],
            AttnK => &[AttendedToSequenceTokens, AttnHeads, QueryAndKeyChannels],
            AttnV => &[AttendedToSequenceTokens, AttnHeads, ValueChannels],
            AttnQkLogits | AttnQkProbs => &[SequenceTokens, AttendedToSequenceTokens, AttnHeads],
            AttnVOut => &[SequenceTokens, AttnHeads, ValueChannels],
            MlpPreAct | MlpPostAct => &[SequenceTokens, MlpActs],
            Logits => &[SequenceTokens, VocabSize],
        }
    }
}
