//! tch-free readers for the files a model_context checkpoint is made of.
//!
//! The main entry points read a `.pt` file written by Python `torch.save` (zip format) without
//! libtorch and without executing anything from its pickle: [`load_pt`], [`load_tensor`] and
//! [`load_pt_bytes`]. Stored records are zero-copy views into a private memory map.
//! [`load_safetensors`] reads Hugging Face `.safetensors` files the same way, and
//! [`save_tensor`] writes a single-tensor `.pt` file that Python's `torch.load` reads, and
//! [`config::Config`] reads and validates a TDB `config.json`.

#![warn(missing_docs)]

pub mod config;
pub mod dtype;
pub mod error;
pub mod pt;
pub mod safetensors;
pub mod storage;

pub use dtype::DType;
pub use error::{ErrorKind, FormatError};
pub use pt::{
    load_pt, load_pt_bytes, load_tensor, save_tensor, tensor_pt_bytes, write_tensor, PtValue,
    TensorRecord,
};
pub use safetensors::{load_safetensors, load_safetensors_bytes};
pub use storage::Storage;
