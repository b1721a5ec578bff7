//! Reference of kernels/sampler.cu: the samplers' f32 arithmetic (which the host flow schedulers of
//! src/scheduler.rs run too), classifier-free guidance, the model input and the timestep sinusoid read from a step
//! schedule (layout in src/vocabulary/schedule.rs).

use crate::error::{Error, Result};
use crate::model::embeddings::timestep_sinusoid;
use crate::tensor::HostTensor;
use crate::vocabulary::schedule::{decode_row, pag_scale, schedule_steps, step_index};
use crate::vocabulary::{Guidance, StepRule};

/// Advances `x` by one step of `rule` given the velocity (SCM: the model output) `v`, in place; the DPM-Solver and
/// SCM rules also store this step's clean estimate in `x0_prev` (which the second-order rule reads first). `noise` is
/// the SCM step's standard-normal draw (unused by the flow rules). Operation order as in diffusers.
pub fn apply_rule(rule: StepRule, v: &[f32], noise: &[f32], x: &mut [f32], x0_prev: &mut [f32]) {
    match rule {
        StepRule::Euler { dt } => x.iter_mut().zip(v).for_each(|(x, &v)| *x += dt * v),
        StepRule::DpmFirst { sigma, ratio, c } => {
            for ((x, &v), prev) in x.iter_mut().zip(v).zip(x0_prev) {
                let x0 = *x - sigma * v;
                *x = ratio * *x - c * x0;
                *prev = x0;
            }
        }
        StepRule::DpmSecond {
            sigma,
            ratio,
            c,
            inv_r0,
            half_c,
        } => {
            for ((x, &v), prev) in x.iter_mut().zip(v).zip(x0_prev) {
                let x0 = *x - sigma * v;
                let d = inv_r0 * (x0 - *prev);
                *x = (ratio * *x - c * x0) - half_c * d;
                *prev = x0;
            }
        }
        StepRule::Scm {
            sigma_data: sd,
            k,
            a,
            c,
            cos_s,
            sin_s,
            cos_t,
            sin_t,
        } => {
            for (((x, &f), &n), prev) in x.iter_mut().zip(v).zip(noise).zip(x0_prev) {
                let x_in = scm_input(*x, sd, k);
                let f = (a * x_in + c * f) / k * sd;
                let x0 = cos_s * *x - sin_s * f;
                *x = cos_t * x0 + sin_t * (n * sd);
                *prev = x0;
            }
        }
    }
}

/// The TrigFlow model input `(x / σ_d)·k`.
fn scm_input(x: f32, sd: f32, k: f32) -> f32 {
    x / sd * k
}

/// Classifier-free guidance on `[uncond; cond]`: `u + g·(c − u)` in f32 (docs/numerics/sampling.md §8).
pub fn guide(output: &[f32], g: f32) -> Vec<f32> {
    let (u, c) = output.split_at(output.len() / 2);
    u.iter().zip(c).map(|(&u, &c)| u + g * (c - u)).collect()
}

/// `copies` copies of `x` along the batch (the CFG batch `[x; x]`), or of the TrigFlow input `(x / σ_d)·k` when
/// the schedule's current step is an SCM one.
pub fn model_input(x: &HostTensor, copies: usize, schedule: &HostTensor) -> Result<HostTensor> {
    let mut shape = x.shape().to_vec();
    let first = shape
        .first_mut()
        .ok_or_else(|| Error::shape("model_input", "a 0-d sample"))?;
    *first *= copies;
    let data = match decode_row(schedule, step_index(schedule)?)?.1 {
        StepRule::Scm { sigma_data, k, .. } => x
            .data()
            .iter()
            .map(|&v| scm_input(v, sigma_data, k))
            .collect(),
        _ => x.data().to_vec(),
    };
    HostTensor::new(shape, data.repeat(copies))
}

/// The current step's timestep sinusoid `[batch, channels]`.
pub fn step_sinusoid(schedule: &HostTensor, batch: usize, channels: usize) -> Result<HostTensor> {
    let (t, _) = decode_row(schedule, step_index(schedule)?)?;
    timestep_sinusoid(&vec![t; batch], channels)
}

/// Perturbed-attention guidance on top: `v + s·(c − p)` in f32 with `c` the conditional and `p` the perturbed chunk
/// (diffusers' `_apply_perturbed_attention_guidance`).
pub fn guide_pag(v: &mut [f32], cond: &[f32], perturbed: &[f32], s: f32) {
    for ((v, &c), &p) in v.iter_mut().zip(cond).zip(perturbed) {
        *v += s * (c - p);
    }
}

/// One sampler step on `x` (and `x0_prev`) from the model output (its chunks as `guidance` says), by the current
/// row of `schedule`; `noise` holds every step's noise (`[steps, …x]`) for SCM schedules.
pub fn flow_step(
    schedule: &HostTensor,
    output: &HostTensor,
    guidance: Guidance,
    noise: Option<&HostTensor>,
    x: &mut HostTensor,
    x0_prev: &mut HostTensor,
) -> Result<()> {
    let copies = guidance.copies();
    if output.len() != copies * x.len() || x0_prev.len() != x.len() {
        return Err(Error::shape(
            "flow_step",
            format!(
                "model output {:?} (copies {copies}), sample {:?} and x0_prev {:?} do not match",
                output.shape(),
                x.shape(),
                x0_prev.shape()
            ),
        ));
    }
    let i = step_index(schedule)?;
    let (_, rule) = decode_row(schedule, i)?;
    let len = x.len();
    let step_noise = match (rule, noise) {
        (StepRule::Scm { .. }, Some(n)) if n.len() == schedule_steps(schedule)? * len => {
            &n.data()[i * len..(i + 1) * len]
        }
        (StepRule::Scm { .. }, _) => {
            return Err(Error::shape(
                "flow_step",
                format!(
                    "an SCM step needs the noise of every step ({} × {len} values)",
                    schedule_steps(schedule)?
                ),
            ))
        }
        _ => &[],
    };
    let out = output.data();
    let mut v = match guidance.cfg {
        Some(g) => guide(&out[..2 * len], g),
        None => out[..len].to_vec(),
    };
    if guidance.pag {
        let cond = usize::from(guidance.cfg.is_some());
        let (c, p) = (
            &out[cond * len..(cond + 1) * len],
            &out[(cond + 1) * len..(cond + 2) * len],
        );
        guide_pag(&mut v, c, p, pag_scale(schedule, i)?);
    }
    apply_rule(rule, &v, step_noise, x.data_mut(), x0_prev.data_mut());
    Ok(())
}

/// Moves the schedule to its next row.
pub fn advance_schedule(schedule: &mut HostTensor) -> Result<()> {
    step_index(schedule)?;
    schedule.data_mut()[0] += 1.0;
    Ok(())
}
