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

/// Every piece of a checkpoint with its expected shape, in state-dict order. Lazy: a config
/// that claims a huge layer count costs nothing until its pieces are read (and fail).
pub fn pieces(c: &Config, n_vocab: i64) -> impl Iterator<Item = (String, Vec<i64>)> + '_ {
    let d = c.d_model;
    let head = [
        ("tok_embed.weight".to_string(), vec![n_vocab, d]),
        ("pos_embed.weight".to_string(), vec![c.ctx_window, d]),
    ];
    let layers = (0..c.n_layers).flat_map(move |i| {
        per_layer(c)
            .into_iter()
            .map(move |(k, s)| (format!("xf_layers.{i}.{k}"), s))
    });
    let tail = [
        ("final_ln.weight".to_string(), vec![d]),
        ("final_ln.bias".to_string(), vec![d]),
        ("unembed.weight".to_string(), vec![n_vocab, d]),
    ];
    head.into_iter().chain(layers).chain(tail)
}

/// How many pieces `pieces` yields (saturating: only for progress reports).
pub fn piece_count(c: &Config) -> usize {
    (c.n_layers.max(0) as usize)
        .saturating_mul(16)
        .saturating_add(5)
}

/// The layer a per-layer piece key belongs to (`xf_layers.{l}.…`).
pub fn layer_of(key: &str) -> Option<i64> {
    key.strip_prefix("xf_layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The key whose presence shows that layer `l` exists.
pub fn layer_probe(l: i64) -> String {
    format!("xf_layers.{l}.ln_1.weight")
}

/// Pieces the model broadcasts, so they may be stored with fewer dimensions (a scalar gain).
pub fn may_broadcast(key: &str) -> bool {
    key == "final_ln.weight"
}
