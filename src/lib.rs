//! model_context: GPT-2-family transformer checkpoints (transformer-debugger layout) for C,
//! Julia and Go, with weights handed out as DLPack tensors.
//!
//! Layers, each depending only on those before it: file formats (`model_context_formats`,
//! `config`) -> checkpoint sources (`source`) -> the model context (`weights`, `dims`,
//! `context`) -> the C ABI (`ffi`), which holds no logic of its own. `convert` writes any
//! source out as a TDB folder (the `mc-convert` tool).
pub mod names;
pub mod processing;
pub mod sampling;

pub mod activations;
pub mod config;
pub mod context;
pub mod convert;
pub mod decode;
pub mod device;
pub mod dims;
pub mod edits;
pub mod encoding;
pub mod error;
pub mod ffi;
pub mod layout;
pub mod model;
pub mod objective;
pub mod parallel;
pub mod source;
pub mod tensor;
pub mod tokenizer;
pub mod weights;

pub use context::{ModelContext, OpenOptions, StandardModelContext, StubModelContext};
pub use device::Device;
pub use dims::Dimension;
pub use error::{Error, ErrorKind, Result};
pub use tokenizer::Tokenizer;
pub use weights::WeightLocation;
