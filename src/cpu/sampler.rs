//! Reference of kernels/sampler.cu: the flow sampler's f32 arithmetic (which the host schedulers of
//! src/scheduler.rs run too), classifier-free guidance, the model input and the timestep sinusoid read from a step
//! schedule (layout in src/launch/sampler.rs).

use crate::error::{Error, Result};
use crate::launch::sampler::{decode_row, step_index};
use crate::model::embeddings::timestep_sinusoid;
use crate::scheduler::StepRule;
use crate::tensor::HostTensor;

/// Advances `x` by one step of `rule` given the velocity `v`, in place; the DPM-Solver rules also store this step's
/// clean estimate in `x0_prev` (which the second-order rule reads first). Operation order as in diffusers.
pub fn apply_rule(rule: StepRule, v: &[f32], x: &mut [f32], x0_prev: &mut [f32]) {
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
    }
}

/// Classifier-free guidance on `[uncond; cond]`: `u + g·(c − u)` in f32 (spec sampling.md §8).
pub fn guide(output: &[f32], g: f32) -> Vec<f32> {
    let (u, c) = output.split_at(output.len() / 2);
    u.iter().zip(c).map(|(&u, &c)| u + g * (c - u)).collect()
}

/// `copies` copies of `x` along the batch (the CFG batch `[x; x]`).
pub fn model_input(x: &HostTensor, copies: usize) -> Result<HostTensor> {
    let mut shape = x.shape().to_vec();
    let first = shape
        .first_mut()
        .ok_or_else(|| Error::shape("model_input", "a 0-d sample"))?;
    *first *= copies;
    HostTensor::new(shape, x.data().repeat(copies))
}

/// The current step's timestep sinusoid `[batch, channels]`.
pub fn step_sinusoid(schedule: &HostTensor, batch: usize, channels: usize) -> Result<HostTensor> {
    let (t, _) = decode_row(schedule, step_index(schedule)?)?;
    timestep_sinusoid(&vec![t; batch], channels)
}

/// One sampler step on `x` (and `x0_prev`) from the model output (`[uncond; cond]` when `guidance` is given), by
/// the current row of `schedule`.
pub fn flow_step(
    schedule: &HostTensor,
    output: &HostTensor,
    guidance: Option<f32>,
    x: &mut HostTensor,
    x0_prev: &mut HostTensor,
) -> Result<()> {
    let copies = if guidance.is_some() { 2 } else { 1 };
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
    let (_, rule) = decode_row(schedule, step_index(schedule)?)?;
    let v = match guidance {
        Some(g) => guide(output.data(), g),
        None => output.data().to_vec(),
    };
    apply_rule(rule, &v, x.data_mut(), x0_prev.data_mut());
    Ok(())
}

/// Moves the schedule to its next row.
pub fn advance_schedule(schedule: &mut HostTensor) -> Result<()> {
    step_index(schedule)?;
    schedule.data_mut()[0] += 1.0;
    Ok(())
}
