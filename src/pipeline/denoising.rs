//! The denoising stage: the planned sampler's loop over the transformer, resident on the engine
//! ([`DenoiseLoop`]) — Flow-DPM-Solver or Flow-Euler with classifier-free guidance, or Sana-Sprint's SCM.

use crate::cpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::{Event, Observer};
use crate::model::config::SchedulerConfig;
use crate::model::embeddings::timestep_sinusoid;
use crate::model::sana_dit::SINUSOID_CHANNELS;
use crate::noise::BatchNoise;
use crate::request::Request;
use crate::scheduler::{Scheduler, ScmScheduler, ScmTimesteps};
use crate::tensor::HostTensor;
use crate::vocabulary::schedule::{schedule_table, set_pag_scales};
use crate::vocabulary::Guidance;

use super::denoise_loop::{ControlNetStep, DenoiseLoop};
use super::kept_loops::ControlNetBuffers;
use super::{Pipeline, Plan};

impl<E: Engine> Pipeline<E> {
    /// The final latents `[batch, C, h, w]` (f32) from `latents`, conditioned on `text` (the model batch's
    /// embeddings and mask); `noise` continues the seeded stream of the initial latents (SCM draws from it). With
    /// image-to-image's `init` (the scaled image latents), `latents` is the noise mixed into them; `control` is the
    /// ControlNet's control latents for the model batch.
    pub(super) fn sample(
        &self,
        plan: &Plan,
        req: &Request,
        (latents, init, control): (HostTensor, Option<&HostTensor>, Option<&HostTensor>),
        (text_rows, mask): (&HostTensor, &HostTensor),
        noise: &mut BatchNoise,
        observer: &mut Observer<'_>,
    ) -> Result<HostTensor> {
        let e = &self.engine;
        let mut progress = |step: usize, steps: usize| observer.emit(Event::Step { step, steps });
        self.with_transformer(|dit, kept| {
            let mut text = dit.encode_text(e, text_rows, mask)?;
            if let Some(pag) = &plan.pag {
                let tokens = latents.shape()[2] * latents.shape()[3];
                dit.perturb_self_attention(e, &mut text, &pag.blocks, plan.batch, tokens)?;
            }
            match &plan.scheduler {
                SchedulerConfig::Scm(config) => {
                    let scheduler = match plan.image_to_image {
                        None => {
                            ScmScheduler::new(config, ScmTimesteps::sprint_default(plan.steps))?
                        }
                        Some(i2i) => {
                            // `get_timesteps`: the whole schedule's TrigFlow times from the first step that runs.
                            let full = ScmScheduler::new(
                                config,
                                ScmTimesteps::sprint_default(i2i.schedule_steps),
                            )?;
                            let times = full.timesteps()[i2i.first_step..].to_vec();
                            ScmScheduler::new(config, ScmTimesteps::Custom(times))?
                        }
                    };
                    let sd = scheduler.sigma_data();
                    let (timesteps, rules) = scheduler.rules();
                    // Every step's noise drawn up front: the seeded stream's order is the per-step order.
                    let mut step_noise = Vec::with_capacity(latents.len() * rules.len());
                    for i in 0..rules.len() {
                        let n = match &req.step_noise {
                            Some(given) => given[i].clone(),
                            None => noise.draw(latents.shape()),
                        };
                        step_noise.extend_from_slice(cpu::layout::nchw_to_tokens(&n)?.data());
                    }
                    // diffusers multiplies the guidance (in the text dtype) by `guidance_embeds_scale`, both f32
                    // here.
                    let scale = self.configs.transformer.guidance_embeds_scale as f32;
                    let guidance = vec![plan.guidance * scale; plan.batch];
                    let guidance = e.upload(&timestep_sinusoid(&guidance, SINUSOID_CHANNELS)?)?;
                    let run = DenoiseLoop {
                        dit,
                        text,
                        schedule: schedule_table(&timesteps, &rules)?,
                        guidance: Guidance::default(),
                        guidance_sinusoid: Some(guidance),
                        noise: Some(HostTensor::new(vec![step_noise.len()], step_noise)?),
                        controlnet: None,
                    };
                    // SCM's loop runs on `x · σ_d` and returns the last `x0 / σ_d`. Image-to-image starts from
                    // `cos τ₀ · (z · σ_d) + sin τ₀ · (n · σ_d)` (`prepare_latents`, each product rounded in f32).
                    let start = match init {
                        None => map(&latents, |v| v * sd)?,
                        Some(z) => {
                            if z.shape() != latents.shape() {
                                return Err(Error::shape(
                                    "image-to-image",
                                    format!(
                                        "image latents {:?} and noise {:?} differ",
                                        z.shape(),
                                        latents.shape()
                                    ),
                                ));
                            }
                            let tau = scheduler.timesteps()[0];
                            let (cos, sin) = (tau.cos(), tau.sin());
                            let data = z
                                .data()
                                .iter()
                                .zip(latents.data())
                                .map(|(&z, &n)| cos * (z * sd) + sin * (n * sd))
                                .collect();
                            HostTensor::new(latents.shape().to_vec(), data)?
                        }
                    };
                    let x0 = run.run(e, &start, kept, &mut progress)?;
                    map(&x0, |v| v / sd)
                }
                config => {
                    let scheduler = Scheduler::new(config, plan.steps)?;
                    // SanaPAGPipeline and SanaControlNetPipeline pass `t` to the transformer without SanaPipeline's
                    // `timestep_scale`.
                    let timestep_scale = if plan.pag.is_some() || plan.controlnet.is_some() {
                        1.0
                    } else {
                        self.configs.transformer.timestep_scale as f32
                    };
                    let timesteps: Vec<f32> = scheduler
                        .timesteps()
                        .iter()
                        .map(|&t| t * timestep_scale)
                        .collect();
                    let mut schedule = schedule_table(&timesteps, &scheduler.rules())?;
                    if let Some(pag) = &plan.pag {
                        let scales: Vec<f32> = scheduler
                            .timesteps()
                            .iter()
                            .map(|&t| pag.scale_at(t))
                            .collect();
                        set_pag_scales(&mut schedule, &scales)?;
                    }
                    let run = DenoiseLoop {
                        dit,
                        text,
                        schedule,
                        guidance: Guidance {
                            cfg: plan.cfg.then_some(plan.guidance),
                            pag: plan.pag.is_some(),
                        },
                        guidance_sinusoid: None,
                        noise: None,
                        controlnet: None,
                    };
                    let (Some(control), Some(scale)) = (control, plan.controlnet) else {
                        return run.run(e, &latents, kept, &mut progress);
                    };
                    self.with_controlnet(|net| {
                        let text = net.encode_text(e, text_rows, mask)?;
                        let tokens = cpu::layout::nchw_to_tokens(control)?;
                        let control = net.embed_control(e, &e.upload(&tokens)?)?;
                        let shape = e.shape(&control).to_vec();
                        let n = shape.iter().product();
                        let scale = e.upload(&HostTensor::new(shape, vec![scale; n])?)?;
                        let run = DenoiseLoop {
                            controlnet: Some(ControlNetStep {
                                net,
                                inputs: ControlNetBuffers {
                                    text,
                                    control,
                                    scale,
                                },
                            }),
                            ..run
                        };
                        run.run(e, &latents, kept, &mut progress)
                    })
                }
            }
        })
    }
}

pub(super) fn map(t: &HostTensor, f: impl Fn(f32) -> f32) -> Result<HostTensor> {
    HostTensor::new(t.shape().to_vec(), t.data().iter().map(|&v| f(v)).collect())
}
