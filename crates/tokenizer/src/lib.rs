//! The tokenizer of model_context (spec section 4): tiktoken's encodings with the seed's
//! semantics, ids identical to Python `tiktoken`, in a crate of its own so that it builds and
//! fuzzes without libtorch.
//!
//! tiktoken-rs supplies each encoding's ranks and special tokens (it embeds the BPE files, so
//! nothing is downloaded). Encoding runs here, in two steps, both exact re-creations of
//! tiktoken's: pre-tokenization (`pretokenize`) and byte-pair merging of each piece (`bpe`,
//! over the rank table in `ranks`).
//!
//! Special tokens: `encode` allows `<|endoftext|>` (encoded as its id) and rejects text holding
//! any other special token of the encoding, as Python's `encode(text,
//! allowed_special={"<|endoftext|>"})` does. Text between special tokens is pre-tokenized on its
//! own (a `$` or look-ahead sees the end of that stretch), as in tiktoken.
//!
//! Parallelism: a long text is cut at positions where every one of the three expressions is
//! certain to end a piece (an ASCII letter followed by a space: letters are only ever matched by
//! runs that stop at a non-letter, and no piece crosses from a letter into a space), the parts
//! are encoded on threads that live for the call (`parallel`) and concatenated, so the result
//! is the sequential one. The batch call spreads texts over such threads.
//! `MC_TOKENIZER_THREADS` caps their number.
//!
//! Errors: text that is not UTF-8 is `InvalidArgument` with the offset of the first bad byte;
//! a disallowed special token, a token id outside the vocabulary (at or above n_vocab, or one of
//! the unused ids below it) and a string that is not exactly one token are `Token` errors.
mod bpe;
pub mod encoding;
pub mod error;
mod long;
pub mod parallel;
pub mod pretokenize;
mod ranks;
pub mod tokenizer;

pub use error::{Error, ErrorKind, Result};
pub use tokenizer::{Rank, Tokenizer, ENDOFTEXT};
