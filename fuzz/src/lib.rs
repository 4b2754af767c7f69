//! The parts of the main crate that read untrusted text, compiled here without libtorch.
//!
//! `model_context` links libtorch (through tch), which makes an instrumented fuzz build slow and
//! its binaries heavy. `config.rs`, `encoding.rs` and `tokenizer.rs` need nothing from it but
//! the crate's error type, so they are compiled here from the main crate's own source files
//! (by path: the very code the library ships, not a copy) over a stand-in `error` module with
//! the same items. If one of them starts using another module of the main crate, this build
//! fails and the stand-in must grow.

/// Stand-in for `src/error.rs`: the same names, without the `tch::TchError` conversion.
pub mod error {
    /// The class of a failure (the main crate's classes).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ErrorKind {
        NullArgument,
        InvalidArgument,
        NotFound,
        Io,
        Format,
        Forbidden,
        Shape,
        Device,
        Token,
        Unsupported,
        BufferTooSmall,
        Network,
        OutOfMemory,
        Panic,
        Internal,
    }

    /// A failure with its class and message.
    #[derive(Debug, Clone)]
    pub struct Error {
        pub kind: ErrorKind,
        pub message: String,
    }

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.message)
        }
    }

    /// Builds an error.
    pub fn err(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub type Result<T> = std::result::Result<T, Error>;

    /// An empty vector with room for `n` items, or `OutOfMemory` naming `what` and the bytes: the
    /// one way an allocation sized by input is made, so that it fails as an error, not an abort.
    pub fn vec_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
        let mut v = Vec::new();
        v.try_reserve_exact(n).map_err(|_| {
            err(
                ErrorKind::OutOfMemory,
                format!(
                    "cannot allocate {n} {what} ({} bytes)",
                    n.saturating_mul(std::mem::size_of::<T>())
                ),
            )
        })?;
        Ok(v)
    }
}

#[path = "../../src/config.rs"]
pub mod config;
#[path = "../../src/encoding.rs"]
pub mod encoding;
#[path = "../../src/parallel.rs"]
pub mod parallel;
#[path = "../../src/tokenizer.rs"]
pub mod tokenizer;
