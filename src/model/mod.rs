//! The model: the forward pass with its activations exposed (`forward`), edits during it
//! (`edits`), objectives and their gradients (`objective`), incremental decoding with a
//! key-value cache (`decode`) and sampling (`sampling`), every weight product through
//! `product` (through the few-row kernels of `gemv` or oneDNN by `packed` where faster; `cpp`
//! bridges to their C++ half).
pub(crate) mod cpp;
pub mod decode;
pub mod edits;
pub mod forward;
pub mod gemv;
pub mod objective;
pub mod packed;
pub mod product;
pub mod sampling;

pub use forward::*;
