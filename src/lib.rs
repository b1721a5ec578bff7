//! # sana
//!
//! NVIDIA's Sana text-to-image models in Rust, reproducing Hugging Face diffusers numerically.

pub mod cpu;
pub mod engine;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod launch;
pub mod model;
pub mod scheduler;
pub mod tensor;
pub mod tensor_file;
pub mod weights;

pub use error::{Error, Result};
pub use tensor::HostTensor;
