//! The TDB `config.json` (spec section 1): seven keys with defaults, strictly validated,
//! because every shape the library checks is derived from it.
use crate::error::{ErrorKind, ErrorKind::Format, FormatError};
use serde_json::{Map, Value};

type Result<T> = std::result::Result<T, FormatError>;

fn err(kind: ErrorKind, message: String) -> FormatError {
    FormatError::new(kind, message)
}

/// A validated transformer configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The tiktoken encoding's name.
    pub enc: String,
    /// Positions the model attends over.
    pub ctx_window: i64,
    /// Residual stream width.
    pub d_model: i64,
    /// Transformer blocks.
    pub n_layers: i64,
    /// Attention width as a multiple of `d_model`.
    pub m_attn: f64,
    /// Attention heads per layer.
    pub n_heads: i64,
    /// MLP width as a multiple of `d_model`.
    pub m_mlp: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enc: "gpt2".into(),
            ctx_window: 1024,
            d_model: 256,
            n_layers: 2,
            m_attn: 1.0,
            n_heads: 8,
            m_mlp: 4.0,
        }
    }
}

const KEYS: [&str; 7] = [
    "enc",
    "ctx_window",
    "d_model",
    "n_layers",
    "m_attn",
    "n_heads",
    "m_mlp",
];

fn int_field(obj: &Map<String, Value>, key: &str, default: i64, origin: &str) -> Result<i64> {
    match obj.get(key) {
        None => Ok(default),
        Some(v) => match v.as_i64() {
            Some(n) if n > 0 => Ok(n),
            _ => Err(err(
                Format,
                format!("{origin}: `{key}` must be a positive integer, got {v}"),
            )),
        },
    }
}

fn float_field(obj: &Map<String, Value>, key: &str, default: f64, origin: &str) -> Result<f64> {
    match obj.get(key) {
        None => Ok(default),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            _ => Err(err(
                Format,
                format!("{origin}: `{key}` must be a positive number, got {v}"),
            )),
        },
    }
}

impl Config {
    /// Parses and validates `config.json` text; `origin` (a path or URL) prefixes every message.
    pub fn from_json(text: &str, origin: &str) -> Result<Config> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| err(Format, format!("{origin}: malformed JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| err(Format, format!("{origin}: expected a JSON object")))?;
        if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(err(
                Format,
                format!("{origin}: unknown key `{k}` (known: {})", KEYS.join(", ")),
            ));
        }
        let d = Config::default();
        let enc = match obj.get("enc") {
            None => d.enc,
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(err(
                    Format,
                    format!("{origin}: `enc` must be a string, got {v}"),
                ))
            }
        };
        let cfg = Config {
            enc,
            ctx_window: int_field(obj, "ctx_window", d.ctx_window, origin)?,
            d_model: int_field(obj, "d_model", d.d_model, origin)?,
            n_layers: int_field(obj, "n_layers", d.n_layers, origin)?,
            m_attn: float_field(obj, "m_attn", d.m_attn, origin)?,
            n_heads: int_field(obj, "n_heads", d.n_heads, origin)?,
            m_mlp: float_field(obj, "m_mlp", d.m_mlp, origin)?,
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Checks a config built in code (e.g. mapped from another format) as `from_json` does.
    pub fn validated(self, origin: &str) -> Result<Config> {
        self.validate(origin)?;
        Ok(self)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        for (what, width) in [("d_attn_qk", self.d_attn_qk()), ("d_ff", self.d_ff())] {
            if width <= 0 {
                return Err(err(
                    Format,
                    format!("{origin}: {what} = {width} is not positive"),
                ));
            }
        }
        if self.d_attn_qk() % self.n_heads != 0 {
            return Err(err(
                Format,
                format!(
                    "{origin}: n_heads = {} does not divide d_attn = int(d_model * m_attn) = {}",
                    self.n_heads,
                    self.d_attn_qk()
                ),
            ));
        }
        Ok(())
    }

    /// `int(d_model * m_mlp)`, truncating as Python's `int` does.
    pub fn d_ff(&self) -> i64 {
        (self.d_model as f64 * self.m_mlp) as i64
    }
    /// `int(d_model * m_attn)`: the width of queries and keys over all heads.
    pub fn d_attn_qk(&self) -> i64 {
        (self.d_model as f64 * self.m_attn) as i64
    }
    /// The width of values over all heads (equal to `d_attn_qk` in this family).
    pub fn d_attn_v(&self) -> i64 {
        self.d_attn_qk()
    }
    /// One head's query and key width.
    pub fn d_head_qk(&self) -> i64 {
        self.d_attn_qk() / self.n_heads
    }
    /// One head's value width.
    pub fn d_head_v(&self) -> i64 {
        self.d_attn_v() / self.n_heads
    }

    /// Exactly the seven keys, as the seed's `get_model_config_as_dict` reports them.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "enc": self.enc,
            "ctx_window": self.ctx_window,
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "m_attn": self.m_attn,
            "n_heads": self.n_heads,
            "m_mlp": self.m_mlp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_absent_keys() {
        let c = Config::from_json("{}", "t").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!((c.d_ff(), c.d_head_qk()), (1024, 32));
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        let e = Config::from_json(r#"{"d_modl": 3}"#, "t").unwrap_err();
        assert!(e.message.contains("d_modl"), "{}", e.message);
        let e = Config::from_json(r#"{"d_model": 10, "n_heads": 3}"#, "t").unwrap_err();
        assert!(e.message.contains("n_heads = 3"), "{}", e.message);
        let e = Config::from_json(r#"{"n_layers": -1}"#, "t").unwrap_err();
        assert!(e.message.contains("n_layers"), "{}", e.message);
        assert!(Config::from_json("[", "t").is_err());
    }

    /// Found by the config_json fuzz target: a long literal parsed one ulp away from the
    /// correctly rounded value (what Python's json gives), so the config did not survive its
    /// own `to_json`.
    #[test]
    fn long_number_literals_parse_correctly_rounded() {
        let literal = format!("{}5.5", "2".to_string() + &"5".repeat(102));
        let text = format!(
            r#"{{"enc": "gpt2", "d_model": 24, "n_layers": 3, "n_heads": 3, "ctx_window": 4, "m_attn": 1.5, "m_mlp": {literal}}}"#
        );
        let c = Config::from_json(&text, "t").unwrap();
        assert_eq!(c.m_mlp, literal.parse::<f64>().unwrap());
        assert_eq!(c.m_mlp, 2.5555555555555554e103);
        assert_eq!(Config::from_json(&c.to_json().to_string(), "t").unwrap(), c);
        for lit in [
            "0.30000000000000004441",
            "1.00000000000000011102230246251565404",
            "3.999999999999999999999",
        ] {
            let c = Config::from_json(&format!(r#"{{"m_attn": 1, "m_mlp": {lit}}}"#), "t").unwrap();
            assert_eq!(c.m_mlp, lit.parse::<f64>().unwrap(), "{lit}");
        }
    }

    #[test]
    fn m_attn_scales_attention_width() {
        let c = Config::from_json(r#"{"d_model": 48, "m_attn": 0.5, "n_heads": 3}"#, "t").unwrap();
        assert_eq!((c.d_attn_qk(), c.d_head_qk(), c.d_head_v()), (24, 8, 8));
    }
}
