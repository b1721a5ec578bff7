//! The text-to-image pipeline (`SanaPipeline.__call__`, docs/numerics/sampling.md §2) on one engine: a diffusers
//! folder opened once, then any number of generations. Each generation is a [`Plan`] (src/pipeline/plan.rs, checked
//! before any model runs) carried out by three stages: conditioning (the text encoder, or the caller's
//! embeddings), denoising (the sampler's loop, resident on the engine) and decoding (the VAE, then 8-bit pixels).
//! [`crate::Sana`] is the front door over this; this type is the low-level one, generic over the engine.

mod conditioning;
mod decoding;
pub(crate) mod denoise_loop;
mod denoising;
mod kept_loops;
mod plan;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use plan::{ImageToImage, Pag, Plan, WorkingSet};

use plan::Configs;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Control, Event, Observer, Stage};
use crate::generation::{Generation, StageTimes};
use crate::lora::{Adapter, LoraLayers, LoraMode};
use crate::memory::{stage, StageStats};
use crate::model::config::{SchedulerConfig, TransformerConfig, VaeConfig};
use crate::model::dc_ae::{DcAeDecoder, DcAeEncoder};
use crate::model::gemma2::{Gemma2Model, GemmaConfig};
use crate::model::sana_dit::{SanaControlNet, SanaTransformer};
use crate::noise::BatchNoise;
use crate::request::Request;
use crate::tensor::HostTensor;
use crate::text::{GemmaTokenizer, TextEncoder};
use crate::weights::Weights;
use kept_loops::KeptLoops;

/// How a [`Pipeline`] manages memory; set when it loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipelineOptions {
    /// Keep the text encoder loaded between generations (faster repeated prompts, more memory). By default it is
    /// freed after each encoding, so it and the transformer are never resident together.
    pub keep_text_encoder: bool,
    /// Measure each stage's peak host memory. On Linux this resets the process's high-water mark
    /// (`/proc/self/clear_refs`), which is process-wide state: off by default.
    pub measure_host_memory: bool,
    /// How many denoising loops (one per shape and set of sampling options) keep their captured step graph, with
    /// the buffers it reads, between generations on a device that captures (default 1): a later generation of
    /// the same shape replays it without an eager step or a capture. Each holds its text conditioning and
    /// latents on the device; 0 captures afresh every time.
    pub kept_step_graphs: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            keep_text_encoder: false,
            measure_host_memory: false,
            kept_step_graphs: 1,
        }
    }
}

/// The models of one diffusers folder on engine `E`. Configs, the tokenizer and the VAE load up front; Gemma and the
/// transformer load when first needed.
pub struct Pipeline<E: Engine> {
    engine: E,
    dir: PathBuf,
    options: PipelineOptions,
    configs: Configs,
    vae: DcAeDecoder<E>,
    /// Parsed once at load (the real tokenizer.json is 17 MB of JSON); each Gemma load takes a copy.
    tokenizer: GemmaTokenizer,
    text_encoder: Mutex<Option<TextEncoder<E>>>,
    /// With the denoising loops kept for it (whose graphs read its weights).
    transformer: Mutex<Option<(SanaTransformer<E>, KeptLoops<E>)>>,
    /// The LoRA adapters the transformer applies (when loaded) or will apply (when it next loads). Locked after
    /// `transformer` wherever both are.
    lora: Mutex<Option<Arc<LoraLayers>>>,
    /// The folder's ControlNet, loaded on first use. Locked after `transformer` wherever both are.
    controlnet: Mutex<Option<SanaControlNet<E>>>,
}

impl<E: Engine> Pipeline<E> {
    /// Opens a diffusers Sana folder on `engine`: reads every config and the tokenizer, checks they fit together,
    /// loads the VAE; `text_encoder/` and `transformer/` weights load on first use.
    pub fn load(engine: E, dir: &Path, options: PipelineOptions) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
            ));
        }
        let tokenizer = GemmaTokenizer::from_dir(&dir.join("tokenizer"))?;
        let text_encoder = GemmaConfig::load(&dir.join("text_encoder/config.json"))?;
        let transformer = TransformerConfig::load(&dir.join("transformer/config.json"))?;
        let vae = DcAeDecoder::from_dir(&engine, &dir.join("vae"))?;
        let scheduler = SchedulerConfig::load(&dir.join("scheduler/scheduler_config.json"))?;
        let scm = matches!(scheduler, SchedulerConfig::Scm(_));
        if scm != transformer.guidance_embeds {
            return Err(Error::InvalidInput(format!(
                "{}: the transformer {} a Sana-Sprint model (guidance_embeds = {}) but the scheduler is {}; \
                 Sprint weights need SCMScheduler and SCMScheduler needs Sprint weights",
                dir.display(),
                if scm { "is not" } else { "is" },
                transformer.guidance_embeds,
                if scm { "SCMScheduler" } else { "a flow scheduler" }
            )));
        }
        let (latent_in, latent_vae) = (transformer.in_channels, vae.config.latent_channels);
        if latent_in != latent_vae {
            return Err(Error::InvalidInput(format!(
                "{}: the transformer takes {latent_in} latent channels (transformer/config.json in_channels) but the VAE \
                 decodes {latent_vae} (vae/config.json latent_channels)",
                dir.display()
            )));
        }
        let text_width = (text_encoder.hidden_size, transformer.caption_channels);
        if text_width.0 != text_width.1 {
            return Err(Error::InvalidInput(format!(
                "{}: the text encoder's width is {} (text_encoder/config.json hidden_size) but the transformer's \
                 caption_channels is {} (transformer/config.json)",
                dir.display(),
                text_width.0,
                text_width.1
            )));
        }
        let controlnet = Self::load_controlnet_config(dir, &transformer)?;
        Ok(Self {
            configs: Configs {
                transformer,
                vae: vae.config.clone(),
                scheduler,
                text_encoder,
                controlnet,
            },
            engine,
            dir: dir.to_path_buf(),
            options,
            vae,
            tokenizer,
            text_encoder: Mutex::new(None),
            transformer: Mutex::new(None),
            lora: Mutex::new(None),
            controlnet: Mutex::new(None),
        })
    }

    /// `controlnet/config.json` when the folder has a `controlnet/`, checked against the transformer whose
    /// residual stream its outputs join.
    fn load_controlnet_config(
        dir: &Path,
        transformer: &TransformerConfig,
    ) -> Result<Option<TransformerConfig>> {
        let path = dir.join("controlnet/config.json");
        if !dir.join("controlnet").is_dir() {
            return Ok(None);
        }
        let net = TransformerConfig::load(&path)?;
        for (field, ours, theirs) in [
            ("in_channels", net.in_channels, transformer.in_channels),
            (
                "caption_channels",
                net.caption_channels,
                transformer.caption_channels,
            ),
            (
                "attention width (heads × head dim)",
                net.dim(),
                transformer.dim(),
            ),
        ] {
            if ours != theirs {
                return Err(Error::InvalidInput(format!(
                    "{}: the ControlNet's {field} is {ours} but the transformer's is {theirs}",
                    path.display()
                )));
            }
        }
        Ok(Some(net))
    }

    /// Whether the folder has a ControlNet (`controlnet/`).
    pub fn has_controlnet(&self) -> bool {
        self.configs.controlnet.is_some()
    }

    /// The ControlNet's configuration, when the folder has one.
    pub fn controlnet_config(&self) -> Option<&TransformerConfig> {
        self.configs.controlnet.as_ref()
    }

    /// The engine the models run on.
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The folder this pipeline was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The transformer's configuration.
    pub fn transformer_config(&self) -> &TransformerConfig {
        &self.configs.transformer
    }

    /// The VAE's configuration.
    pub fn vae_config(&self) -> &VaeConfig {
        &self.configs.vae
    }

    /// The text encoder's configuration.
    pub fn text_encoder_config(&self) -> &GemmaConfig {
        &self.configs.text_encoder
    }

    /// Sana-Sprint: the SCM sampler, guidance as a model input, no classifier-free guidance.
    pub fn is_sprint(&self) -> bool {
        matches!(self.configs.scheduler, SchedulerConfig::Scm(_))
    }

    /// Checks `req` against the model and resolves its defaults, without running anything.
    pub fn plan(&self, req: &Request) -> Result<Plan> {
        Plan::new(&self.configs, req)
    }

    /// The whole pipeline: prompt → embeddings → denoising → decode → 8-bit images at the requested size, with
    /// `on_event` told of each stage, step and tile (and able to cancel at each; see [`crate::Sana::generate_with`]).
    pub fn generate(
        &self,
        req: &Request,
        on_event: &mut dyn FnMut(Event) -> Control,
    ) -> Result<Generation> {
        let mut observer = Observer::new(on_event);
        let plan = self.plan(req)?;
        let (latents, mut times) = self.conditioned_denoise(&plan, req, &mut observer)?;
        observer.emit(Event::Stage {
            stage: Stage::Decode,
        })?;
        let (images, stats) = self.run_stage("decode", plan.working_set.decode, || {
            self.decode_images(&plan, &latents, &mut observer)
        });
        let images = images?;
        times.decode = stats;
        Ok(Generation {
            images,
            latents,
            times,
            plan,
        })
    }

    /// The conditioning and denoising stages alone: the final latents `[batch, C, h, w]` (f32), before the VAE, and
    /// the two stages' statistics.
    pub fn denoise(
        &self,
        req: &Request,
        on_event: &mut dyn FnMut(Event) -> Control,
    ) -> Result<(HostTensor, StageTimes)> {
        let plan = self.plan(req)?;
        self.conditioned_denoise(&plan, req, &mut Observer::new(on_event))
    }

    fn conditioned_denoise(
        &self,
        plan: &Plan,
        req: &Request,
        observer: &mut Observer<'_>,
    ) -> Result<(HostTensor, StageTimes)> {
        // Every stage's working set at once, before the latents or anything else is allocated; the latents (and
        // the sampler's copies of them) join the denoising working set.
        let latents_elements = plan.latent_shape.iter().product::<usize>();
        let ws = &plan.working_set;
        self.engine.check_fits("text encode", ws.text_encode)?;
        self.engine
            .check_fits("denoise", ws.denoise.saturating_add(3 * latents_elements))?;
        self.engine.check_fits("decode", ws.decode)?;
        let mut times = StageTimes::default();
        let mut noise = match &req.image_seeds {
            Some(seeds) => BatchNoise::from_seeds(seeds),
            None => BatchNoise::new(req.seed, plan.batch),
        };
        let latents = match &req.latents {
            Some(l) => l.clone(),
            None => noise.draw(&plan.latent_shape),
        };
        let init_latents = match &req.init_image {
            Some(image) if plan.image_to_image.is_some() => {
                Some(self.encode_image(plan, image, plan.batch)?)
            }
            _ => None,
        };
        // SanaControlNetPipeline's control latents: every row of the model batch (CFG's halves too) the same.
        let control_latents = match &req.control_image {
            Some(image) if plan.controlnet.is_some() => {
                Some(self.encode_image(plan, image, plan.model_batch())?)
            }
            _ => None,
        };
        let (text, stats) = if self.needs_text_encoder(req) {
            observer.emit(Event::Stage {
                stage: Stage::TextEncode,
            })?;
            self.run_stage("text encode", plan.working_set.text_encode, || {
                self.condition(plan, req)
            })
        } else {
            (self.condition(plan, req), StageStats::default())
        };
        let (text, mask) = text?;
        check_finite("text encode", &text)?;
        times.text_encode = stats;

        observer.emit(Event::Stage {
            stage: Stage::Denoise,
        })?;
        let (latents, stats) = self.run_stage("denoise", plan.working_set.denoise, || {
            self.sample(
                plan,
                req,
                (latents, init_latents.as_ref(), control_latents.as_ref()),
                (&text, &mask),
                &mut noise,
                observer,
            )
        });
        times.denoise = stats;
        let latents = latents?;
        check_finite("denoise", &latents)?;
        Ok((latents, times))
    }

    /// An input image's latents `[rows, C, h, w]`: `image` at the generation size ([`crate::image::to_vae_input`])
    /// through the VAE encoder (loaded for this call), times the scaling factor, repeated `rows` times
    /// (`SanaSprintImg2ImgPipeline.prepare_latents` before its `· sigma_data`; `SanaControlNetPipeline`'s control
    /// image).
    fn encode_image(
        &self,
        plan: &Plan,
        image: &crate::image::Image,
        rows: usize,
    ) -> Result<HostTensor> {
        let (w, h) = plan.generation_size;
        let pixels = crate::image::to_vae_input(image, w, h)?;
        let encoder = DcAeEncoder::from_dir(&self.engine, &self.dir.join("vae"))?;
        let z = self
            .engine
            .download(&encoder.encode(&self.engine, &self.engine.upload(&pixels)?)?)?;
        let sf = self.configs.vae.scaling_factor;
        let one: Vec<f32> = z.data().iter().map(|v| v * sf).collect();
        let mut shape = z.shape().to_vec();
        shape[0] = rows;
        let z = HostTensor::new(shape, one.repeat(rows))?;
        check_finite("image encode", &z)?;
        Ok(z)
    }

    /// Runs `f` as stage `name`: the engine is told the stage's working set first (a device engine fails here,
    /// before any work, when it cannot fit), then time and peak memory are measured.
    fn run_stage<R>(
        &self,
        name: &'static str,
        activation_elements: usize,
        f: impl FnOnce() -> Result<R>,
    ) -> (Result<R>, StageStats) {
        if let Err(err) = self.engine.begin_stage(name, activation_elements) {
            return (Err(err), StageStats::default());
        }
        let (out, mut stats) = stage(self.options.measure_host_memory, f);
        stats.peak_device_bytes = self.engine.peak_device_bytes();
        (out, stats)
    }

    /// Runs `f` on Gemma (loading it if needed), then frees it unless the options keep it.
    fn with_text_encoder<R>(&self, f: impl FnOnce(&TextEncoder<E>) -> Result<R>) -> Result<R> {
        with_loaded(
            &self.text_encoder,
            self.options.keep_text_encoder,
            || {
                Ok(TextEncoder {
                    tokenizer: self.tokenizer.clone(),
                    model: Gemma2Model::from_dir(&self.engine, &self.dir.join("text_encoder"))?,
                })
            },
            |m| f(m),
        )
    }

    /// Applies `adapters` (replacing any before; none removes them all). They are checked against the
    /// transformer's checkpoint first, so a wrong file changes nothing. [`LoraMode::Auto`] merges them when the
    /// transformer is not loaded and keeps them unmerged when it is; merged adapters on a loaded transformer are
    /// removed by reloading it (on next use), unmerged ones are swapped in place.
    pub fn set_adapters(&self, adapters: &[Adapter], mode: LoraMode) -> Result<()> {
        let mut transformer = self.transformer.lock().unwrap_or_else(|p| p.into_inner());
        let mut current = self.lora.lock().unwrap_or_else(|p| p.into_inner());
        let merged = match mode {
            LoraMode::Merged => true,
            LoraMode::Unmerged => false,
            LoraMode::Auto => transformer.is_none(),
        };
        let lora = if adapters.is_empty() {
            None
        } else {
            let base = Weights::open(self.dir.join("transformer"), "diffusion_pytorch_model")?;
            Some(Arc::new(LoraLayers::resolve(adapters, &base, merged)?))
        };
        let had_merged = current.as_ref().is_some_and(|l| l.merged());
        match transformer.as_mut() {
            Some((model, kept)) if !merged && !had_merged => {
                // The kept graphs read the layers' LoRA terms that are about to be replaced.
                kept.clear();
                if let Err(e) = model.set_unmerged_lora(&self.engine, lora.as_deref()) {
                    // Half-swapped layers are dropped; the next use reloads with the adapters before.
                    *transformer = None;
                    return Err(e);
                }
            }
            _ => *transformer = None,
        }
        *current = lora;
        Ok(())
    }

    /// Runs `f` on the ControlNet, loading it on first use.
    fn with_controlnet<R>(&self, f: impl FnOnce(&SanaControlNet<E>) -> Result<R>) -> Result<R> {
        with_loaded(
            &self.controlnet,
            true,
            || SanaControlNet::from_dir(&self.engine, &self.dir.join("controlnet")),
            |m| f(m),
        )
    }

    /// Runs `f` on the transformer and its kept loops, loading it on first use.
    fn with_transformer<R>(
        &self,
        f: impl FnOnce(&SanaTransformer<E>, &mut KeptLoops<E>) -> Result<R>,
    ) -> Result<R> {
        with_loaded(
            &self.transformer,
            true,
            || {
                let lora = self.lora.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let model = SanaTransformer::from_dir_with_lora(
                    &self.engine,
                    &self.dir.join("transformer"),
                    lora,
                )?;
                Ok((model, KeptLoops::new(self.options.kept_step_graphs)))
            },
            |(model, kept)| f(model, kept),
        )
    }
}

/// `Err(Error::NonFinite)` naming `stage` when `t` holds NaN or infinite values.
pub(super) fn check_finite(stage: &'static str, t: &HostTensor) -> Result<()> {
    let count = t.data().iter().filter(|v| !v.is_finite()).count();
    if count == 0 {
        return Ok(());
    }
    Err(Error::NonFinite {
        stage,
        step: None,
        count,
        total: t.len(),
    })
}

/// Runs `f` on the model in `slot`, loading it first if the slot is empty; keeps it there afterwards iff `keep`.
/// A panic in an earlier call (a caller's callback) leaves the slot empty or holding a whole model, so the lock's
/// poisoning is cleared rather than passed on.
fn with_loaded<M, R>(
    slot: &Mutex<Option<M>>,
    keep: bool,
    load: impl FnOnce() -> Result<M>,
    f: impl FnOnce(&mut M) -> Result<R>,
) -> Result<R> {
    let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut model = match slot.take() {
        Some(model) => model,
        None => load()?,
    };
    let out = f(&mut model);
    if keep {
        *slot = Some(model);
    }
    out
}
