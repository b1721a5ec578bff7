//! One generation request: prompts (or their precomputed embeddings) and every option, built with methods. What a
//! request leaves unset comes from the model folder when the request is planned ([`crate::Plan`]).

use crate::image::Image;
use crate::model::vae_tiling::VaeTile;
use crate::tensor::HostTensor;
use crate::text::{PromptEmbeddings, PromptOptions};

/// The sampler to denoise with; unset, the model folder's `scheduler/` decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sampler {
    /// DPM-Solver++ (2nd order, midpoint) on flow sigmas: what Sana ships.
    FlowDpmSolver,
    /// First-order Euler on flow sigmas (diffusers `FlowMatchEulerDiscreteScheduler`).
    FlowEuler,
    /// Sana-Sprint's SCM sampler (Sprint models only, and the only sampler they take).
    Scm,
}

/// What conditions the images.
#[derive(Clone, Debug)]
pub(crate) enum Conditioning {
    /// Prompts to encode; image `p · batch + k` is the `k`-th image of prompt `p`.
    Text(Vec<String>),
    /// Embeddings from [`crate::Sana::encode_prompt`] (or any `[P, M, D]` tensors of the text encoder's width).
    Embeddings(PromptEmbeddings),
}

/// One call of [`crate::Sana::generate`].
///
/// ```
/// let req = sana::Request::new("a red fox in the snow").size(512, 512).steps(20).seed(7);
/// # let _ = req;
/// ```
#[derive(Clone, Debug)]
pub struct Request {
    pub(crate) conditioning: Conditioning,
    pub(crate) negative_prompt: String,
    pub(crate) size: Option<(usize, usize)>,
    pub(crate) steps: Option<usize>,
    pub(crate) guidance: Option<f32>,
    pub(crate) seed: u64,
    pub(crate) image_seeds: Option<Vec<u64>>,
    pub(crate) sampler: Option<Sampler>,
    pub(crate) prompt_options: PromptOptions,
    pub(crate) resolution_binning: bool,
    pub(crate) latents: Option<HostTensor>,
    pub(crate) step_noise: Option<Vec<HostTensor>>,
    pub(crate) batch: usize,
    pub(crate) vae_tile: VaeTile,
    pub(crate) init_image: Option<Image>,
    pub(crate) strength: f64,
    pub(crate) pag_scale: f32,
    pub(crate) pag_adaptive_scale: f32,
    pub(crate) pag_layers: Option<Vec<String>>,
    pub(crate) control_image: Option<Image>,
    pub(crate) control_scale: f32,
}

/// How much of the schedule image-to-image runs when a request gives no strength (diffusers'
/// `SanaSprintImg2ImgPipeline` default).
pub(crate) const DEFAULT_STRENGTH: f64 = 0.6;

impl Request {
    /// A request for one prompt, with diffusers' defaults: the complex human instruction prefix, resolution
    /// binning, seed 0, one image; size, steps, guidance and sampler from the model folder.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self::with_conditioning(Conditioning::Text(vec![prompt.into()]))
    }

    /// A request for several different prompts, encoded and denoised as one batch (each gets [`Self::batch`]
    /// images; image `p · batch + k` is prompt `p`'s `k`-th, seeded `seed + p · batch + k`).
    pub fn for_prompts<S: Into<String>>(prompts: impl IntoIterator<Item = S>) -> Self {
        Self::with_conditioning(Conditioning::Text(
            prompts.into_iter().map(Into::into).collect(),
        ))
    }

    /// A request from precomputed prompt embeddings ([`crate::Sana::encode_prompt`]): the text encoder does not run.
    /// Their negative half is used when classifier-free guidance is on.
    pub fn from_embeddings(embeddings: PromptEmbeddings) -> Self {
        Self::with_conditioning(Conditioning::Embeddings(embeddings))
    }

    fn with_conditioning(conditioning: Conditioning) -> Self {
        Self {
            conditioning,
            negative_prompt: String::new(),
            size: None,
            steps: None,
            guidance: None,
            seed: 0,
            image_seeds: None,
            sampler: None,
            prompt_options: PromptOptions::default(),
            resolution_binning: true,
            latents: None,
            step_noise: None,
            batch: 1,
            vae_tile: VaeTile::default(),
            init_image: None,
            strength: DEFAULT_STRENGTH,
            pag_scale: 0.0,
            pag_adaptive_scale: 0.0,
            pag_layers: None,
            control_image: None,
            control_scale: 1.0,
        }
    }

    /// The negative prompt of every prompt (default ""); never prefixed. Unused without classifier-free guidance.
    pub fn negative_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.negative_prompt = prompt.into();
        self
    }

    /// Image size in pixels, each a multiple of 32 (default: the model's trained resolution).
    pub fn size(mut self, width: usize, height: usize) -> Self {
        self.size = Some((width, height));
        self
    }

    /// Sampler steps (default: 20; Sana-Sprint's 2).
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }

    /// Seed of the initial noise ([`crate::noise`]); image `i` of the batch uses `seed + i` (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// One seed per image, in image order, instead of `seed + i`: image `i` is then the image a lone request with
    /// seed `seeds[i]` gives. This is how separate requests for different prompts and seeds are merged into one batch
    /// (an HTTP service's batching); the plan refuses a list whose length is not the number of images.
    pub fn image_seeds(mut self, seeds: Vec<u64>) -> Self {
        self.image_seeds = Some(seeds);
        self
    }

    /// Guidance scale (default 4.5): classifier-free guidance, on above 1; for Sana-Sprint, the model's guidance
    /// input.
    pub fn guidance(mut self, guidance: f32) -> Self {
        self.guidance = Some(guidance);
        self
    }

    /// Images per prompt (default 1).
    pub fn batch(mut self, images_per_prompt: usize) -> Self {
        self.batch = images_per_prompt;
        self
    }

    /// Generate at the nearest trained aspect-ratio bin and resize back to the requested size (default on), as
    /// diffusers does.
    pub fn resolution_binning(mut self, on: bool) -> Self {
        self.resolution_binning = on;
        self
    }

    /// The sampler (default: the model folder's scheduler).
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// Sana's complex human instruction prefix before every prompt (default on).
    pub fn complex_human_instruction(mut self, on: bool) -> Self {
        if on {
            self.prompt_options.complex_human_instruction =
                PromptOptions::default().complex_human_instruction;
        } else {
            self.prompt_options.complex_human_instruction.clear();
        }
        self
    }

    /// Prompt tokens kept per prompt (diffusers `max_sequence_length`, default 300).
    pub fn max_sequence_length(mut self, tokens: usize) -> Self {
        self.prompt_options.max_sequence_length = tokens;
        self
    }

    /// Initial latents `[batch, C, h, w]` (f32, at the generation size) instead of seeded noise.
    pub fn latents(mut self, latents: HostTensor) -> Self {
        self.latents = Some(latents);
        self
    }

    /// Sana-Sprint: the standard-normal noise of each step, one `[batch, C, h, w]` tensor per step, instead of the
    /// seeded stream (how tests inject PyTorch's draws).
    pub fn step_noise(mut self, noise: Vec<HostTensor>) -> Self {
        self.step_noise = Some(noise);
        self
    }

    /// Tiled VAE decoding (default: automatic, when an untiled decode would need over 4 GiB of activations).
    pub fn vae_tile(mut self, tile: VaeTile) -> Self {
        self.vae_tile = tile;
        self
    }

    /// Sana-Sprint image-to-image (`SanaSprintImg2ImgPipeline`): start from `image` instead of pure noise. It is
    /// resized to the generation size (PIL's Lanczos, no crop), encoded by the VAE, times the scaling factor, and
    /// noised to the first TrigFlow time of the schedule [`Self::strength`] keeps. With [`Self::latents`], those are
    /// the standard-normal noise mixed in (the seeded stream's first draw otherwise). Sprint folders only.
    pub fn init_image(mut self, image: Image) -> Self {
        self.init_image = Some(image);
        self
    }

    /// Image-to-image strength in (0, 1] (default 0.6; f64, as the Python float diffusers computes with): of the
    /// `steps`-step schedule, the steps from `t_start = int(steps − steps · strength)` on run, as diffusers'
    /// `get_timesteps` truncates it; 1 runs them all from pure noise's time.
    pub fn strength(mut self, strength: f64) -> Self {
        self.strength = strength;
        self
    }

    /// Perturbed-attention guidance (`SanaPAGPipeline`), on above 0 (default 0: off): the transformer also runs a copy
    /// of the batch whose self-attention in [`Self::pag_layers`] is the identity (`to_out(to_v(x))`), and the
    /// velocity gains `scale·(cond − perturbed)`. Flow samplers only (not Sana-Sprint).
    pub fn pag_scale(mut self, scale: f32) -> Self {
        self.pag_scale = scale;
        self
    }

    /// PAG's adaptive scaling (default 0: off): the scale at timestep `t` (0–1000) is
    /// `max(0, pag_scale − adaptive · (1000 − t))`, as diffusers' `_get_pag_scale`.
    pub fn pag_adaptive_scale(mut self, adaptive: f32) -> Self {
        self.pag_adaptive_scale = adaptive;
        self
    }

    /// The self-attention layers PAG perturbs, as diffusers names them (default `["transformer_blocks.0"]`). Each is
    /// matched as diffusers matches it, as a prefix of `transformer_blocks.{i}.attn1`: `transformer_blocks.1` also
    /// takes blocks 10–19 of a model that has them.
    pub fn pag_layers<S: Into<String>>(mut self, layers: impl IntoIterator<Item = S>) -> Self {
        self.pag_layers = Some(layers.into_iter().map(Into::into).collect());
        self
    }

    /// ControlNet (`SanaControlNetPipeline`): condition on `image` through the folder's `controlnet/`. The image is
    /// resized to the generation size (PIL's Lanczos, no crop), encoded by the VAE, times the scaling factor; each
    /// step the ControlNet's block outputs, times [`Self::control_scale`], are added after the transformer's blocks
    /// 1, 2, …. Flow samplers only.
    pub fn control_image(mut self, image: Image) -> Self {
        self.control_image = Some(image);
        self
    }

    /// ControlNet's conditioning scale (diffusers' `controlnet_conditioning_scale`, default 1.0).
    pub fn control_scale(mut self, scale: f32) -> Self {
        self.control_scale = scale;
        self
    }
}
