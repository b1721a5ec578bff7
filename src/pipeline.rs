//! The text-to-image pipeline (`SanaPipeline.__call__`, spec sampling.md §2): load a diffusers folder once, then
//! generate any number of images from it. Latents and the sampler run in f32 on the host; the three models run on
//! the engine.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::image::{resize_and_crop, resolution_bin, to_rgb8, Rgb8Image};
use crate::model::config::{DpmSolverConfig, FlowEulerConfig, SchedulerConfig};
use crate::model::dc_ae::DcAeDecoder;
use crate::model::sana_dit::SanaTransformer;
use crate::noise;
use crate::scheduler::Scheduler;
use crate::tensor::HostTensor;
use crate::text::{PromptOptions, TextEncoder};

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
    /// Generate at the nearest aspect-ratio bin of the model's resolution and resize back (spec sampling.md §3).
    pub resolution_binning: bool,
    /// Initial latents `[batch, C, h, w]` (f32) replacing the seeded noise; `h, w` at the generation size.
    pub latents: Option<HostTensor>,
    pub batch: usize,
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
            batch: 1,
        }
    }
}

/// Wall-clock time of each stage of one generation.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    pub text_encode: Duration,
    pub denoise: Duration,
    pub decode: Duration,
}

/// What [`Pipeline::generate`] returns.
pub struct Generation {
    /// The final latents `[batch, C, h, w]`, before the VAE's scaling-factor division.
    pub latents: HostTensor,
    pub images: Vec<Rgb8Image>,
    pub times: StageTimes,
}

/// The models of one diffusers folder, loaded once.
pub struct Pipeline<E: Engine> {
    pub dir: PathBuf,
    pub text_encoder: TextEncoder<E>,
    pub transformer: SanaTransformer<E>,
    pub vae: DcAeDecoder<E>,
    pub scheduler: SchedulerConfig,
}

impl<E: Engine> Pipeline<E> {
    /// Loads `tokenizer/`, `text_encoder/`, `transformer/`, `vae/` and `scheduler/` of a diffusers Sana folder.
    pub fn load(e: &E, dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
            ));
        }
        let text_encoder = TextEncoder::from_dir(e, dir)?;
        let transformer = SanaTransformer::from_dir(e, &dir.join("transformer"))?;
        let vae = DcAeDecoder::from_dir(e, &dir.join("vae"))?;
        let scheduler = SchedulerConfig::load(&dir.join("scheduler/scheduler_config.json"))?;
        if let SchedulerConfig::Scm(_) = scheduler {
            return Err(Error::InvalidInput(format!(
                "{}: SCMScheduler (Sana-Sprint) folders are not supported by this pipeline yet",
                dir.display()
            )));
        }
        let (latent_in, latent_vae) = (transformer.config.in_channels, vae.config.latent_channels);
        if latent_in != latent_vae {
            return Err(Error::InvalidInput(format!(
                "{}: the transformer takes {latent_in} latent channels but the VAE decodes {latent_vae}",
                dir.display()
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            text_encoder,
            transformer,
            vae,
            scheduler,
        })
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
            resolution_bin(self.transformer.config.sample_size, req.height, req.width)
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
        let start = Instant::now();
        let image = self.decode(e, &latents)?;
        let (gh, gw) = (image.shape()[2], image.shape()[3]);
        let image = if (gh, gw) != (req.height, req.width) {
            resize_and_crop(&image, req.height, req.width)?
        } else {
            image
        };
        let images = to_rgb8(&image)?;
        times.decode = start.elapsed();
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
        let c = self.transformer.config.in_channels;
        let shape = [req.batch, c, height / scale, width / scale];
        let mut latents = match &req.latents {
            Some(l) if l.shape() == shape => l.clone(),
            Some(l) => {
                return Err(Error::InvalidInput(format!(
                    "initial latents have shape {:?}; a {height}×{width} image (batch {}) needs {shape:?}",
                    l.shape(),
                    req.batch
                )))
            }
            None => noise::latents(req.seed, &shape),
        };
        let mut scheduler = Scheduler::new(&self.sampler_config(req.sampler), req.steps)?;
        let mut times = StageTimes::default();

        let start = Instant::now();
        let cfg = req.guidance > 1.0;
        let embeds = self.text_encoder.encode_prompt(
            e,
            &[req.prompt.as_str()],
            &[req.negative_prompt.as_str()],
            &req.prompt_options,
        )?;
        let positive = repeat_batch(&embeds.prompt_embeds, req.batch)?;
        let positive_mask = repeat_batch(&embeds.prompt_attention_mask, req.batch)?;
        let (text, mask) = if cfg {
            let negative = repeat_batch(&embeds.negative_prompt_embeds, req.batch)?;
            let negative_mask = repeat_batch(&embeds.negative_prompt_attention_mask, req.batch)?;
            (
                concat_batch(&negative, &positive)?,
                concat_batch(&negative_mask, &positive_mask)?,
            )
        } else {
            (positive, positive_mask)
        };
        let text = self.transformer.encode_text(e, &text, &mask)?;
        times.text_encode = start.elapsed();

        let start = Instant::now();
        let timesteps = scheduler.timesteps().to_vec();
        let timestep_scale = self.transformer.config.timestep_scale as f32;
        let model_batch = if cfg { 2 * req.batch } else { req.batch };
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if cfg {
                concat_batch(&latents, &latents)?
            } else {
                latents.clone()
            };
            let t = vec![t * timestep_scale; model_batch];
            let v = e.download(&self.transformer.forward(e, &input, &text, &t, None)?)?;
            let v = if cfg { guide(&v, req.guidance)? } else { v };
            latents = scheduler.step(&v, &latents)?;
            progress(i + 1, timesteps.len());
        }
        times.denoise = start.elapsed();
        Ok((latents, times))
    }

    /// `vae.decode(latents / scaling_factor)`: the raw decoder output `[B, 3, H, W]` (f32 on the host).
    pub fn decode(&self, e: &E, latents: &HostTensor) -> Result<HostTensor> {
        let sf = self.vae.config.scaling_factor;
        let z: Vec<f32> = latents.data().iter().map(|&v| v / sf).collect();
        let z = e.upload(&HostTensor::new(latents.shape().to_vec(), z)?)?;
        e.download(&self.vae.decode(e, &z)?)
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
            // Sana's published DPM-Solver settings (spec sampling.md §5).
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

/// Classifier-free guidance on `[uncond; cond]`: `v_u + g·(v_c − v_u)` in f32 (spec sampling.md §8).
fn guide(v: &HostTensor, g: f32) -> Result<HostTensor> {
    let half = v.len() / 2;
    let (u, c) = v.data().split_at(half);
    let out = u.iter().zip(c).map(|(&u, &c)| u + g * (c - u)).collect();
    let mut shape = v.shape().to_vec();
    shape[0] /= 2;
    HostTensor::new(shape, out)
}
