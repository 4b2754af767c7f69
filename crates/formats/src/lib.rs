//! tch-free readers for the files a model_context checkpoint is made of.
//!
//! The main entry points read a `.pt` file written by Python `torch.save` (zip format) without
//! libtorch and without executing anything from its pickle: [`load_pt`], [`load_tensor`] and
//! [`load_pt_bytes`]. Stored records are zero-copy views into a private memory map.

#![warn(missing_docs)]

pub mod dtype;
pub mod error;
pub mod pt;
pub mod storage;

pub use dtype::DType;
pub use error::{ErrorKind, FormatError};
pub use pt::{load_pt, load_pt_bytes, load_tensor, PtValue, TensorRecord};
pub use storage::Storage;
