//! The TDB state-dict layout (spec section 1): every piece's key and expected shape, derived
//! from the config, so model creation and converters check pieces against one table.
use crate::config::Config;

/// Per-layer piece suffixes (under `xf_layers.{i}.`) and their shapes.
fn per_layer(c: &Config) -> [(&'static str, Vec<i64>); 16] {
    let (d, qk, v, ff) = (c.d_model, c.d_attn_qk(), c.d_attn_v(), c.d_ff());
    [
        ("ln_1.weight", vec![d]),
        ("ln_1.bias", vec![d]),
        ("attn.q_proj.weight", vec![qk, d]),
        ("attn.q_proj.bias", vec![qk]),
        ("attn.k_proj.weight", vec![qk, d]),
        ("attn.k_proj.bias", vec![qk]),
        ("attn.v_proj.weight", vec![v, d]),
        ("attn.v_proj.bias", vec![v]),
        ("attn.out_proj.weight", vec![d, v]),
        ("attn.out_proj.bias", vec![d]),
        ("ln_2.weight", vec![d]),
        ("ln_2.bias", vec![d]),
        ("mlp.in_layer.weight", vec![ff, d]),
        ("mlp.in_layer.bias", vec![ff]),
        ("mlp.out_layer.weight", vec![d, ff]),
        ("mlp.out_layer.bias", vec![d]),
    ]
}

/// Every piece of a checkpoint with its expected shape, in state-dict order.
pub fn pieces(c: &Config, n_vocab: i64) -> Vec<(String, Vec<i64>)> {
    let d = c.d_model;
    let mut out = vec![
        ("tok_embed.weight".to_string(), vec![n_vocab, d]),
        ("pos_embed.weight".to_string(), vec![c.ctx_window, d]),
    ];
    for i in 0..c.n_layers {
        out.extend(
            per_layer(c)
                .into_iter()
                .map(|(k, s)| (format!("xf_layers.{i}.{k}"), s)),
        );
    }
    out.extend([
        ("final_ln.weight".to_string(), vec![d]),
        ("final_ln.bias".to_string(), vec![d]),
        ("unembed.weight".to_string(), vec![n_vocab, d]),
    ]);
    out
}

/// Pieces the model broadcasts, so they may be stored with fewer dimensions (a scalar gain).
pub fn may_broadcast(key: &str) -> bool {
    key == "final_ln.weight"
}
