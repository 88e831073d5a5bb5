//! The one error type of the loader: every variant carries the file, tensor or shape at fault,
//! because "invalid header" without a name is useless when a model folder has twenty shards.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading configs, weights or golden files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened, read, mapped or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// File at fault.
        path: PathBuf,
        /// Underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config, shard index, minimind) is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// File at fault.
        path: PathBuf,
        /// Parser error with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The bytes do not follow the file format (truncated, corrupt header, out-of-bounds size).
    #[error("{}: {msg}", path.display())]
    Corrupt {
        /// File at fault.
        path: PathBuf,
        /// What is wrong, with the offending numbers.
        msg: String,
    },
    /// One tensor in a file is malformed or stored in a dtype this loader cannot convert.
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    BadTensor {
        /// File holding the tensor.
        path: PathBuf,
        /// Tensor name as stored in the file.
        tensor: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A config field is missing, mistyped, inconsistent or asks for something unsupported.
    #[error("{}: config `{field}`: {msg}", path.display())]
    Config {
        /// Config file (or GGUF/minimind file) at fault.
        path: PathBuf,
        /// Key of the field.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// The model family (`model_type`, `architectures`, GGUF architecture) is not implemented.
    #[error("{}: unsupported {what} `{name}` (supported: {supported})", path.display())]
    UnsupportedModel {
        /// File declaring the model family.
        path: PathBuf,
        /// Which key named it, e.g. `model_type`.
        what: &'static str,
        /// The refused value.
        name: String,
        /// The values that would have been accepted.
        supported: &'static str,
    },
    /// The path is none of the formats `load_model` recognises.
    #[error("{}: not a recognised model: {reason}", path.display())]
    UnknownFormat {
        /// Path that was probed.
        path: PathBuf,
        /// What the probe found instead.
        reason: String,
    },
    /// A tensor the model needs is absent.
    #[error("missing tensor `{name}` (weights from {origin})")]
    MissingTensor {
        /// Hugging Face name of the tensor.
        name: String,
        /// Where the weights were loaded from.
        origin: String,
    },
    /// A tensor is present with a shape other than the config implies.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?} (weights from {origin})")]
    ShapeMismatch {
        /// Hugging Face name of the tensor.
        name: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape found in the weights.
        found: Vec<usize>,
        /// Where the weights were loaded from.
        origin: String,
    },
    /// A tensor is present that the configured model has no parameter for (it would be ignored).
    #[error(
        "unexpected tensor `{name}` with shape {shape:?}: no such parameter in this model (weights from {origin})"
    )]
    UnexpectedTensor {
        /// Hugging Face name of the tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Where the weights were loaded from.
        origin: String,
    },
    /// The same tensor name was produced twice (two shards, or two source names mapping to one).
    #[error("tensor `{name}` appears twice (weights from {origin})")]
    DuplicateTensor {
        /// Hugging Face name of the tensor.
        name: String,
        /// Where the weights were loaded from.
        origin: String,
    },
    /// A tensor's data length does not match the element count of its shape.
    #[error("tensor `{name}`: shape {shape:?} needs {expected} values, got {len}")]
    LengthMismatch {
        /// Tensor name (or a description for unnamed tensors).
        name: String,
        /// The declared shape.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Values actually present.
        len: usize,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;

impl LoadError {
    /// Builds `Io`, keeping the path: `std::io::Error` alone never says which file.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        LoadError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Builds `Corrupt` for a file whose structure is broken.
    pub fn corrupt(path: &Path, msg: impl Into<String>) -> Self {
        LoadError::Corrupt {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    /// Builds `BadTensor` for one tensor of a file.
    pub fn bad_tensor(path: &Path, tensor: &str, msg: impl Into<String>) -> Self {
        LoadError::BadTensor {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            msg: msg.into(),
        }
    }

    /// Builds `Config` for one field of a config.
    pub fn config(path: &Path, field: &str, msg: impl Into<String>) -> Self {
        LoadError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            msg: msg.into(),
        }
    }
}
