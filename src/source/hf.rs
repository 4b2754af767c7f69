//! A Hugging Face GPT-2 folder (`config.json` with `model_type` "gpt2" and `model.safetensors`,
//! a sharded `model.safetensors.index.json`, or `pytorch_model.bin`) served in the TDB layout
//! as spec section 7 converts it, without writing a converted copy: Conv1D weights (`[in,
//! out]`) become transposed views, `c_attn` is split into q/k/v views, `lm_head` is tied to
//! `wte`. Every piece is a view into the memory-mapped file (safetensors records, or the
//! `.bin`'s stored records), never a copy.
use super::PieceSource;
use crate::config::Config;
use crate::encoding;
use crate::error::{err, ErrorKind, Result};
use crate::schema::layout::{Piece, Piece::*};
use model_context_formats::{load_pt, load_safetensors, PtValue, TensorRecord};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The weight files a Hugging Face folder may hold, in the order they are preferred.
pub const WEIGHT_FILES: [&str; 3] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
];

/// A Hugging Face GPT-2 folder.
pub struct HfGpt2 {
    root: PathBuf,
    /// The weight file in use (one of `WEIGHT_FILES`), for messages.
    file: PathBuf,
    config: Config,
    /// `lm_head.weight` is `wte.weight` (HF's `tie_word_embeddings`, true by default).
    tied: bool,
    /// Every tensor of the weight file(s), by key without the `transformer.` prefix; read on
    /// first use (memory maps and headers only).
    tensors: once_cell::sync::OnceCell<HashMap<String, (TensorRecord, PathBuf)>>,
}

impl HfGpt2 {
    /// Opens `root`, reading `config.json` only. `config` is its parsed JSON object.
    pub fn open(root: &Path, config: &Map<String, Value>) -> Result<HfGpt2> {
        let origin = root.join("config.json").display().to_string();
        let file = WEIGHT_FILES
            .iter()
            .map(|f| root.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!(
                        "{}: a Hugging Face GPT-2 folder needs one of {} beside its config.json",
                        root.display(),
                        WEIGHT_FILES.join(", ")
                    ),
                )
            })?;
        let tied = match config.get("tie_word_embeddings") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(err(
                    ErrorKind::Format,
                    format!("{origin}: `tie_word_embeddings` must be true or false, got {v}"),
                ))
            }
        };
        Ok(HfGpt2 {
            root: root.to_path_buf(),
            file,
            config: config_from_hf(config, &origin)?,
            tied,
            tensors: once_cell::sync::OnceCell::new(),
        })
    }

    /// The weight file this folder is read from.
    pub fn weight_file(&self) -> &Path {
        &self.file
    }

    fn tensors(&self) -> Result<&HashMap<String, (TensorRecord, PathBuf)>> {
        self.tensors.get_or_try_init(|| {
            let mut out = HashMap::new();
            for path in self.weight_paths()? {
                let list = if path.extension().is_some_and(|e| e == "bin") {
                    match load_pt(&path)? {
                        PtValue::Dict(d) => d,
                        PtValue::Tensor(_) => {
                            return Err(err(
                                ErrorKind::Format,
                                format!(
                                    "{}: holds a single tensor, expected a state dict",
                                    path.display()
                                ),
                            ))
                        }
                    }
                } else {
                    load_safetensors(&path)?
                };
                for (key, rec) in list {
                    let key = key.strip_prefix("transformer.").unwrap_or(&key).to_string();
                    out.insert(key, (rec, path.clone()));
                }
            }
            Ok(out)
        })
    }

    /// The files holding tensors: the weight file, or the shards an index names.
    fn weight_paths(&self) -> Result<Vec<PathBuf>> {
        if !self.file.to_string_lossy().ends_with(".index.json") {
            return Ok(vec![self.file.clone()]);
        }
        let shown = self.file.display();
        let text = super::read_json_text(&self.file)?;
        let index: Value = serde_json::from_str(&text)
            .map_err(|e| err(ErrorKind::Format, format!("{shown}: malformed JSON: {e}")))?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                err(
                    ErrorKind::Format,
                    format!("{shown}: no `weight_map` object"),
                )
            })?;
        let mut shards: Vec<&str> = Vec::new();
        for (key, v) in map {
            let shard = v.as_str().ok_or_else(|| {
                err(
                    ErrorKind::Format,
                    format!("{shown}: weight_map[{key:?}] is {v}, expected a file name"),
                )
            })?;
            // A shard is a file beside the index, never a path elsewhere.
            let plain = !shard.is_empty()
                && !shard.starts_with('.')
                && !shard.contains(['/', '\\'])
                && shard.ends_with(".safetensors");
            if !plain {
                return Err(err(
                    ErrorKind::Format,
                    format!(
                        "{shown}: shard {shard:?} is not a .safetensors file name beside the index"
                    ),
                ));
            }
            if !shards.contains(&shard) {
                shards.push(shard);
            }
        }
        Ok(shards.into_iter().map(|s| self.root.join(s)).collect())
    }

    /// The Hugging Face tensor under `key` (without `transformer.`), checked against the
    /// sizes config.json claims for its axes (each with the config key it comes from): a
    /// disagreement is a false claim (`Format`) naming the keys of the axes that differ.
    fn hf(&self, key: &str, axes: &[(i64, &str)], piece: &str) -> Result<TensorRecord> {
        let (rec, path) = self.tensors()?.get(key).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!(
                    "{}: no tensor `{key}` (needed for the TDB piece `{piece}`)",
                    self.file.display()
                ),
            )
        })?;
        let shape: Vec<i64> = axes.iter().map(|&(n, _)| n).collect();
        if rec.shape != shape {
            return Err(err(
                ErrorKind::Format,
                format!(
                    "{}: `{key}` has shape {:?} but config.json claims {shape:?} ({}) (for the TDB piece `{piece}`)",
                    path.display(),
                    rec.shape,
                    crate::schema::layout::false_claims(&rec.shape, axes)
                ),
            ));
        }
        Ok(rec.clone())
    }
}

/// How one TDB piece is read from the Hugging Face tensors.
enum Rule {
    /// The tensor as it is.
    Same(String),
    /// A Conv1D weight `[in, out]`, transposed to `[out, in]`.
    Transposed(String),
    /// Part `j` of 3 along the output axis of `c_attn` (weight `[in, 3 out]` or bias `[3 out]`).
    QkvPart(String, i64),
}

/// The rule for a TDB state-dict key (spec sections 1 and 7), or None for an unknown key and
/// for the unembedding (tied or not: the caller decides).
fn rule(key: &str) -> Option<Rule> {
    use Rule::*;
    let (piece, layer) = Piece::parse(key)?;
    let h = |k: &str| format!("h.{}.{k}", layer.unwrap_or(0));
    Some(match piece {
        TokEmbed => Same("wte.weight".into()),
        PosEmbed => Same("wpe.weight".into()),
        FinalLnWeight => Same("ln_f.weight".into()),
        FinalLnBias => Same("ln_f.bias".into()),
        Unembed => return None,
        Ln1Weight | Ln1Bias | Ln2Weight | Ln2Bias => Same(h(piece.name())),
        QWeight => QkvPart(h("attn.c_attn.weight"), 0),
        KWeight => QkvPart(h("attn.c_attn.weight"), 1),
        VWeight => QkvPart(h("attn.c_attn.weight"), 2),
        QBias => QkvPart(h("attn.c_attn.bias"), 0),
        KBias => QkvPart(h("attn.c_attn.bias"), 1),
        VBias => QkvPart(h("attn.c_attn.bias"), 2),
        OutWeight => Transposed(h("attn.c_proj.weight")),
        OutBias => Same(h("attn.c_proj.bias")),
        MlpInWeight => Transposed(h("mlp.c_fc.weight")),
        MlpInBias => Same(h("mlp.c_fc.bias")),
        MlpOutWeight => Transposed(h("mlp.c_proj.weight")),
        MlpOutBias => Same(h("mlp.c_proj.bias")),
    })
}

impl PieceSource for HfGpt2 {
    fn config(&self) -> &Config {
        &self.config
    }

    fn load_piece(&self, key: &str) -> Result<TensorRecord> {
        let c = &self.config;
        let n_vocab = encoding::n_vocab(&c.enc)?;
        // Each size with the config.json key it comes from (`n_inner` is 4 * `n_embd` when
        // absent; the attention width is `n_embd`).
        let d = (c.d_model, "n_embd");
        let attn = (c.d_attn_qk(), "n_embd");
        let ff = (c.d_ff(), "n_inner (or 4 * n_embd)");
        let vocab = (n_vocab, "vocab_size");
        let ctx = (c.ctx_window, "n_positions");
        let view_err = |e: model_context_formats::FormatError| {
            err(
                ErrorKind::Shape,
                format!("{}: TDB piece `{key}`: {}", self.file.display(), e.message),
            )
        };
        if Piece::parse(key) == Some((Unembed, None)) {
            // Tied (the default): the unembedding is the token embedding, as HF's model
            // uses it whatever a `lm_head.weight` in the file holds.
            let k = if self.tied {
                "wte.weight"
            } else {
                "lm_head.weight"
            };
            return self.hf(k, &[vocab, d], key);
        }
        let rule = rule(key).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!(
                    "{}: no TDB piece `{key}` in a GPT-2 checkpoint",
                    self.root.display()
                ),
            )
        })?;
        match rule {
            Rule::Same(k) => {
                let shape = match k.as_str() {
                    "wte.weight" => vec![vocab, d],
                    "wpe.weight" => vec![ctx, d],
                    _ if k.ends_with("mlp.c_fc.bias") => vec![ff],
                    _ => vec![d],
                };
                self.hf(&k, &shape, key)
            }
            Rule::Transposed(k) => {
                let shape = if k.ends_with("mlp.c_fc.weight") {
                    vec![d, ff]
                } else if k.ends_with("mlp.c_proj.weight") {
                    vec![ff, d]
                } else {
                    vec![attn, d]
                };
                self.hf(&k, &shape, key)?.transposed(0, 1).map_err(view_err)
            }
            Rule::QkvPart(k, j) => {
                if k.ends_with(".weight") {
                    let w = self.hf(&k, &[d, (attn.0.saturating_mul(3), "3 * n_embd")], key)?;
                    w.narrowed(1, j * attn.0, attn.0)
                        .and_then(|p| p.transposed(0, 1))
                        .map_err(view_err)
                } else {
                    let b = self.hf(&k, &[(attn.0.saturating_mul(3), "3 * n_embd")], key)?;
                    b.narrowed(0, j * attn.0, attn.0).map_err(view_err)
                }
            }
        }
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    /// From the weight file's tensor list (headers only), so a layer count that the file does
    /// not hold is caught at open; None when the list cannot be read (the read fails later).
    fn has_piece(&self, key: &str) -> Option<bool> {
        let hf_key = match rule(key)? {
            Rule::Same(k) | Rule::Transposed(k) | Rule::QkvPart(k, _) => k,
        };
        Some(self.tensors().ok()?.contains_key(&hf_key))
    }
}

/// GPT-2's config defaults (transformers' `GPT2Config`), for keys a config.json leaves out.
const DEFAULT_INTS: [(&str, i64); 5] = [
    ("vocab_size", 50257),
    ("n_positions", 1024),
    ("n_embd", 768),
    ("n_layer", 12),
    ("n_head", 12),
];

/// Maps a Hugging Face GPT-2 config onto the TDB config (spec section 7); what the TDB
/// layout cannot represent is an error naming the field.
pub fn config_from_hf(obj: &Map<String, Value>, origin: &str) -> Result<Config> {
    let unrepresentable = |field: &str, why: String| {
        err(
            ErrorKind::Unsupported,
            format!("{origin}: `{field}` {why}: the TDB layout cannot represent this model"),
        )
    };
    match obj.get("model_type").and_then(Value::as_str) {
        Some("gpt2") => {}
        other => {
            return Err(err(
                ErrorKind::Unsupported,
                format!(
                    "{origin}: `model_type` is {}, only \"gpt2\" is supported",
                    other.map_or("missing".into(), |t| format!("{t:?}"))
                ),
            ))
        }
    }
    let int = |key: &str| -> Result<i64> {
        let default = DEFAULT_INTS
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v);
        match (obj.get(key), default) {
            (None, Some(d)) => Ok(d),
            (Some(v), _) => v.as_i64().filter(|&n| n > 0).ok_or_else(|| {
                err(
                    ErrorKind::Format,
                    format!("{origin}: `{key}` must be a positive integer, got {v}"),
                )
            }),
            (None, None) => Err(err(ErrorKind::Format, format!("{origin}: `{key}` missing"))),
        }
    };
    let (n_embd, n_head) = (int("n_embd")?, int("n_head")?);
    let act = obj.get("activation_function");
    if let Some(v) = act.filter(|v| v.as_str() != Some("gelu_new")) {
        return Err(unrepresentable(
            "activation_function",
            format!("is {v}, not \"gelu_new\" (the tanh GELU TDB uses)"),
        ));
    }
    if let Some(v) = obj.get("layer_norm_epsilon") {
        if v.as_f64() != Some(1e-5) {
            return Err(unrepresentable(
                "layer_norm_epsilon",
                format!("is {v}, not 1e-5 (the epsilon TDB uses)"),
            ));
        }
    }
    for (field, expected) in [
        ("scale_attn_weights", true),
        ("scale_attn_by_inverse_layer_idx", false),
        ("reorder_and_upcast_attn", false),
        ("add_cross_attention", false),
    ] {
        match obj.get(field) {
            None => {}
            Some(Value::Bool(b)) if *b == expected => {}
            Some(v) => return Err(unrepresentable(field, format!("is {v}, not {expected}"))),
        }
    }
    let n_inner = match obj.get("n_inner") {
        None | Some(Value::Null) => n_embd.checked_mul(4).ok_or_else(|| {
            err(
                ErrorKind::Format,
                format!("{origin}: `n_embd` = {n_embd} is too large (its MLP width 4 * n_embd overflows)"),
            )
        })?,
        Some(_) => int("n_inner")?,
    };
    let m_mlp = n_inner as f64 / n_embd as f64;
    if (n_embd as f64 * m_mlp) as i64 != n_inner {
        return Err(unrepresentable(
            "n_inner",
            format!("= {n_inner} is not int(n_embd * (n_inner / n_embd)) in floating point"),
        ));
    }
    if n_embd % n_head != 0 {
        return Err(err(
            ErrorKind::Format,
            format!("{origin}: `n_head` = {n_head} does not divide `n_embd` = {n_embd}"),
        ));
    }
    let config = Config {
        enc: "gpt2".into(),
        ctx_window: int("n_positions")?,
        d_model: n_embd,
        n_layers: int("n_layer")?,
        m_attn: 1.0,
        n_heads: n_head,
        m_mlp,
    };
    let vocab = int("vocab_size")?;
    let n_vocab = encoding::n_vocab(&config.enc)?;
    if vocab != n_vocab {
        return Err(unrepresentable(
            "vocab_size",
            format!("is {vocab}, not the {n_vocab} tokens of the gpt2 encoding"),
        ));
    }
    Ok(config.validated(origin)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<Config> {
        let v: Value = serde_json::from_str(json).unwrap();
        config_from_hf(v.as_object().unwrap(), "c.json")
    }

    #[test]
    fn gpt2_defaults_map_to_gpt2_small() {
        let c = cfg(r#"{"model_type": "gpt2"}"#).unwrap();
        assert_eq!(
            (
                c.enc.as_str(),
                c.ctx_window,
                c.d_model,
                c.n_layers,
                c.n_heads,
                c.m_attn,
                c.m_mlp
            ),
            ("gpt2", 1024, 768, 12, 12, 1.0, 4.0)
        );
        let c = cfg(r#"{"model_type": "gpt2", "n_embd": 48, "n_head": 3, "n_inner": 144, "n_positions": 32, "n_layer": 1}"#).unwrap();
        assert_eq!((c.d_ff(), c.d_head_qk(), c.ctx_window), (144, 16, 32));
    }

    #[test]
    fn unrepresentable_fields_are_named() {
        for (json, field) in [
            (
                r#"{"model_type": "gpt2", "activation_function": "relu"}"#,
                "activation_function",
            ),
            (
                r#"{"model_type": "gpt2", "layer_norm_epsilon": 1e-6}"#,
                "layer_norm_epsilon",
            ),
            (
                r#"{"model_type": "gpt2", "scale_attn_by_inverse_layer_idx": true}"#,
                "scale_attn_by_inverse_layer_idx",
            ),
            (
                r#"{"model_type": "gpt2", "reorder_and_upcast_attn": true}"#,
                "reorder_and_upcast_attn",
            ),
            (
                r#"{"model_type": "gpt2", "scale_attn_weights": false}"#,
                "scale_attn_weights",
            ),
            (r#"{"model_type": "gpt2", "vocab_size": 100}"#, "vocab_size"),
            (
                r#"{"model_type": "gpt2", "add_cross_attention": true}"#,
                "add_cross_attention",
            ),
        ] {
            let e = cfg(json).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported, "{}", e.message);
            assert!(e.message.contains(&format!("`{field}`")), "{}", e.message);
            assert!(e.message.starts_with("c.json: "), "{}", e.message);
        }
        let e = cfg(r#"{"model_type": "llama"}"#).unwrap_err();
        assert!(e.message.contains("llama"), "{}", e.message);
        let e = cfg(r#"{"model_type": "gpt2", "n_embd": 10, "n_head": 3}"#).unwrap_err();
        assert!(e.message.contains("`n_head` = 3"), "{}", e.message);
        let e = cfg(r#"{"model_type": "gpt2", "n_layer": 0}"#).unwrap_err();
        assert!(e.message.contains("`n_layer`"), "{}", e.message);
    }

    #[test]
    fn rules_cover_every_tdb_piece() {
        let c = Config::default();
        for (key, _) in crate::schema::layout::pieces(&c, 50257) {
            if key != "unembed.weight" {
                assert!(rule(&key).is_some(), "{key}");
            }
        }
        assert!(rule("xf_layers.x.ln_1.weight").is_none());
        assert!(rule("xf_layers.0.attn.bias").is_none());
    }
}
