//! The step rules of the samplers and the step schedule that carries them: an f32 buffer `[1 + steps·ROW]` whose
//! element 0 is the index of the step to run and whose row `i` holds step `i`'s transformer timestep and
//! [`StepRule`] coefficients. The host fills it once per generation; on a device the kernels of kernels/sampler.cu
//! read it and advance the index after each step, so every step launches the same kernels with the same arguments
//! (a CUDA graph). src/cpu/sampler.rs reads it on the host.

use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// How one flow step moves the sample `x` given the (guided) velocity `v`. The coefficients are formed first, in
/// f32, as PyTorch forms its 0-d tensors; [`crate::cpu::sampler::apply_rule`] applies them on the host and
/// kernels/sampler.cu on the device, with the same f32 operations in the same order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StepRule {
    /// Flow-Euler: `x ← x + dt·v`.
    Euler {
        /// `σ_{i+1} − σ_i` (negative).
        dt: f32,
    },
    /// DPM-Solver++ first order: `x0 = x − σ·v; x ← ratio·x − c·x0`.
    DpmFirst {
        /// σ_s, this step's σ.
        sigma: f32,
        /// `σ_t / σ_s`, with σ_t the next step's σ.
        ratio: f32,
        /// `α_t·(e^{−h} − 1)`, with `α_t = 1 − σ_t` and `h = λ(σ_t) − λ(σ_s)`.
        c: f32,
    },
    /// DPM-Solver++ second order (midpoint): `x0 = x − σ·v; d = inv_r0·(x0 − x0_prev);
    /// x ← (ratio·x − c·x0) − half_c·d`, with `x0_prev` the previous step's `x0`.
    DpmSecond {
        /// σ_s, this step's σ.
        sigma: f32,
        /// `σ_t / σ_s`, with σ_t the next step's σ.
        ratio: f32,
        /// `α_t·(e^{−h} − 1)`, with `α_t = 1 − σ_t` and `h = λ(σ_t) − λ(σ_s)`.
        c: f32,
        /// `1 / r0`, with `r0 = (λ(σ_s) − λ(σ_{s−1})) / h`.
        inv_r0: f32,
        /// `0.5·c`.
        half_c: f32,
    },
    /// Sana-Sprint's SCM step with the pipeline's TrigFlow transform (docs/numerics/sampling.md §10), `F` the model
    /// output and `n` this step's standard-normal noise: `x_in = (x / σ_d)·k` is the model input; `f = ((a·x_in + c·F)
    /// / k)·σ_d; x0 = cos_s·x − sin_s·f; x ← cos_t·x0 + sin_t·(n·σ_d)`, and `x0` is kept (the last one, / σ_d, is
    /// the result).
    Scm {
        /// σ_d, the config's `sigma_data`.
        sigma_data: f32,
        /// `sqrt(s² + (1 − s)²)`, with `s = sin τ_s / (cos τ_s + sin τ_s)` the model's timestep.
        k: f32,
        /// `1 − 2s`.
        a: f32,
        /// `1 − 2s + 2s²`.
        c: f32,
        /// `cos τ_s`, this step's TrigFlow time.
        cos_s: f32,
        /// `sin τ_s`.
        sin_s: f32,
        /// `cos τ_t`, the next step's TrigFlow time.
        cos_t: f32,
        /// `sin τ_t`.
        sin_t: f32,
    },
}

/// f32 values per schedule row; the columns below mirror kernels/sampler.cu.
pub const ROW: usize = 10;
const TIMESTEP: usize = 0;
const RULE: usize = 1;
// The flow rules' coefficients.
const SIGMA: usize = 2;
const RATIO: usize = 3;
const C: usize = 4;
const INV_R0: usize = 5;
const HALF_C: usize = 6;
const DT: usize = 7;
/// Perturbed-attention guidance's scale of the step (flow rows only; SCM rows use the column).
const PAG: usize = 8;
// The SCM rule's.
const SD: usize = 2;
const K: usize = 3;
const A: usize = 4;
const SC: usize = 5;
const COS_S: usize = 6;
const SIN_S: usize = 7;
const COS_T: usize = 8;
const SIN_T: usize = 9;
const RULE_EULER: f32 = 0.0;
const RULE_DPM_FIRST: f32 = 1.0;
const RULE_DPM_SECOND: f32 = 2.0;
const RULE_SCM: f32 = 3.0;

/// The schedule of a generation: step `i` gives the transformer `timesteps[i]` (already × `timestep_scale`) and
/// moves the sample by `rules[i]`; the index starts at 0.
pub fn schedule_table(timesteps: &[f32], rules: &[StepRule]) -> Result<HostTensor> {
    if timesteps.len() != rules.len() || rules.is_empty() {
        return Err(Error::InvalidInput(format!(
            "a step schedule needs one rule per timestep and at least one step ({} timesteps, {} rules)",
            timesteps.len(),
            rules.len()
        )));
    }
    let mut table = vec![0.0; 1 + ROW * rules.len()];
    for (i, (&t, rule)) in timesteps.iter().zip(rules).enumerate() {
        let row = &mut table[1 + i * ROW..1 + (i + 1) * ROW];
        row[TIMESTEP] = t;
        match *rule {
            StepRule::Euler { dt } => {
                row[RULE] = RULE_EULER;
                row[DT] = dt;
            }
            StepRule::DpmFirst { sigma, ratio, c } => {
                row[RULE] = RULE_DPM_FIRST;
                (row[SIGMA], row[RATIO], row[C]) = (sigma, ratio, c);
            }
            StepRule::DpmSecond {
                sigma,
                ratio,
                c,
                inv_r0,
                half_c,
            } => {
                row[RULE] = RULE_DPM_SECOND;
                (row[SIGMA], row[RATIO], row[C]) = (sigma, ratio, c);
                (row[INV_R0], row[HALF_C]) = (inv_r0, half_c);
            }
            StepRule::Scm {
                sigma_data,
                k,
                a,
                c,
                cos_s,
                sin_s,
                cos_t,
                sin_t,
            } => {
                row[RULE] = RULE_SCM;
                (row[SD], row[K], row[A], row[SC]) = (sigma_data, k, a, c);
                (row[COS_S], row[SIN_S], row[COS_T], row[SIN_T]) = (cos_s, sin_s, cos_t, sin_t);
            }
        }
    }
    HostTensor::new(vec![table.len()], table)
}

/// How one sampler step forms its velocity from the model output's batch chunks, each the size of the sample:
/// `[cond]`; `[uncond; cond]` under classifier-free guidance (`u + g·(c − u)`); with perturbed-attention guidance a
/// perturbed copy last, `[cond; perturbed]` or `[uncond; cond; perturbed]`, adding `s·(c − p)` with the step's PAG
/// scale `s` from the schedule ([`set_pag_scales`]), in that order as diffusers' `PAGMixin` does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Guidance {
    /// The classifier-free guidance scale, when on.
    pub cfg: Option<f32>,
    /// Perturbed-attention guidance is on.
    pub pag: bool,
}

impl From<Option<f32>> for Guidance {
    fn from(cfg: Option<f32>) -> Self {
        Self { cfg, pag: false }
    }
}

impl Guidance {
    /// Chunks of the model output (copies of the sample in the model batch).
    pub fn copies(self) -> usize {
        1 + usize::from(self.cfg.is_some()) + usize::from(self.pag)
    }
}

/// Writes each step's perturbed-attention guidance scale into its (flow) row of `schedule`.
pub fn set_pag_scales(schedule: &mut HostTensor, scales: &[f32]) -> Result<()> {
    let steps = schedule_steps(schedule)?;
    if scales.len() != steps {
        return Err(Error::InvalidInput(format!(
            "{} PAG scales for a {steps}-step schedule",
            scales.len()
        )));
    }
    for (i, &s) in scales.iter().enumerate() {
        schedule.data_mut()[1 + i * ROW + PAG] = s;
    }
    Ok(())
}

/// The PAG scale of row `i` (0 unless [`set_pag_scales`] wrote one).
pub fn pag_scale(schedule: &HostTensor, i: usize) -> Result<f32> {
    let steps = schedule_steps(schedule)?;
    if i >= steps {
        return Err(Error::InvalidInput(format!(
            "row {i} of a {steps}-step schedule"
        )));
    }
    Ok(schedule.data()[1 + i * ROW + PAG])
}

/// Steps in a schedule.
pub fn schedule_steps(schedule: &HostTensor) -> Result<usize> {
    steps_of(schedule.shape())
}

/// Steps in a schedule of `shape`.
pub fn steps_of(shape: &[usize]) -> Result<usize> {
    let len = shape.iter().product::<usize>();
    if shape.len() != 1 || len == 0 || (len - 1) % ROW != 0 {
        return Err(Error::shape(
            "step schedule",
            format!("a schedule is [1 + steps·{ROW}], got {shape:?}"),
        ));
    }
    Ok((len - 1) / ROW)
}

/// The index of the step to run next, checked against the schedule's length.
pub fn step_index(schedule: &HostTensor) -> Result<usize> {
    let steps = schedule_steps(schedule)?;
    let i = schedule.data()[0];
    if !(i >= 0.0 && i.fract() == 0.0 && (i as usize) < steps) {
        return Err(Error::InvalidInput(format!(
            "the step schedule is at step {i} of {steps}: the sampler ran more steps than it was given"
        )));
    }
    Ok(i as usize)
}

/// Row `i` of a schedule: the transformer timestep and the step rule.
pub fn decode_row(schedule: &HostTensor, i: usize) -> Result<(f32, StepRule)> {
    let steps = schedule_steps(schedule)?;
    if i >= steps {
        return Err(Error::shape("step schedule", format!("row {i} of {steps}")));
    }
    let row = &schedule.data()[1 + i * ROW..1 + (i + 1) * ROW];
    let rule = match row[RULE] {
        RULE_EULER => StepRule::Euler { dt: row[DT] },
        RULE_DPM_FIRST => StepRule::DpmFirst {
            sigma: row[SIGMA],
            ratio: row[RATIO],
            c: row[C],
        },
        RULE_DPM_SECOND => StepRule::DpmSecond {
            sigma: row[SIGMA],
            ratio: row[RATIO],
            c: row[C],
            inv_r0: row[INV_R0],
            half_c: row[HALF_C],
        },
        RULE_SCM => StepRule::Scm {
            sigma_data: row[SD],
            k: row[K],
            a: row[A],
            c: row[SC],
            cos_s: row[COS_S],
            sin_s: row[SIN_S],
            cos_t: row[COS_T],
            sin_t: row[SIN_T],
        },
        other => {
            return Err(Error::shape(
                "step schedule",
                format!("row {i} has unknown rule code {other}"),
            ))
        }
    };
    Ok((row[TIMESTEP], rule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_round_trips_every_rule() {
        let rules = [
            StepRule::DpmFirst {
                sigma: 0.9,
                ratio: 0.8,
                c: -0.1,
            },
            StepRule::DpmSecond {
                sigma: 0.7,
                ratio: 0.6,
                c: -0.2,
                inv_r0: 1.5,
                half_c: -0.1,
            },
            StepRule::Euler { dt: -0.05 },
            StepRule::Scm {
                sigma_data: 0.5,
                k: 0.8,
                a: 0.1,
                c: 0.6,
                cos_s: 0.2,
                sin_s: 0.98,
                cos_t: 1.0,
                sin_t: 0.0,
            },
        ];
        let table = schedule_table(&[999.0, 700.0, 12.5, 0.4], &rules).unwrap();
        assert_eq!(schedule_steps(&table).unwrap(), 4);
        assert_eq!(step_index(&table).unwrap(), 0);
        for (i, rule) in rules.iter().enumerate() {
            assert_eq!(decode_row(&table, i).unwrap().1, *rule);
        }
        assert_eq!(decode_row(&table, 2).unwrap().0, 12.5);
        let mut done = table.clone();
        done.data_mut()[0] = 4.0;
        assert!(step_index(&done).is_err(), "index past the last step");
        assert!(schedule_table(&[1.0], &rules).is_err());
    }
}
