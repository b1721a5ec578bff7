//! The text-to-image pipeline (`SanaPipeline.__call__`, docs/numerics/sampling.md §2): load a diffusers folder once,
//! then generate any number of images from it. The three models run on the engine; so do the samplers (Flow-DPM-Solver,
//! Flow-Euler, Sana-Sprint's SCM), whose f32 latents stay engine state for the whole denoising loop, read back once
//! at its end.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cpu;
use crate::denoise_loop::DenoiseLoop;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::gpu::arena;
use crate::image::{resize_and_crop, resolution_bin, to_rgb8, Rgb8Image};
use crate::launch::sampler::schedule_table;
use crate::memory::{stage, StageStats};
use crate::model::config::{
    DpmSolverConfig, FlowEulerConfig, SchedulerConfig, ScmConfig, TransformerConfig,
};
use crate::model::dc_ae::DcAeDecoder;
use crate::model::embeddings::timestep_sinusoid;
use crate::model::gemma2::{Gemma2Model, GemmaConfig};
use crate::model::sana_dit::{SanaTransformer, TextConditioning, SINUSOID_CHANNELS};
use crate::model::vae_tiling::{self, VaeTile};
use crate::noise::BatchNoise;
use crate::scheduler::{Scheduler, ScmScheduler, ScmTimesteps};
use crate::tensor::HostTensor;
use crate::text::{GemmaTokenizer, PromptOptions, TextEncoder};

/// diffusers checks `height % 32` and `width % 32` whatever the VAE (`SanaPipeline.check_inputs`).
const SIZE_MULTIPLE: usize = 32;

/// The flow sampler to denoise with; `None` in a [`Request`] keeps the folder's `scheduler/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// DPM-Solver++ (2nd order, midpoint) on flow sigmas: what Sana ships.
    FlowDpmSolver,
    /// First-order Euler on flow sigmas (diffusers `FlowMatchEulerDiscreteScheduler`).
    FlowEuler,
}

/// One call of the pipeline. `Default` gives diffusers' defaults (1024², 20 steps, guidance 4.5, CHI on, binning
/// on) with seed 0.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: String,
    pub negative_prompt: String,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    /// Classifier-free guidance scale; active iff > 1 (the batch becomes `[uncond; cond]`).
    pub guidance: f32,
    /// Image `b` of the batch starts from the noise of seed `seed + b` (see [`crate::noise`]).
    pub seed: u64,
    pub sampler: Option<Sampler>,
    pub prompt_options: PromptOptions,
    /// Generate at the nearest aspect-ratio bin of the model's resolution and resize back
    /// (docs/numerics/sampling.md §3).
    pub resolution_binning: bool,
    /// Initial latents `[batch, C, h, w]` (f32) replacing the seeded noise; `h, w` at the generation size.
    pub latents: Option<HostTensor>,
    /// Sana-Sprint only: the standard-normal noise of each step, replacing the seeded stream (golden tests inject
    /// PyTorch's draws this way).
    pub step_noise: Option<Vec<HostTensor>>,
    pub batch: usize,
    /// Tiled VAE decoding: automatic from a memory budget by default.
    pub vae_tile: VaeTile,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            height: 1024,
            width: 1024,
            steps: 20,
            guidance: 4.5,
            seed: 0,
            sampler: None,
            prompt_options: PromptOptions::default(),
            resolution_binning: true,
            latents: None,
            step_noise: None,
            batch: 1,
            vae_tile: VaeTile::default(),
        }
    }
}

/// Wall-clock time and peak host memory of each stage of one generation.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    pub text_encode: StageStats,
    pub denoise: StageStats,
    pub decode: StageStats,
}

/// What [`Pipeline::generate`] returns.
pub struct Generation {
    /// The final latents `[batch, C, h, w]`, before the VAE's scaling-factor division.
    pub latents: HostTensor,
    pub images: Vec<Rgb8Image>,
    pub times: StageTimes,
}

/// The models of one diffusers folder. Configs and the VAE load up front; Gemma and the transformer load when first
/// needed, and Gemma is freed after each encoding unless `keep_text_encoder` is set, so the two large models are
/// never resident together by default.
pub struct Pipeline<E: Engine> {
    pub dir: PathBuf,
    pub transformer_config: TransformerConfig,
    pub vae: DcAeDecoder<E>,
    pub scheduler: SchedulerConfig,
    /// Keep Gemma loaded between generations (faster repeated calls, more memory).
    pub keep_text_encoder: bool,
    /// Parsed once at load (the real tokenizer.json is 17 MB of JSON); each Gemma load takes a copy.
    tokenizer: GemmaTokenizer,
    /// Gemma's config, for its working set per encoding (read once at load, not per generation).
    text_encoder_config: GemmaConfig,
    text_encoder: Mutex<Option<TextEncoder<E>>>,
    transformer: Mutex<Option<SanaTransformer<E>>>,
}

impl<E: Engine> Pipeline<E> {
    /// Opens a diffusers Sana folder: reads every config and the tokenizer, checks they fit together, loads the
    /// VAE; `tokenizer/`, `text_encoder/` and `transformer/` weights load on first use.
    pub fn load(e: &E, dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
            ));
        }
        let tokenizer = GemmaTokenizer::from_dir(&dir.join("tokenizer"))?;
        let text_encoder_config = GemmaConfig::load(&dir.join("text_encoder/config.json"))?;
        let transformer = TransformerConfig::load(&dir.join("transformer/config.json"))?;
        let vae = DcAeDecoder::from_dir(e, &dir.join("vae"))?;
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
                "{}: the transformer takes {latent_in} latent channels but the VAE decodes {latent_vae}",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            transformer_config: transformer,
            vae,
            scheduler,
            keep_text_encoder: false,
            tokenizer,
            text_encoder_config,
            text_encoder: Mutex::new(None),
            transformer: Mutex::new(None),
        })
    }

    /// Runs `f` on Gemma (loading it if needed), then frees it unless `keep_text_encoder`.
    fn with_text_encoder<R>(
        &self,
        e: &E,
        f: impl FnOnce(&TextEncoder<E>) -> Result<R>,
    ) -> Result<R> {
        with_loaded(
            &self.text_encoder,
            self.keep_text_encoder,
            || {
                Ok(TextEncoder {
                    tokenizer: self.tokenizer.clone(),
                    model: Gemma2Model::from_dir(e, &self.dir.join("text_encoder"))?,
                })
            },
            f,
        )
    }

    /// Runs `f` on the transformer, loading it on first use.
    fn with_transformer<R>(
        &self,
        e: &E,
        f: impl FnOnce(&SanaTransformer<E>) -> Result<R>,
    ) -> Result<R> {
        with_loaded(
            &self.transformer,
            true,
            || SanaTransformer::from_dir(e, &self.dir.join("transformer")),
            f,
        )
    }

    /// Sana-Sprint: the SCM sampler, guidance as a model input, no CFG.
    pub fn is_sprint(&self) -> bool {
        matches!(self.scheduler, SchedulerConfig::Scm(_))
    }

    /// Steps when the user gives none: Sana-Sprint's 2, diffusers' 20 otherwise.
    pub fn default_steps(&self) -> usize {
        if self.is_sprint() {
            2
        } else {
            20
        }
    }

    /// Image pixels per latent pixel (32 for the published DC-AE).
    pub fn vae_scale(&self) -> usize {
        self.vae.config.spatial_factor()
    }

    /// The size the image is generated at: the request's, or its aspect-ratio bin.
    pub fn generation_size(&self, req: &Request) -> Result<(usize, usize)> {
        check_size("height", req.height)?;
        check_size("width", req.width)?;
        if req.resolution_binning {
            resolution_bin(self.transformer_config.sample_size, req.height, req.width)
        } else {
            Ok((req.height, req.width))
        }
    }

    /// The whole pipeline: prompt → embeddings → denoising → decode → 8-bit images at the requested size.
    /// `progress(i, n)` is called after each denoising step.
    pub fn generate(
        &self,
        e: &E,
        req: &Request,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Generation> {
        let (latents, mut times) = self.denoise(e, req, progress)?;
        let (images, decode) = run_stage(
            e,
            "decode",
            self.decode_elements(&latents, req.vae_tile),
            || {
                let image = self.decode(e, &latents, req.vae_tile)?;
                let (gh, gw) = (image.shape()[2], image.shape()[3]);
                let image = if (gh, gw) != (req.height, req.width) {
                    resize_and_crop(&image, req.height, req.width)?
                } else {
                    image
                };
                to_rgb8(&image)
            },
        );
        let images = images?;
        times.decode = decode;
        Ok(Generation {
            latents,
            images,
            times,
        })
    }

    /// Text encoding and the denoising loop: the final latents `[batch, C, h, w]` (f32).
    pub fn denoise(
        &self,
        e: &E,
        req: &Request,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(HostTensor, StageTimes)> {
        if req.batch == 0 {
            return Err(Error::InvalidInput("--batch must be at least 1".into()));
        }
        let (height, width) = self.generation_size(req)?;
        let scale = self.vae_scale();
        let c = self.transformer_config.in_channels;
        let shape = [req.batch, c, height / scale, width / scale];
        let mut noise = BatchNoise::new(req.seed, req.batch);
        let latents = match &req.latents {
            Some(l) if l.shape() == shape => l.clone(),
            Some(l) => {
                return Err(Error::InvalidInput(format!(
                    "initial latents have shape {:?}; a {height}×{width} image (batch {}) needs {shape:?}",
                    l.shape(),
                    req.batch
                )))
            }
            None => noise.draw(&shape),
        };
        match &self.scheduler {
            SchedulerConfig::Scm(config) => {
                self.denoise_sprint(e, req, config, latents, &mut noise, progress)
            }
            _ => self.denoise_flow(e, req, latents, progress),
        }
    }

    /// Flow-DPM-Solver / Flow-Euler with classifier-free guidance (docs/numerics/sampling.md §2).
    fn denoise_flow(
        &self,
        e: &E,
        req: &Request,
        latents: HostTensor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(HostTensor, StageTimes)> {
        let scheduler = Scheduler::new(&self.sampler_config(req.sampler), req.steps)?;
        let mut times = StageTimes::default();
        let cfg = req.guidance > 1.0;
        let prompts = [req.prompt.as_str()];
        let text_elements = self.text_encode_elements(req, if cfg { 2 } else { 1 });
        let (embeds, stats) = run_stage(e, "text encode", text_elements, || {
            self.with_text_encoder(e, |enc| {
                if cfg {
                    let out = enc.encode_prompt(
                        e,
                        &prompts,
                        &[req.negative_prompt.as_str()],
                        &req.prompt_options,
                    )?;
                    Ok((
                        concat_batch(
                            &repeat_batch(&out.negative_prompt_embeds, req.batch)?,
                            &repeat_batch(&out.prompt_embeds, req.batch)?,
                        )?,
                        concat_batch(
                            &repeat_batch(&out.negative_prompt_attention_mask, req.batch)?,
                            &repeat_batch(&out.prompt_attention_mask, req.batch)?,
                        )?,
                    ))
                } else {
                    let (embeds, mask) = enc.encode_positive(e, &prompts, &req.prompt_options)?;
                    Ok((
                        repeat_batch(&embeds, req.batch)?,
                        repeat_batch(&mask, req.batch)?,
                    ))
                }
            })
        });
        let (text, mask) = embeds?;
        times.text_encode = stats;

        let model_batch = if cfg { 2 * req.batch } else { req.batch };
        let step_elements = self.denoise_elements(req, model_batch, &latents);
        let (latents, stats) = run_stage(e, "denoise", step_elements, || {
            self.with_transformer(e, |dit| {
                self.flow_loop(e, dit, req, &scheduler, latents, &text, &mask, progress)
            })
        });
        times.denoise = stats;
        Ok((latents?, times))
    }

    /// The denoising loop of [`Self::denoise_flow`]: the schedule's timesteps (× `timestep_scale`) and DPM-Solver
    /// or Euler rules, both CFG halves as one batch.
    #[allow(clippy::too_many_arguments)]
    fn flow_loop(
        &self,
        e: &E,
        dit: &SanaTransformer<E>,
        req: &Request,
        scheduler: &Scheduler,
        latents: HostTensor,
        text: &HostTensor,
        mask: &HostTensor,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<HostTensor> {
        let text = dit.encode_text(e, text, mask)?;
        let timestep_scale = self.transformer_config.timestep_scale as f32;
        let timesteps: Vec<f32> = scheduler
            .timesteps()
            .iter()
            .map(|&t| t * timestep_scale)
            .collect();
        let schedule = schedule_table(&timesteps, &scheduler.rules())?;
        let cfg = (req.guidance > 1.0).then_some(req.guidance);
        let run = DenoiseLoop {
            dit,
            text: &text,
            schedule,
            guidance: cfg,
            guidance_sinusoid: None,
            noise: None,
        };
        run.run(e, &latents, progress)
    }

    /// Sana-Sprint's SCM loop (docs/numerics/sampling.md §10): TrigFlow times, guidance as an input, fresh noise each
    /// step; returns the last `x0 / σ_d`.
    fn denoise_sprint(
        &self,
        e: &E,
        req: &Request,
        config: &ScmConfig,
        latents: HostTensor,
        noise: &mut BatchNoise,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(HostTensor, StageTimes)> {
        let scheduler = ScmScheduler::new(config, ScmTimesteps::sprint_default(req.steps))?;
        if let Some(noise) = &req.step_noise {
            if noise.len() != req.steps || noise.iter().any(|n| n.shape() != latents.shape()) {
                return Err(Error::InvalidInput(format!(
                    "step noise: {} tensors given for {} steps of latents {:?}",
                    noise.len(),
                    req.steps,
                    latents.shape()
                )));
            }
        }
        let mut times = StageTimes::default();
        let text_elements = self.text_encode_elements(req, 1);
        let (embeds, stats) = run_stage(e, "text encode", text_elements, || {
            self.with_text_encoder(e, |enc| {
                enc.encode_positive(e, &[req.prompt.as_str()], &req.prompt_options)
            })
        });
        let (embeds, mask) = embeds?;
        times.text_encode = stats;
        let (embeds, mask) = (
            repeat_batch(&embeds, req.batch)?,
            repeat_batch(&mask, req.batch)?,
        );
        let step_elements = self.denoise_elements(req, req.batch, &latents);
        let (latents, stats) = run_stage(e, "denoise", step_elements, || {
            self.with_transformer(e, |dit| {
                let text = dit.encode_text(e, &embeds, &mask)?;
                self.sprint_loop(e, dit, req, &scheduler, latents, &text, noise, progress)
            })
        });
        times.denoise = stats;
        Ok((latents?, times))
    }

    /// The SCM loop of [`Self::denoise_sprint`]: every step's noise drawn up front (the seeded stream's order is
    /// the per-step order), guidance as a model input; returns the last `x0 / σ_d`.
    #[allow(clippy::too_many_arguments)]
    fn sprint_loop(
        &self,
        e: &E,
        dit: &SanaTransformer<E>,
        req: &Request,
        scheduler: &ScmScheduler,
        latents: HostTensor,
        text: &TextConditioning<E>,
        noise: &mut BatchNoise,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<HostTensor> {
        let sd = scheduler.sigma_data();
        let (timesteps, rules) = scheduler.rules();
        let mut step_noise = Vec::with_capacity(latents.len() * rules.len());
        for i in 0..rules.len() {
            let n = match &req.step_noise {
                Some(given) => given[i].clone(),
                None => noise.draw(latents.shape()),
            };
            step_noise.extend_from_slice(cpu::layout::nchw_to_tokens(&n)?.data());
        }
        // diffusers multiplies the guidance (in the text dtype) by `guidance_embeds_scale`, both f32 here.
        let guidance =
            vec![req.guidance * self.transformer_config.guidance_embeds_scale as f32; req.batch];
        let guidance = e.upload(&timestep_sinusoid(&guidance, SINUSOID_CHANNELS)?)?;
        let run = DenoiseLoop {
            dit,
            text,
            schedule: schedule_table(&timesteps, &rules)?,
            guidance: None,
            guidance_sinusoid: Some(&guidance),
            noise: Some(HostTensor::new(vec![step_noise.len()], step_noise)?),
        };
        let x0 = run.run(e, &map(&latents, |v| v * sd)?, progress)?;
        map(&x0, |v| v / sd)
    }

    /// `vae.decode(latents / scaling_factor)`, tiled as `tile` decides: the raw decoder output `[B, 3, H, W]` (f32
    /// on the host).
    pub fn decode(&self, e: &E, latents: &HostTensor, tile: VaeTile) -> Result<HostTensor> {
        let sf = self.vae.config.scaling_factor;
        let z = map(latents, |v| v / sf)?;
        latents.expect_shape("decode (latents)", &[None, None, None, None])?;
        let [h, w] = [latents.shape()[2], latents.shape()[3]];
        match vae_tiling::resolve(&self.vae, tile, h, w) {
            Some(tiling) => vae_tiling::decode_tiled(e, &self.vae, &z, tiling),
            None => e.download(&self.vae.decode(e, &e.upload(&z)?)?),
        }
    }

    /// Gemma's working set for `prompts` encodings (src/gpu/arena.rs). The instruction prefix is shorter than
    /// `max_sequence_length` tokens, so twice that bounds a prefixed prompt.
    fn text_encode_elements(&self, req: &Request, prompts: usize) -> usize {
        let opts = &req.prompt_options;
        let prefix = if opts.complex_human_instruction.is_empty() {
            1
        } else {
            2
        };
        arena::text_encode_elements(
            &self.text_encoder_config,
            prompts,
            prefix * opts.max_sequence_length,
        )
    }

    /// One denoising step's working set for `model_batch` images (both CFG halves) of `latents`' size.
    fn denoise_elements(&self, req: &Request, model_batch: usize, latents: &HostTensor) -> usize {
        let (h, w) = (latents.shape()[2], latents.shape()[3]);
        let text = req.prompt_options.max_sequence_length;
        arena::denoise_step_elements(&self.transformer_config, model_batch, h, w, text)
    }

    /// The decoder's working set for `latents`, per tile when `tile` tiles.
    fn decode_elements(&self, latents: &HostTensor, tile: VaeTile) -> usize {
        let (h, w) = (latents.shape()[2], latents.shape()[3]);
        let scale = self.vae_scale();
        let (h, w) = match vae_tiling::resolve(&self.vae, tile, h, w) {
            Some(t) => ((t.tile / scale).min(h), (t.tile / scale).min(w)),
            None => (h, w),
        };
        arena::decode_elements(&self.vae.config, h, w)
    }

    /// The folder's scheduler, or the requested sampler with the folder's flow shift.
    fn sampler_config(&self, sampler: Option<Sampler>) -> SchedulerConfig {
        let (train, shift) = match &self.scheduler {
            SchedulerConfig::FlowDpmSolver(c) => (c.num_train_timesteps, c.flow_shift),
            SchedulerConfig::FlowEuler(c) => (c.num_train_timesteps, c.shift),
            SchedulerConfig::Scm(c) => (c.num_train_timesteps, 1.0),
        };
        match (sampler, &self.scheduler) {
            (None, config)
            | (Some(Sampler::FlowDpmSolver), config @ SchedulerConfig::FlowDpmSolver(_))
            | (Some(Sampler::FlowEuler), config @ SchedulerConfig::FlowEuler(_)) => config.clone(),
            // Sana's published DPM-Solver settings (docs/numerics/sampling.md §5).
            (Some(Sampler::FlowDpmSolver), _) => SchedulerConfig::FlowDpmSolver(DpmSolverConfig {
                num_train_timesteps: train,
                flow_shift: shift,
                solver_order: 2,
                lower_order_final: true,
                euler_at_final: false,
                final_sigma_zero: true,
            }),
            (Some(Sampler::FlowEuler), _) => SchedulerConfig::FlowEuler(FlowEulerConfig {
                num_train_timesteps: train,
                shift,
            }),
        }
    }
}

fn check_size(flag: &str, value: usize) -> Result<()> {
    if value == 0 || value % SIZE_MULTIPLE != 0 {
        return Err(Error::InvalidInput(format!(
            "--{flag} {value} is not a positive multiple of {SIZE_MULTIPLE}"
        )));
    }
    Ok(())
}

/// Runs `f` as pipeline stage `name`: the engine is told the stage's working set first (a device engine fails
/// here, before any work, when it cannot fit), then time and peak host and device memory are measured.
fn run_stage<E: Engine, R>(
    e: &E,
    name: &'static str,
    activation_elements: usize,
    f: impl FnOnce() -> Result<R>,
) -> (Result<R>, StageStats) {
    if let Err(err) = e.begin_stage(name, activation_elements) {
        return (Err(err), StageStats::default());
    }
    let (out, mut stats) = stage(f);
    stats.peak_device_bytes = e.peak_device_bytes();
    (out, stats)
}

/// Runs `f` on the model in `slot`, loading it first if the slot is empty; keeps it there afterwards iff `keep`.
fn with_loaded<M, R>(
    slot: &Mutex<Option<M>>,
    keep: bool,
    load: impl FnOnce() -> Result<M>,
    f: impl FnOnce(&M) -> Result<R>,
) -> Result<R> {
    let mut slot = slot.lock().map_err(|_| {
        Error::InvalidInput("the pipeline is unusable after a panic in an earlier call".into())
    })?;
    let model = match slot.take() {
        Some(model) => model,
        None => load()?,
    };
    let out = f(&model);
    if keep {
        *slot = Some(model);
    }
    out
}

fn map(t: &HostTensor, f: impl Fn(f32) -> f32) -> Result<HostTensor> {
    HostTensor::new(t.shape().to_vec(), t.data().iter().map(|&v| f(v)).collect())
}

/// `[1, …]` → `[n, …]` by repetition (diffusers' `num_images_per_prompt`).
fn repeat_batch(t: &HostTensor, n: usize) -> Result<HostTensor> {
    let mut shape = t.shape().to_vec();
    shape[0] *= n;
    HostTensor::new(shape, t.data().repeat(n))
}

/// Concatenation along the batch dimension.
fn concat_batch(a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    if a.shape()[1..] != b.shape()[1..] {
        return Err(Error::shape(
            "concat_batch",
            format!("{:?} and {:?}", a.shape(), b.shape()),
        ));
    }
    let mut shape = a.shape().to_vec();
    shape[0] += b.shape()[0];
    HostTensor::new(shape, [a.data(), b.data()].concat())
}
