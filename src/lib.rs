//! model_context: GPT-2-family transformer checkpoints (transformer-debugger layout) for C,
//! Julia and Go, with weights handed out as DLPack tensors.
//!
//! Layers, each depending only on those before it: file formats and `config.json`
//! (`model_context_formats`) and the tokenizer (`model_context_tokenizer`), both tch-free ->
//! checkpoint sources (`source`) -> the model context (`weights`, `dims`, `context`) -> the
//! model (forward, edits, gradients, decoding, sampling) -> the C ABI (`ffi`), which converts
//! arguments and results around one core call each. `tests/layering.rs` fails on a cycle.
//! `convert` writes any source out as a TDB folder (the `mc-convert` tool).
pub mod names;
pub mod processing;
pub mod sampling;

pub mod activations;
pub mod context;
pub mod convert;
pub mod decode;
pub mod device;
pub mod dims;
pub mod edits;
pub mod error;
pub mod ffi;
pub mod layout;
pub mod model;
pub mod objective;
pub mod source;
pub mod tensor;
pub mod weights;

/// `config.json` is a file format: read by the tch-free formats crate.
pub use model_context_formats::config;
/// The tokenizer lives in its own tch-free crate; these paths keep `crate::tokenizer` working.
pub use model_context_tokenizer::{encoding, parallel, tokenizer};

pub use context::{ModelContext, OpenOptions, StandardModelContext, StubModelContext};
pub use device::Device;
pub use dims::Dimension;
pub use error::{Error, ErrorKind, Result};
pub use tokenizer::Tokenizer;
pub use weights::WeightLocation;
