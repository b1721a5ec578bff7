//! One error type for the whole crate. Every variant names what is at fault (file, tensor, shape, flag) so that a
//! user can act on the message without a debugger.

use std::path::PathBuf;

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each naming what is at fault. New variants may be added in minor versions.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory being read or written.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A `.safetensors` file could not be parsed or written, or two shards of one checkpoint hold the same tensor.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it, as the safetensors crate or the loader reports it.
        reason: String,
    },
    /// A JSON file (a `config.json`, a checkpoint index, a synthetic-weights spec) could not be parsed or written.
    #[error("{path}: invalid JSON: {reason}")]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A `config.json` parsed but one of its fields is missing, out of range or unsupported.
    #[error("{path}: field `{field}`: {reason}")]
    Config {
        /// The config file at fault.
        path: PathBuf,
        /// The JSON key at fault, as spelled in the file.
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// A LoRA adapter file is malformed, targets a layer the model does not have, or does not fit it.
    #[error("LoRA adapter {path}: `{key}`: {reason}")]
    Lora {
        /// The adapter file.
        path: PathBuf,
        /// The tensor key (or metadata field) at fault, as spelled in the file.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("tensor `{name}` not found in {location}")]
    MissingTensor {
        /// The checkpoint key, e.g. `transformer_blocks.3.attn1.to_q.weight`.
        name: String,
        /// The file, directory or checkpoint description that was searched.
        location: String,
    },
    /// A checkpoint tensor has a shape other than the config implies.
    #[error("tensor `{name}` in {location} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The checkpoint key.
        name: String,
        /// The file that holds it.
        location: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        actual: Vec<usize>,
    },
    /// A checkpoint tensor is stored in a dtype this loader or engine cannot read.
    #[error("tensor `{name}` in {location} has dtype {dtype}, which is not supported here (supported: {supported})")]
    UnsupportedDtype {
        /// The checkpoint key.
        name: String,
        /// The file that holds it.
        location: String,
        /// The stored dtype, as safetensors names it (e.g. `F64`).
        dtype: String,
        /// The dtypes accepted at this point, for the message.
        supported: &'static str,
    },
    /// An argument to a model or tokenizer call is out of range (e.g. a latent whose size the model cannot take);
    /// the string says which and why.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A tensor handed to an operation or model has the wrong shape.
    #[error("shape error in {op}: {reason}")]
    Shape {
        /// The operation or argument at fault, e.g. `flow_step` or `hidden_states`.
        op: &'static str,
        /// Which shapes disagree, and how.
        reason: String,
    },
    /// An engine cannot be opened or used here (no driver, no device, no cuBLASLt, ...).
    #[error("the `{engine}` engine cannot run: {reason}")]
    EngineUnavailable {
        /// The engine's name, e.g. `cuda`.
        engine: &'static str,
        /// Why: what is missing, or which setting the engine refuses.
        reason: String,
    },
    /// A kernel refused to launch (e.g. its launch geometry exceeds CUDA's limits).
    #[error("{engine} engine: kernel `{kernel}` failed to launch: {reason}")]
    KernelLaunch {
        /// The engine's name, e.g. `emu`.
        engine: &'static str,
        /// The kernel's symbol, `<op>_<dtype>`.
        kernel: &'static str,
        /// Why it did not launch.
        reason: String,
    },
    /// The crate was built without nvcc, so it has no CUDA kernels to load.
    #[error("the CUDA kernels were not built (no nvcc at build time); rebuild with nvcc on PATH or NVCC set")]
    KernelsNotBuilt,
    /// A CUDA driver, cuBLASLt or kernel call failed.
    #[error("CUDA error while {during}: {detail}")]
    Cuda {
        /// What was being done, e.g. "launching `rmsnorm_bf16`".
        during: String,
        /// The driver's or library's error.
        detail: String,
    },
    /// A stage's working set does not fit in the GPU's free memory.
    #[error("out of GPU memory in {stage}: it needs {needed_mib} MiB more, {free_mib} MiB of {total_mib} MiB are free; {hint}")]
    OutOfDeviceMemory {
        /// The pipeline stage that was starting: `text encode`, `denoise` or `decode`.
        stage: String,
        /// How much more memory it needs than is free, in MiB (rounded up).
        needed_mib: usize,
        /// Free device memory, in MiB.
        free_mib: usize,
        /// Total device memory, in MiB.
        total_mib: usize,
        /// The lower-memory options that help this stage.
        hint: &'static str,
    },
    /// A stage's activations, on a host engine, would not fit in the memory the process can still get: refused
    /// before anything is allocated, instead of the allocator aborting the process.
    #[error("out of host memory in {stage}: the {engine} engine needs at least {needed_mib} MiB for it at this size and batch, and {available_mib} MiB are available; a smaller size or batch fits")]
    OutOfHostMemory {
        /// The pipeline stage: `text encode`, `denoise` or `decode`.
        stage: &'static str,
        /// The engine (`cpu` or `emu`).
        engine: &'static str,
        /// The stage's working set, a lower bound, in MiB (rounded up).
        needed_mib: u64,
        /// What the process can still allocate: available memory and swap, or its address-space limit.
        available_mib: u64,
    },
    /// Writing an output image failed.
    #[error("image output {path}: {reason}")]
    Image {
        /// The image file being written.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An input image (image-to-image's init image) could not be read or decoded.
    #[error("image input {path}: {reason}")]
    ImageInput {
        /// The image file being read.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The tokenizer could not be loaded (unparsable, or no usable pad token) or failed to encode a prompt.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The `tokenizer.json` at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`crate::Request`] the model cannot run: `field` names the builder method (`height` and `width` for
    /// [`crate::Request::size`]), `reason` continues the sentence after it ("height 40 is not a positive multiple
    /// of 32").
    #[error("invalid request: {field} {reason}")]
    Request {
        /// The builder method at fault.
        field: &'static str,
        /// What is wrong, continuing the sentence after `field`.
        reason: String,
    },
    /// A stage produced NaN or infinite values (from the weights, the inputs, or an f16 overflow): the generation
    /// stops there instead of turning them into a flat image.
    #[error(
        "{stage}{}: {count} of {total} values are NaN or infinite (from the weights, the inputs or an f16 overflow)",
        step.map(|(s, n)| format!(" (step {s} of {n})")).unwrap_or_default()
    )]
    NonFinite {
        /// The stage whose output holds them: `text encode`, `denoise` or `decode`.
        stage: &'static str,
        /// The first denoising step whose latents hold them, of how many, where the engine can tell without a
        /// transfer (host engines); a device engine checks the final latents once.
        step: Option<(usize, usize)>,
        /// How many values are not finite.
        count: usize,
        /// Values in the stage's output.
        total: usize,
    },
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
