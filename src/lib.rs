//! # sana
//!
//! NVIDIA's Sana text-to-image models in Rust, reproducing Hugging Face diffusers numerically: prompt → Gemma-2 →
//! linear-attention DiT in a flow-matching sampler → DC-AE decoder → image.
//!
//! ## Contents
//! - [`engine`]: the [`engine::Engine`] trait (the op vocabulary) and its engines: [`engine::cpu`] (the f32
//!   reference) and [`engine::emu`] (the CUDA kernels compiled for the host).
//! - [`cpu`]: the reference ops behind the CPU engine, one module per kernel family.
//! - [`launch`], [`gpu`]: launch plans shared by the CUDA and emulation engines; embedded PTX.
//! - [`pipeline`]: the whole text-to-image pipeline: load a diffusers folder once, generate images.
//! - [`model`]: configs and the models, generic over the engine ([`model::sana_dit`], [`model::dc_ae`]).
//! - [`text`]: the Gemma tokenizer, Sana's prompt handling and `encode_prompt` ([`model::gemma2`] encodes).
//! - [`scheduler`]: Flow-DPM-Solver and Flow-Euler, step for step as diffusers.
//! - [`noise`]: the documented seeded Gaussian generator for initial latents.
//! - [`image`]: resolution binning, resize-and-crop back to the requested size, 8-bit RGB and PNG output.
//! - [`inspect`]: `sana-run inspect`: variant, parameter counts, dtypes, missing or unexpected tensors (headers only).
//! - [`cost`]: FLOPs and bytes per op and per pipeline stage, from configs; roofline floors on named devices.
//! - [`memory`]: peak host memory per stage.
//! - [`weights`]: memory-mapped safetensors checkpoints (single, sharded, 16-bit variants), or synthetic ones.
//! - [`synthetic_pipeline`]: a published variant's folder with synthetic weights (benchmarks at real sizes).
//! - [`eval`]: the `sana-run eval …` subcommands: one component on tensors from a file.
//! - [`tensor`], [`tensor_file`], [`error`]: host tensors, their files, and the error type.
//!
//! ```no_run
//! use sana::engine::{cpu::CpuEngine, Engine};
//! use sana::model::sana_dit::SanaTransformer;
//! # fn main() -> sana::Result<()> {
//! let e = CpuEngine;
//! let dit = SanaTransformer::from_dir(&e, "sana-1.6b/transformer".as_ref())?;
//! # let (text, mask, latents) = (sana::HostTensor::zeros(vec![1, 300, 2304]), sana::HostTensor::zeros(vec![1, 300]), sana::HostTensor::zeros(vec![1, 32, 32, 32]));
//! let cond = dit.encode_text(&e, &text, &mask)?; // once per prompt
//! let velocity = dit.forward(&e, &latents, &cond, &[999.0], None)?;
//! let velocity = e.download(&velocity)?;
//! # Ok(()) }
//! ```

pub mod cost;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod eval;
mod event;
mod generation;
pub mod gpu;
pub mod image;
pub mod inspect;
pub mod launch;
pub mod memory;
pub mod model;
pub mod noise;
pub mod pipeline;
mod request;
mod sana;
pub mod scheduler;
pub mod synthetic_pipeline;
pub mod tensor;
pub mod tensor_file;
pub mod text;
pub mod weights;

pub use engine::StorageDtype;
pub use error::{Error, Result};
pub use event::{Control, Event, Stage};
pub use generation::{Generation, StageTimes};
pub use image::Image;
pub use model::vae_tiling::{VaeTile, VaeTiling};
pub use pipeline::{Plan, WorkingSet};
pub use request::{Request, Sampler};
pub use sana::{Device, OpenOptions, Sana};
pub use tensor::HostTensor;
pub use text::PromptEmbeddings;
