//! One error type for the core, classified so the C ABI can map each class to one status code.
use model_context_formats::{ErrorKind as FormatKind, FormatError};
use model_context_tokenizer::{Error as TokenError, ErrorKind as TokenKind};

/// The class of a failure; the C ABI maps each class to exactly one `mc_status`.
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
    Panic,
    Internal,
    OutOfMemory,
}

/// A failure with its class and a message naming the precise cause (path, key, expected vs actual).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
}

/// Shorthand constructors, so call sites read as `Err(err(Shape, ...))`.
pub fn err(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, message)
}

pub type Result<T> = std::result::Result<T, Error>;

/// An empty vector with room for `n` items, or `OutOfMemory` naming `what` and the bytes: the
/// one way an allocation sized by input is made, so that it fails as an error, not an abort.
pub fn vec_with_capacity<T>(n: usize, what: &str) -> Result<Vec<T>> {
    Ok(model_context_tokenizer::error::vec_with_capacity(n, what)?)
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        let kind = match e.kind {
            TokenKind::InvalidArgument => ErrorKind::InvalidArgument,
            TokenKind::Token => ErrorKind::Token,
            TokenKind::Unsupported => ErrorKind::Unsupported,
            TokenKind::OutOfMemory => ErrorKind::OutOfMemory,
            TokenKind::Internal => ErrorKind::Internal,
        };
        Error::new(kind, e.message)
    }
}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        let kind = match e.kind {
            FormatKind::NotFound => ErrorKind::NotFound,
            FormatKind::Io => ErrorKind::Io,
            FormatKind::Format => ErrorKind::Format,
            FormatKind::Forbidden => ErrorKind::Forbidden,
            FormatKind::Unsupported => ErrorKind::Unsupported,
            FormatKind::Shape => ErrorKind::Shape,
            FormatKind::OutOfMemory => ErrorKind::OutOfMemory,
        };
        Error::new(kind, e.message)
    }
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        let text = e.to_string();
        let lower = text.to_ascii_lowercase();
        let kind = if lower.contains("out of memory") || lower.contains("can't allocate memory") {
            ErrorKind::OutOfMemory
        } else if lower.contains("cuda") || lower.contains("mps") || lower.contains("device") {
            ErrorKind::Device
        } else {
            ErrorKind::Internal
        };
        Error::new(kind, format!("libtorch: {text}"))
    }
}
