//! # sana
//!
//! NVIDIA's Sana text-to-image models in Rust, reproducing Hugging Face diffusers numerically.

pub mod cpu;
pub mod engine;
pub mod error;
pub mod gpu;
pub mod launch;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::HostTensor;
