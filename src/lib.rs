//! model_context: GPT-2-family transformer checkpoints (transformer-debugger layout) for C,
//! Julia and Go, with weights handed out as DLPack tensors.
//!
//! Layers, in folders, each using only those before it: file formats and `config.json`
//! (`model_context_formats`) and the tokenizer (`model_context_tokenizer`), both tch-free ->
//! the schema (`schema`: names, dimensions, weight and activation tables, state-dict layout)
//! -> checkpoint sources (`source`, and `source::convert` behind the `mc-convert` tool) -> the
//! model (`model`: forward, edits, objectives and gradients, decoding, sampling) -> the model
//! context (`context`, with weight processing) -> the C ABI (`ffi`), which converts arguments
//! and results around one core call each. `error`, `device` and `tensor` serve them all.
//! `tests/layering.rs` fails on a module cycle.
pub mod context;
pub mod device;
pub mod error;
pub mod ffi;
pub mod model;
pub mod schema;
pub mod source;
pub mod tensor;

/// `config.json` is a file format: read by the tch-free formats crate.
pub use model_context_formats::config;
/// The tokenizer lives in its own tch-free crate; these paths keep `crate::tokenizer` working.
pub use model_context_tokenizer::{encoding, parallel, tokenizer};

pub use context::{ModelContext, OpenOptions, StandardModelContext, StubModelContext};
pub use device::Device;
pub use error::{Error, ErrorKind, Result};
pub use schema::dims::Dimension;
pub use schema::weights::WeightLocation;
pub use tokenizer::Tokenizer;
