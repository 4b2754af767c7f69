//! The error type every reader in this crate returns.

/// What went wrong, coarse enough for a caller (or a C ABI) to map onto its own error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file does not exist.
    NotFound,
    /// Reading or mapping the file failed.
    Io,
    /// The bytes are not a well-formed torch.save archive (bad zip, bad pickle, missing or short record).
    Format,
    /// The pickle names a global outside the allow-list; nothing was executed.
    Forbidden,
    /// A valid file in a variant this reader does not handle (legacy format, big-endian data).
    Unsupported,
    /// A tensor's size, stride or offset is invalid or reaches outside its storage.
    Shape,
    /// A buffer the file's sizes call for could not be allocated.
    OutOfMemory,
}

/// An error with its kind and a message naming the file and the specific cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FormatError {
    /// Category of the failure.
    pub kind: ErrorKind,
    /// Human-readable cause, starting with the file path.
    pub message: String,
}

impl FormatError {
    /// Builds an error from a kind and a complete message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        FormatError {
            kind,
            message: message.into(),
        }
    }
}
