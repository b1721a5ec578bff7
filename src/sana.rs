//! The front door: [`Sana`] opens a diffusers Sana folder on a [`Device`] and generates images from [`Request`]s.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::engine::cpu::CpuEngine;
use crate::engine::cuda::{CudaEngine, StepGraphReport};
#[cfg(feature = "emu")]
use crate::engine::emu::EmuEngine;
use crate::engine::{Engine, StorageDtype};
use crate::error::Result;
use crate::event::{Control, Event};
use crate::generation::Generation;
use crate::lora::{Adapter, LoraMode};
use crate::model::config::{TransformerConfig, VaeConfig};
use crate::model::gemma2::GemmaConfig;
use crate::pipeline::{Pipeline, PipelineOptions, Plan};
use crate::request::Request;
use crate::text::PromptEmbeddings;

/// Where the models run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Device {
    /// GPU 0 when one is usable, else the CPU ([`Sana::auto_fallback`] says why).
    #[default]
    Auto,
    /// The pure-Rust f32 reference engine, on every core.
    Cpu,
    /// The NVIDIA GPU of this ordinal (the CUDA driver's numbering).
    Cuda(usize),
    /// The CUDA kernels compiled for the host, on values stored as the GPU stores them (feature `emu`; slow, for
    /// checking kernels without a GPU).
    #[cfg(feature = "emu")]
    Emu,
}

/// How to open a model: the device, the storage precision, and memory policies. [`Sana::open`] uses the defaults.
///
/// ```no_run
/// use sana::{Device, OpenOptions};
/// # fn main() -> sana::Result<()> {
/// let sana = OpenOptions::new(Device::Cuda(0)).keep_text_encoder(true).open("sana-1.6b")?;
/// # let _ = sana; Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    device: Device,
    dtype: StorageDtype,
    step_graphs: bool,
    pipeline: PipelineOptions,
}

impl OpenOptions {
    /// Defaults: bf16 storage on devices that store in 16 bits, denoising steps replayed as CUDA graphs and the last
    /// loop's graph kept for the next generation of its shape, the text encoder freed after each encoding, no
    /// host-memory measurement.
    pub fn new(device: Device) -> Self {
        Self {
            device,
            dtype: StorageDtype::Bf16,
            step_graphs: true,
            pipeline: PipelineOptions::default(),
        }
    }

    /// Storage dtype of weights and activations on the GPU and in emulation (the CPU engine is f32 throughout).
    pub fn dtype(mut self, dtype: StorageDtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Keep the text encoder loaded between generations: faster repeated prompts, but it and the transformer are
    /// then resident together (default off).
    pub fn keep_text_encoder(mut self, keep: bool) -> Self {
        self.pipeline.keep_text_encoder = keep;
        self
    }

    /// On a GPU, capture one denoising step as a CUDA graph and replay it (default on); off queues every step op
    /// by op.
    pub fn step_graphs(mut self, on: bool) -> Self {
        self.step_graphs = on;
        self
    }

    /// How many denoising loops keep their captured CUDA step graph between generations (default 1; see
    /// [`PipelineOptions::kept_step_graphs`]): a generation of the same size and sampling options as a kept one
    /// replays its graph from the first step, without an eager step or a capture. 0 captures afresh every time.
    pub fn kept_step_graphs(mut self, n: usize) -> Self {
        self.pipeline.kept_step_graphs = n;
        self
    }

    /// Measure each stage's peak host memory ([`crate::memory::StageStats::peak_host_bytes`]). On Linux this
    /// resets the whole process's memory high-water mark, so it is off by default.
    pub fn measure_host_memory(mut self, on: bool) -> Self {
        self.pipeline.measure_host_memory = on;
        self
    }

    /// Opens the diffusers Sana folder `dir` with these options.
    pub fn open(&self, dir: impl AsRef<Path>) -> Result<Sana> {
        let dir = dir.as_ref();
        let cpu = || Pipeline::load(CpuEngine, dir, self.pipeline).map(AnyPipeline::Cpu);
        let gpu = |ordinal| -> Result<AnyPipeline> {
            let gpu = CudaEngine::new(ordinal, self.dtype)?;
            gpu.use_step_graphs(self.step_graphs);
            Ok(AnyPipeline::Cuda(Box::new(Pipeline::load(
                gpu,
                dir,
                self.pipeline,
            )?)))
        };
        let (pipeline, auto_fallback) = match self.device {
            Device::Cpu => (cpu()?, None),
            Device::Cuda(ordinal) => (gpu(ordinal)?, None),
            #[cfg(feature = "emu")]
            Device::Emu => (
                AnyPipeline::Emu(Pipeline::load(
                    EmuEngine::new(self.dtype),
                    dir,
                    self.pipeline,
                )?),
                None,
            ),
            Device::Auto => match gpu(0) {
                Ok(p) => (p, None),
                // Only an unusable GPU falls back; a bad folder fails as it would on the CPU.
                Err(
                    e @ (crate::Error::EngineUnavailable { .. } | crate::Error::KernelsNotBuilt),
                ) => (cpu()?, Some(e.to_string())),
                Err(e) => return Err(e),
            },
        };
        Ok(Sana {
            pipeline,
            auto_fallback,
            turn: Mutex::new(()),
        })
    }
}

/// The pipeline on whichever engine the device chose (model code is generic; each arm is monomorphised).
enum AnyPipeline {
    Cpu(Pipeline<CpuEngine>),
    #[cfg(feature = "emu")]
    Emu(Pipeline<EmuEngine>),
    /// Boxed: the engine's state is kilobytes, the other variants' a few words.
    Cuda(Box<Pipeline<CudaEngine>>),
}

/// Runs `$body` with `$p` bound to the pipeline, whatever its engine.
macro_rules! on_pipeline {
    ($any:expr, |$p:ident| $body:expr) => {
        match $any {
            AnyPipeline::Cpu($p) => $body,
            #[cfg(feature = "emu")]
            AnyPipeline::Emu($p) => $body,
            AnyPipeline::Cuda($p) => $body,
        }
    };
}

/// A Sana model, opened once, generating any number of images.
///
/// `Sana` is `Send + Sync`: share it between threads (`Arc<Sana>`). Generations run one at a time, in the order
/// their calls take the turn: each one already uses the whole device (every core, or the GPU's single stream), so
/// running two at once would only split it, and the GPU's graph-replayed loop owns its stream while it runs. Images
/// are the same as sequential calls give.
pub struct Sana {
    pipeline: AnyPipeline,
    auto_fallback: Option<String>,
    turn: Mutex<()>,
}

impl Sana {
    /// Opens the diffusers Sana folder `dir` (`model_index.json`, `tokenizer/`, `text_encoder/`, `transformer/`,
    /// `vae/`, `scheduler/`) on `device`, with [`OpenOptions`]' defaults.
    pub fn open(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        OpenOptions::new(device).open(dir)
    }

    /// Generates the request's images.
    pub fn generate(&self, req: &Request) -> Result<Generation> {
        self.generate_with(req, |_| Control::Continue)
    }

    /// Generates the request's images, calling `on_event` at each stage, denoising step and VAE tile. Answering
    /// [`Control::Cancel`] stops the generation at that boundary with [`crate::Error::Cancelled`] (on a GPU at most
    /// the one step already queued runs on); the `Sana` stays usable.
    pub fn generate_with(
        &self,
        req: &Request,
        mut on_event: impl FnMut(Event) -> Control,
    ) -> Result<Generation> {
        let _turn = self.take_turn();
        on_pipeline!(&self.pipeline, |p| p.generate(req, &mut on_event))
    }

    /// Checks `req` against the model and resolves its defaults (size, steps, guidance, sampler, working sets)
    /// without running anything.
    pub fn plan(&self, req: &Request) -> Result<Plan> {
        on_pipeline!(&self.pipeline, |p| p.plan(req))
    }

    /// The prompt embeddings of the request's prompts and negative prompt, for reuse with
    /// [`Request::from_embeddings`] (other seeds, sizes or steps without running the text encoder again).
    pub fn encode_prompt(&self, req: &Request) -> Result<PromptEmbeddings> {
        let _turn = self.take_turn();
        on_pipeline!(&self.pipeline, |p| p.encode_prompt(req))
    }

    /// The engine that runs: `cpu`, `cuda` or `emu`.
    pub fn engine_name(&self) -> &'static str {
        on_pipeline!(&self.pipeline, |p| p.engine().name())
    }

    /// The device in words: the GPU's name, compute capability, memory and storage dtype, or the host engine.
    pub fn device_description(&self) -> String {
        match &self.pipeline {
            AnyPipeline::Cpu(_) => "cpu engine (f32)".into(),
            #[cfg(feature = "emu")]
            AnyPipeline::Emu(p) => format!("emu engine ({:?} storage)", p.engine().dtype()),
            AnyPipeline::Cuda(p) => {
                let gpu = p.engine();
                let info = gpu.info();
                format!(
                    "GPU {}: {} (sm_{}{}, {} MiB), {:?} storage, kernels from the {:?}",
                    info.ordinal,
                    info.name,
                    info.compute_capability.0,
                    info.compute_capability.1,
                    info.total_bytes >> 20,
                    gpu.dtype(),
                    gpu.kernel_image()
                )
            }
        }
    }

    /// With [`Device::Auto`], why the GPU was not used (the models then run on the CPU).
    pub fn auto_fallback(&self) -> Option<&str> {
        self.auto_fallback.as_deref()
    }

    /// How the last denoising loop ran on a GPU (steps replayed from a CUDA graph, or why not).
    pub fn step_graph_report(&self) -> Option<StepGraphReport> {
        on_pipeline!(&self.pipeline, |p| p.engine().step_graph_report())
    }

    /// Whether the folder is a Sana-Sprint model (SCM sampler, guidance as a model input).
    pub fn is_sprint(&self) -> bool {
        on_pipeline!(&self.pipeline, |p| p.is_sprint())
    }

    /// The folder this model was opened from.
    pub fn dir(&self) -> &Path {
        on_pipeline!(&self.pipeline, |p| p.dir())
    }

    /// Applies LoRA `adapters` to the transformer, replacing any before (an empty list removes them). Waits for
    /// a running generation; see [`crate::pipeline::Pipeline::set_adapters`] for how `mode` applies them. Adding,
    /// re-weighting or removing unmerged adapters never reloads the base weights.
    pub fn set_adapters(&self, adapters: &[Adapter], mode: LoraMode) -> Result<()> {
        let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        on_pipeline!(&self.pipeline, |p| p.set_adapters(adapters, mode))
    }

    /// The transformer's configuration (low level: sizes for cost models).
    pub fn transformer_config(&self) -> &TransformerConfig {
        on_pipeline!(&self.pipeline, |p| p.transformer_config())
    }

    /// The ControlNet's configuration, when the folder has a `controlnet/` (low level: sizes for cost models).
    pub fn controlnet_config(&self) -> Option<&TransformerConfig> {
        on_pipeline!(&self.pipeline, |p| p.controlnet_config())
    }

    /// The VAE's configuration (low level).
    pub fn vae_config(&self) -> &VaeConfig {
        on_pipeline!(&self.pipeline, |p| p.vae_config())
    }

    /// The text encoder's configuration (low level).
    pub fn text_encoder_config(&self) -> &GemmaConfig {
        on_pipeline!(&self.pipeline, |p| p.text_encoder_config())
    }

    /// One generation at a time (see the type's documentation). A caller's panic inside an earlier generation
    /// leaves nothing half-done that the next one reads, so a poisoned turn is taken anyway.
    fn take_turn(&self) -> MutexGuard<'_, ()> {
        self.turn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
