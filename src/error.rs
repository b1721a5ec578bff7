//! One error type for the whole crate. Every variant names what is at fault (file, tensor, shape, flag) so that a
//! user can act on the message without a debugger.

use std::path::PathBuf;

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each naming what is at fault. New variants may be added in minor versions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: invalid JSON: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("{path}: field `{field}`: {reason}")]
    Config {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("tensor `{name}` not found in {location}")]
    MissingTensor { name: String, location: String },
    #[error("tensor `{name}` in {location} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        location: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("tensor `{name}` in {location} has dtype {dtype}, which is not supported here (supported: {supported})")]
    UnsupportedDtype {
        name: String,
        location: String,
        dtype: String,
        supported: &'static str,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("shape error in {op}: {reason}")]
    Shape { op: &'static str, reason: String },
    #[error("the `{engine}` engine cannot run: {reason}")]
    EngineUnavailable {
        engine: &'static str,
        reason: String,
    },
    #[error("{engine} engine: kernel `{kernel}` failed to launch: {reason}")]
    KernelLaunch {
        engine: &'static str,
        kernel: &'static str,
        reason: String,
    },
    #[error("the CUDA kernels were not built (no nvcc at build time); rebuild with nvcc on PATH or NVCC set")]
    KernelsNotBuilt,
    #[error("CUDA error while {during}: {detail}")]
    Cuda { during: String, detail: String },
    #[error("out of GPU memory in {stage}: it needs {needed_mib} MiB more, {free_mib} MiB of {total_mib} MiB are free; {hint}")]
    OutOfDeviceMemory {
        stage: String,
        needed_mib: usize,
        free_mib: usize,
        total_mib: usize,
        hint: &'static str,
    },
    #[error("image output {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    /// A [`crate::Request`] the model cannot run: `field` names the builder method (`height` and `width` for
    /// [`crate::Request::size`]), `reason` continues the sentence after it ("height 40 is not a positive multiple
    /// of 32").
    #[error("invalid request: {field} {reason}")]
    Request { field: &'static str, reason: String },
    /// The caller's callback answered [`crate::Control::Cancel`].
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn shape(op: &'static str, reason: impl Into<String>) -> Self {
        Error::Shape {
            op,
            reason: reason.into(),
        }
    }
}
