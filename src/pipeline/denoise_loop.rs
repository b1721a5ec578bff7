//! The denoising loop, resident on the engine, that every sampler of the pipeline runs (src/pipeline/).

use crate::cpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::sana_dit::{
    SanaControlNet, SanaTransformer, TextConditioning, SINUSOID_CHANNELS,
};
use crate::tensor::HostTensor;
use crate::vocabulary::Guidance;

use super::kept_loops::{ControlNetBuffers, KeptLoop, KeptLoops, LoopBuffers, LoopInputs, LoopKey};

/// One denoising loop resident on the engine: the f32 sample, the clean estimate, the step schedule (timesteps and
/// rules, src/launch/sampler.rs) and, for SCM, every step's noise are engine state; each step is the same sequence of
/// ops — model input, timestep sinusoid, transformer, sampler update, schedule advance — with nothing read back, so
/// a device engine replays it as a graph ([`Engine::repeat_steps`]), and a later loop of the same shape replays that
/// graph again ([`KeptLoops`]).
pub(crate) struct DenoiseLoop<'a, E: Engine> {
    pub(crate) dit: &'a SanaTransformer<E>,
    pub(crate) text: TextConditioning<E>,
    pub(crate) schedule: HostTensor,
    /// The model batch's chunks: `[uncond; cond]` under classifier-free guidance, a perturbed-attention copy last
    /// under PAG (whose per-step scale is in the schedule).
    pub(crate) guidance: Guidance,
    /// Sana-Sprint's guidance embedding input.
    pub(crate) guidance_sinusoid: Option<E::Tensor>,
    /// `[steps · B·h·w·C]`, token layout (SCM).
    pub(crate) noise: Option<HostTensor>,
    /// ControlNet: its residuals, computed each step from the same input, join the transformer's blocks.
    pub(crate) controlnet: Option<ControlNetStep<'a, E>>,
}

/// What the ControlNet runs on each step besides the model input and timestep: its own text side, the embedded
/// control latents and the conditioning-scale tensor ([`SanaControlNet::forward_tokens`]).
pub(crate) struct ControlNetStep<'a, E: Engine> {
    pub(crate) net: &'a SanaControlNet<E>,
    pub(crate) inputs: ControlNetBuffers<E>,
}

impl<E: Engine> DenoiseLoop<'_, E> {
    /// Runs every step from `latents` `[B, C, h, w]`; returns, as `[B, C, h, w]`, what the sampler yields: the final
    /// sample of the flow samplers, the last clean estimate of SCM (the loop with noise). A loop of the same
    /// [`LoopKey`] in `kept` replays its graph on this loop's inputs; otherwise a graph the engine captures is kept.
    pub(crate) fn run(
        self,
        e: &E,
        latents: &HostTensor,
        kept: &mut KeptLoops<E>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<HostTensor> {
        let steps = crate::vocabulary::schedule::schedule_steps(&self.schedule)?;
        let (h, w) = (latents.shape()[2], latents.shape()[3]);
        let scm = self.noise.is_some();
        let (net, controlnet) = match self.controlnet {
            Some(c) => (Some(c.net), Some(c.inputs)),
            None => (None, None),
        };
        let inputs = LoopInputs {
            tokens: cpu::layout::nchw_to_tokens(latents)?,
            schedule: self.schedule,
            noise: self.noise,
            text: self.text,
            guidance_sinusoid: self.guidance_sinusoid,
            controlnet,
        };
        let key = LoopKey::new(e, (h, w), self.guidance, &inputs);
        if let Some(mut reused) = kept.take(&key) {
            reused.buffers.load(e, &inputs)?;
            drop(inputs);
            let sample = e
                .replay_step_graph(&reused.graph, steps, progress)
                .and_then(|()| download_sample(e, &reused.buffers, scm, h, w));
            // A cancelled loop leaves the graph and its buffers as good as before: the next one rewrites them.
            if matches!(sample, Ok(_) | Err(Error::Cancelled)) {
                kept.keep(reused);
            }
            return sample;
        }
        let total = inputs.tokens.len();
        let mut buffers = LoopBuffers::upload(e, inputs)?;
        let copies = self.guidance.copies();
        let model_batch = copies * latents.shape()[0];
        let mut done = 0;
        let mut step = || -> Result<()> {
            let b = &mut buffers;
            let input = e.model_input(&b.x, copies, &b.schedule)?;
            let t = e.step_sinusoid(&b.schedule, model_batch, SINUSOID_CHANNELS)?;
            let residuals = match (net, &b.controlnet) {
                (Some(net), Some(c)) => Some(net.forward_tokens(
                    e,
                    &input,
                    (h, w),
                    &c.text,
                    &t,
                    (&c.control, &c.scale),
                )?),
                _ => None,
            };
            let out = self.dit.forward_tokens(
                e,
                &input,
                (h, w),
                &b.text,
                &t,
                b.guidance_sinusoid.as_ref(),
                residuals.as_deref(),
                &mut |_, _| Ok(()),
            )?;
            e.flow_step(
                &b.schedule,
                &out,
                self.guidance,
                b.noise.as_ref(),
                &mut b.x,
                &mut b.x0,
            )?;
            e.advance_schedule(&mut b.schedule)?;
            done += 1;
            // Where counting is free (host engines), name the first step that went non-finite.
            let sample = if scm { &b.x0 } else { &b.x };
            match e.non_finite_in_state(sample) {
                Some(count) if count > 0 => Err(Error::NonFinite {
                    stage: "denoise",
                    step: Some((done, steps)),
                    count,
                    total,
                }),
                _ => Ok(()),
            }
        };
        let graph = e.repeat_steps(steps, &mut step, progress)?;
        let sample = download_sample(e, &buffers, scm, h, w)?;
        if let Some(graph) = graph {
            buffers.position_embedding = self.dit.position_embedding_in_use((model_batch, h, w));
            kept.keep(KeptLoop {
                key,
                buffers,
                graph,
            });
        }
        Ok(sample)
    }
}

/// The loop's result as `[B, C, h, w]`: the last clean estimate of SCM, the sample otherwise.
fn download_sample<E: Engine>(
    e: &E,
    b: &LoopBuffers<E>,
    scm: bool,
    h: usize,
    w: usize,
) -> Result<HostTensor> {
    let result = if scm { &b.x0 } else { &b.x };
    cpu::layout::tokens_to_nchw(&e.download_state(result)?, h, w)
}
