//! What a generation returns: the images, the latents they were decoded from, the time and memory of each stage,
//! and the plan that ran.

use crate::image::Image;
use crate::memory::StageStats;
use crate::pipeline::Plan;
use crate::tensor::HostTensor;

/// Wall-clock time and peak memory of each stage of one generation.
#[derive(Clone, Copy, Debug, Default)]
pub struct StageTimes {
    /// The text encoder (zero for precomputed embeddings), including its load when it was not resident.
    pub text_encode: StageStats,
    /// The denoising loop, including the transformer's load on first use.
    pub denoise: StageStats,
    /// The VAE decode and the conversion to pixels.
    pub decode: StageStats,
}

/// The result of [`crate::Sana::generate`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Generation {
    /// One image per batch element, at the requested size: image `p · images_per_prompt + k` is prompt `p`'s `k`-th.
    pub images: Vec<Image>,
    /// The final latents `[batch, C, h, w]` (f32), before the VAE's scaling-factor division.
    pub latents: HostTensor,
    /// Time and memory of each stage.
    pub times: StageTimes,
    /// The request as planned: sizes, steps, guidance and sampler after the model's defaults.
    pub plan: Plan,
}
