//! The denoising loop, resident on the engine, that every sampler of the pipeline runs (src/pipeline/).

use crate::cpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::sana_dit::{
    SanaControlNet, SanaTransformer, TextConditioning, SINUSOID_CHANNELS,
};
use crate::tensor::HostTensor;
use crate::vocabulary::Guidance;

/// One denoising loop resident on the engine: the f32 sample, the clean estimate, the step schedule (timesteps and
/// rules, src/launch/sampler.rs) and, for SCM, every step's noise are engine state; each step is the same sequence of
/// ops — model input, timestep sinusoid, transformer, sampler update, schedule advance — with nothing read back, so
/// a device engine replays it as a graph ([`Engine::repeat_steps`]).
pub(crate) struct DenoiseLoop<'a, E: Engine> {
    pub(crate) dit: &'a SanaTransformer<E>,
    pub(crate) text: &'a TextConditioning<E>,
    pub(crate) schedule: HostTensor,
    /// The model batch's chunks: `[uncond; cond]` under classifier-free guidance, a perturbed-attention copy last
    /// under PAG (whose per-step scale is in the schedule).
    pub(crate) guidance: Guidance,
    /// Sana-Sprint's guidance embedding input.
    pub(crate) guidance_sinusoid: Option<&'a E::Tensor>,
    /// `[steps · B·h·w·C]`, token layout (SCM).
    pub(crate) noise: Option<HostTensor>,
    /// ControlNet: its residuals, computed each step from the same input, join the transformer's blocks.
    pub(crate) controlnet: Option<ControlNetStep<'a, E>>,
}

/// What the ControlNet runs on each step besides the model input and timestep: its own text side, the embedded
/// control latents and the conditioning-scale tensor ([`SanaControlNet::forward_tokens`]).
pub(crate) struct ControlNetStep<'a, E: Engine> {
    pub(crate) net: &'a SanaControlNet<E>,
    pub(crate) text: &'a TextConditioning<E>,
    pub(crate) control: &'a E::Tensor,
    pub(crate) scale: &'a E::Tensor,
}

impl<E: Engine> DenoiseLoop<'_, E> {
    /// Runs every step from `latents` `[B, C, h, w]`; returns, as `[B, C, h, w]`, what the sampler yields: the final
    /// sample of the flow samplers, the last clean estimate of SCM (the loop with noise).
    pub(crate) fn run(
        &self,
        e: &E,
        latents: &HostTensor,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<HostTensor> {
        let steps = crate::vocabulary::schedule::schedule_steps(&self.schedule)?;
        let (h, w) = (latents.shape()[2], latents.shape()[3]);
        let tokens = cpu::layout::nchw_to_tokens(latents)?;
        let mut schedule = e.upload_state(&self.schedule)?;
        let mut x = e.upload_state(&tokens)?;
        // Written before it is read: the first flow step is first order, and SCM steps only write it.
        let mut x0 = e.upload_state(&tokens)?;
        let noise = self.noise.as_ref().map(|n| e.upload_state(n)).transpose()?;
        let copies = self.guidance.copies();
        let model_batch = copies * latents.shape()[0];
        let mut done = 0;
        let mut step = || -> Result<()> {
            let input = e.model_input(&x, copies, &schedule)?;
            let t = e.step_sinusoid(&schedule, model_batch, SINUSOID_CHANNELS)?;
            let residuals = match &self.controlnet {
                Some(c) => Some(c.net.forward_tokens(
                    e,
                    &input,
                    (h, w),
                    c.text,
                    &t,
                    (c.control, c.scale),
                )?),
                None => None,
            };
            let out = self.dit.forward_tokens(
                e,
                &input,
                (h, w),
                self.text,
                &t,
                self.guidance_sinusoid,
                residuals.as_deref(),
                &mut |_, _| Ok(()),
            )?;
            e.flow_step(
                &schedule,
                &out,
                self.guidance,
                noise.as_ref(),
                &mut x,
                &mut x0,
            )?;
            e.advance_schedule(&mut schedule)?;
            done += 1;
            // Where counting is free (host engines), name the first step that went non-finite.
            let sample = if noise.is_some() { &x0 } else { &x };
            match e.non_finite_in_state(sample) {
                Some(count) if count > 0 => Err(Error::NonFinite {
                    stage: "denoise",
                    step: Some((done, steps)),
                    count,
                    total: tokens.len(),
                }),
                _ => Ok(()),
            }
        };
        e.repeat_steps(steps, &mut step, progress)?;
        let result = if self.noise.is_some() { &x0 } else { &x };
        cpu::layout::tokens_to_nchw(&e.download_state(result)?, h, w)
    }
}
