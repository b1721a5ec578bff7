//! # sana
//!
//! NVIDIA's Sana text-to-image models in Rust, reproducing Hugging Face diffusers numerically: prompt → Gemma-2 →
//! linear-attention DiT in a flow-matching sampler → DC-AE decoder → image, on the CPU or an NVIDIA GPU.
//!
//! ```no_run
//! # fn main() -> sana::Result<()> {
//! let sana = sana::Sana::open("sana-1.6b", sana::Device::Auto)?;
//! let out = sana.generate(&sana::Request::new("a red fox in the snow").seed(42))?;
//! out.images[0].save_png("fox.png")?;
//! # Ok(()) }
//! ```
//!
//! ## The front door
//! - [`Sana`] opens a diffusers Sana folder (any published variant: 0.6B/1.6B, 512 px to 4K, Sana 1.5, Sana-Sprint)
//!   on a [`Device`]; [`OpenOptions`] sets the storage dtype and memory policies.
//! - [`Request`] is one generation, built with methods; what it leaves unset comes from the model folder.
//!   [`Sana::plan`] shows the resolved [`Plan`] without running anything.
//! - [`Sana::generate`] returns a [`Generation`]: [`Image`]s, the latents, and each stage's time and memory.
//!   [`Sana::generate_with`] reports [`Event`]s and lets the callback cancel ([`Control`]).
//! - [`Sana::encode_prompt`] returns [`PromptEmbeddings`] to reuse with [`Request::from_embeddings`].
//! - Every failure is an [`Error`] naming what is at fault.
//!
//! ## Features
//! - default: the `cpu` engine (pure Rust) and the `cuda` engine (the driver and cuBLASLt are opened at run time;
//!   kernels are compiled by nvcc at build time when it is found, else the cuda engine reports that it was built
//!   without them). Neither a C++ compiler nor a command-line parser is needed.
//! - `emu`: the emulation engine ([`Device::Emu`]): the CUDA kernels compiled for the host by the system C++ compiler.
//! - `cli`: the `sana-run` binary.
//!
//! ## Low level
//! The modules below are the building blocks under [`Sana`], for custom loops and tools:
//! - [`vocabulary`]: the types every layer shares ([`StorageDtype`], [`vocabulary::Activation`], the samplers'
//!   [`vocabulary::StepRule`] and step-schedule format, [`vocabulary::StepGraphReport`]); it imports nothing above it;
//! - [`engine`]: the [`engine::Engine`] trait (the op vocabulary model code is written in) and its engines;
//! - [`model`]: configurations and the models, generic over the engine;
//! - [`pipeline`]: the engine-generic [`pipeline::Pipeline`] (its denoising loop is the graph-captured one);
//! - [`scheduler`], [`noise`]: the samplers' schedules and the seeded initial noise;
//! - [`text`]: the tokenizer, Sana's prompt handling and `encode_prompt`;
//! - [`tensor`], [`weights`], [`image`], [`memory`]: host tensors, checkpoints, pixels, memory measurement.
//!
//! They are public API, less settled than the front door. Modules hidden from this documentation (`atomic_write`, `cpu`,
//! `launch`, `eval`, `inspect`, `cost`, `synthetic_pipeline`, `tensor_file`) are public only for this crate's own
//! binary, tests and benchmarks: they are not part of the API.
//!
//! The numerics each layer reproduces are written down in the repository's `docs/numerics/`.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod atomic_write;
#[doc(hidden)]
pub mod cost;
#[doc(hidden)]
pub mod cpu;
pub mod engine;
mod error;
#[doc(hidden)]
pub mod eval;
mod event;
mod generation;
pub mod image;
#[doc(hidden)]
pub mod inspect;
#[doc(hidden)]
pub mod launch;
pub mod lora;
pub mod memory;
pub mod model;
pub mod noise;
pub mod pipeline;
mod request;
mod sana;
pub mod scheduler;
#[doc(hidden)]
pub mod synthetic_pipeline;
pub mod tensor;
#[doc(hidden)]
pub mod tensor_file;
pub mod text;
pub mod vocabulary;
pub mod weights;

pub use error::{Error, Result};
pub use event::{Control, Event, Stage};
pub use generation::{Generation, StageTimes};
pub use image::Image;
pub use memory::StageStats;
pub use model::vae_tiling::{VaeTile, VaeTiling};
pub use pipeline::{Plan, WorkingSet};
pub use request::{Request, Sampler};
pub use sana::{Device, OpenOptions, Sana};
pub use tensor::HostTensor;
pub use text::PromptEmbeddings;
pub use vocabulary::StorageDtype;

// README.md's Rust example compiles as a doctest, so the front page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
