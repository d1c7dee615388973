//! Errors of the converter: each names the file, config field or tensor at fault.

use std::fmt;

/// Everything `quantize-tool` can refuse.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConvertError {
    /// A file could not be read or written.
    Io {
        /// Path.
        path: String,
        /// OS message.
        msg: String,
    },
    /// A JSON file (or metadata string) is not valid JSON.
    Json {
        /// Where it came from.
        path: String,
        /// Parser message.
        msg: String,
    },
    /// No model config was found for a bare `.safetensors` file.
    NoConfig {
        /// The file.
        path: String,
    },
    /// The input path is not a diffusers folder, pipeline folder or `.safetensors` file.
    BadInput {
        /// The path.
        path: String,
        /// Why.
        msg: String,
    },
    /// A config field holds a value ember does not support or that is invalid.
    Config {
        /// The config field.
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// The safetensors file is malformed.
    Safetensors {
        /// The file.
        path: String,
        /// Parser message.
        msg: String,
    },
    /// A tensor the config implies is missing from the checkpoint.
    MissingTensor {
        /// Tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
    },
    /// A tensor has a different shape than the config implies.
    TensorShape {
        /// Tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape in the checkpoint.
        got: Vec<usize>,
    },
    /// A tensor has a dtype the converter does not read.
    TensorDtype {
        /// Tensor name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// A tensor holds NaN or infinity.
    NonFinite {
        /// Tensor name.
        name: String,
    },
    /// Tensors in the checkpoint that the config does not use (the config does not describe this checkpoint).
    UnusedTensors {
        /// Up to a few of their names.
        names: Vec<String>,
        /// How many in all.
        count: usize,
    },
    /// The model is too large for the format's 32-bit offsets.
    TooLarge {
        /// What overflowed.
        what: String,
    },
    /// `--pack` cannot be honoured (unknown family, nothing to pack).
    Pack {
        /// What is wrong.
        msg: String,
    },
    /// The written blob failed the runtime's own validation (a converter bug; nothing is written).
    Invalid {
        /// The runtime's error.
        err: ember_core::Error,
    },
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Io { path, msg } => write!(f, "{path}: {msg}"),
            ConvertError::Json { path, msg } => write!(f, "{path}: invalid JSON: {msg}"),
            ConvertError::NoConfig { path } => write!(
                f,
                "{path}: no model config: pass --config CONFIG.json, put config.json beside the file, or store it in \
                 the safetensors metadata under \"config\""
            ),
            ConvertError::BadInput { path, msg } => write!(f, "{path}: {msg}"),
            ConvertError::Config { field, msg } => write!(f, "config field `{field}`: {msg}"),
            ConvertError::Safetensors { path, msg } => write!(f, "{path}: malformed safetensors: {msg}"),
            ConvertError::MissingTensor { name, expected } => {
                write!(f, "tensor `{name}` (shape {expected:?}) is missing from the checkpoint")
            }
            ConvertError::TensorShape { name, expected, got } => {
                write!(f, "tensor `{name}` has shape {got:?}, the config implies {expected:?}")
            }
            ConvertError::TensorDtype { name, dtype } => {
                write!(f, "tensor `{name}` has dtype {dtype}; supported: F32, F16, BF16")
            }
            ConvertError::NonFinite { name } => write!(f, "tensor `{name}` holds NaN or infinite values"),
            ConvertError::UnusedTensors { names, count } => write!(
                f,
                "{count} tensor(s) in the checkpoint are not used by the model the config describes (e.g. {}); \
                 the config does not match this checkpoint",
                names.join(", ")
            ),
            ConvertError::Pack { msg } => write!(f, "--pack: {msg}"),
            ConvertError::TooLarge { what } => write!(f, "model too large for the .ember format: {what}"),
            ConvertError::Invalid { err } => write!(f, "internal error: the converted blob fails validation: {err}"),
        }
    }
}

impl std::error::Error for ConvertError {}

/// Shorthand for a config error.
pub fn cfg_err(field: &str, msg: impl Into<String>) -> ConvertError {
    ConvertError::Config {
        field: field.to_string(),
        msg: msg.into(),
    }
}
