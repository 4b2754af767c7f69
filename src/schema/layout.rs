//! The TDB state-dict layout (spec section 1): every piece's key and expected shape, derived
//! from the config, so model creation and converters check pieces against one table.
use crate::config::Config;
use crate::error::{err, ErrorKind, Result};
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

/// Per-layer piece suffixes (under `xf_layers.{i}.`) and the sizes of their axes.
const PER_LAYER: [(&str, &[Size]); 16] = [
    ("ln_1.weight", &[Width]),
    ("ln_1.bias", &[Width]),
    ("attn.q_proj.weight", &[AttnQk, Width]),
    ("attn.q_proj.bias", &[AttnQk]),
    ("attn.k_proj.weight", &[AttnQk, Width]),
    ("attn.k_proj.bias", &[AttnQk]),
    ("attn.v_proj.weight", &[AttnV, Width]),
    ("attn.v_proj.bias", &[AttnV]),
    ("attn.out_proj.weight", &[Width, AttnV]),
    ("attn.out_proj.bias", &[Width]),
    ("ln_2.weight", &[Width]),
    ("ln_2.bias", &[Width]),
    ("mlp.in_layer.weight", &[Mlp, Width]),
    ("mlp.in_layer.bias", &[Mlp]),
    ("mlp.out_layer.weight", &[Width, Mlp]),
    ("mlp.out_layer.bias", &[Width]),
];
/// The pieces before the layers, and after them.
const HEAD: [(&str, &[Size]); 2] = [
    ("tok_embed.weight", &[Vocab, Width]),
    ("pos_embed.weight", &[Context, Width]),
];
const TAIL: [(&str, &[Size]); 3] = [
    ("final_ln.weight", &[Width]),
    ("final_ln.bias", &[Width]),
    ("unembed.weight", &[Vocab, Width]),
];

fn shape(sizes: &[Size], c: &Config, n_vocab: i64) -> Vec<i64> {
    sizes.iter().map(|s| s.of(c, n_vocab)).collect()
}

/// Every piece of a checkpoint with its expected shape, in state-dict order. Lazy: a config
/// that claims a huge layer count costs nothing until its pieces are read (and fail).
pub fn pieces(c: &Config, n_vocab: i64) -> impl Iterator<Item = (String, Vec<i64>)> + '_ {
    let fixed = |table: &'static [(&'static str, &'static [Size])]| {
        table
            .iter()
            .map(move |(k, sizes)| (k.to_string(), shape(sizes, c, n_vocab)))
    };
    let layers = (0..c.n_layers).flat_map(move |i| {
        PER_LAYER
            .iter()
            .map(move |(k, sizes)| (format!("xf_layers.{i}.{k}"), shape(sizes, c, n_vocab)))
    });
    fixed(&HEAD).chain(layers).chain(fixed(&TAIL))
}

/// The sizes of a piece's axes, None for a key outside the layout.
pub fn sizes(key: &str) -> Option<&'static [Size]> {
    let find = |table: &'static [(&'static str, &'static [Size])], name: &str| {
        table.iter().find(|(k, _)| *k == name).map(|(_, s)| *s)
    };
    match layer_of(key) {
        Some(_) => find(&PER_LAYER, key.splitn(3, '.').nth(2)?),
        None => find(&HEAD, key).or_else(|| find(&TAIL, key)),
    }
}

/// Checks a piece's stored shape against what the config claims. A disagreement is a false
/// claim (`Format`) naming the config keys of the axes that differ and the shape found.
pub fn check(c: &Config, n_vocab: i64, key: &str, stored: &[i64], origin: &str) -> Result<()> {
    let Some(sizes) = sizes(key) else {
        return Ok(());
    };
    let expected = shape(sizes, c, n_vocab);
    let broadcast = may_broadcast(key) && broadcasts(stored, &expected);
    if stored == expected.as_slice() || broadcast {
        return Ok(());
    }
    let claims: Vec<String> = sizes
        .iter()
        .zip(&expected)
        .enumerate()
        .filter(|&(i, (_, want))| stored.len() != expected.len() || stored.get(i) != Some(want))
        .map(|(_, (size, want))| format!("`{}` = {want}", size.keys()))
        .collect();
    Err(err(
        ErrorKind::Format,
        format!(
            "{origin}: piece `{key}` has shape {stored:?}, but the config claims {expected:?} ({})",
            claims.join(", ")
        ),
    ))
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
