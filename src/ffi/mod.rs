//! The C ABI, one module per C object (status, context, weights, tokens, model, forward
//! outputs, sampling, decoding states, DLPack) over shared helpers for arguments, buffers,
//! size-carrying structs and enums. Each entry point converts its arguments, calls one core
//! function and converts the result. Modules only use those listed before them.
#![allow(non_camel_case_types)]

pub mod abi_struct;
pub mod args;
pub mod buffers;
pub mod context;
pub mod dlpack;
pub mod enums;
pub mod forward;
pub mod model;
pub mod sample;
pub mod state;
pub mod status;
pub mod tokens;
pub mod weights;

/// The whole C surface in one path (`model_context::ffi::*`), for Rust callers and tests.
pub use {
    context::*, dlpack::*, enums::*, forward::*, model::*, sample::*, state::*, status::*,
    tokens::*, weights::*,
};
