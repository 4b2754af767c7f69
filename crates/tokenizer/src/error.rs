//! The error type of the tokenizer, classified so a caller (the C ABI) maps each class onto
//! one of its own codes.

/// The class of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Text that is not UTF-8.
    InvalidArgument,
    /// A disallowed special token, an id outside the vocabulary, a string that is not one token.
    Token,
    /// An encoding this library does not know.
    Unsupported,
    /// A buffer sized by the input could not be allocated.
    OutOfMemory,
    /// tiktoken-rs's tables disagree with what this crate expects of them.
    Internal,
}

/// A failure with its class and a message naming the cause (offset, token id, encoding).
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

impl std::error::Error for Error {}

/// Shorthand constructor, so call sites read as `Err(err(Token, ...))`.
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
