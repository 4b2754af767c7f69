//! The tiktoken encodings a checkpoint may name in `enc`, and their vocabulary sizes.
use crate::error::{err, ErrorKind, Result};

/// `(name, n_vocab)`; "gpt2" shares r50k_base's ranks and special token.
pub const ENCODINGS: [(&str, i64); 6] = [
    ("gpt2", 50257),
    ("r50k_base", 50257),
    ("p50k_base", 50281),
    ("p50k_edit", 50284),
    ("cl100k_base", 100277),
    ("o200k_base", 200019),
];

/// The vocabulary size of a known encoding; an unknown name lists the known ones.
pub fn n_vocab(name: &str) -> Result<i64> {
    ENCODINGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let known: Vec<&str> = ENCODINGS.iter().map(|(n, _)| *n).collect();
            err(
                ErrorKind::Unsupported,
                format!("unknown encoding {name:?} (known: {})", known.join(", ")),
            )
        })
}
