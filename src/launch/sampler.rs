//! Launch plans for kernels/sampler.cu, and the step schedule those kernels read: an f32 buffer
//! `[1 + steps·ROW]` whose element 0 is the index of the step to run and whose row `i` holds step `i`'s
//! transformer timestep and [`StepRule`] coefficients. The host fills it once per generation; the device advances
//! the index after each step, so every step launches the same kernels with the same arguments (a CUDA graph).

use super::elementwise::grid_1d;
use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};
use crate::scheduler::StepRule;
use crate::tensor::HostTensor;

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

    /// The kernel's `guide` bits: 1 classifier-free, 2 perturbed-attention.
    fn bits(self) -> u32 {
        u32::from(self.cfg.is_some()) | (u32::from(self.pag) << 1)
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

/// Arguments of `model_input_*`; mirrors `ModelInputParams` in kernels/sampler.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ModelInputParams {
    /// `[copies·B, …]` in the storage dtype.
    pub out: DevicePtr,
    /// The f32 sample.
    pub x: DevicePtr,
    pub schedule: DevicePtr,
    pub len: u64,
    pub copies: u32,
    /// Rows of the schedule.
    pub steps: u32,
}

const _: () = assert!(std::mem::size_of::<ModelInputParams>() == 40);

/// Plans `copies` storage-dtype copies of an f32 sample of `len` elements (scaled to the TrigFlow input when the
/// current row of a `steps`-row schedule is an SCM step).
pub fn model_input(
    len: usize,
    copies: usize,
    steps: usize,
    (out, x, schedule): (DevicePtr, DevicePtr, DevicePtr),
) -> Result<Plan<ModelInputParams>> {
    const OP: &str = "model_input";
    Ok(Plan {
        geometry: grid_1d(OP, len)?,
        params: ModelInputParams {
            out,
            x,
            schedule,
            len: len as u64,
            copies: to_u32(OP, "copies", copies)?,
            steps: to_u32(OP, "steps", steps)?,
        },
    })
}

/// Arguments of `step_sinusoid_*`; mirrors `SinusoidParams` in kernels/sampler.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SinusoidParams {
    /// `[batch, 2·half]` in the storage dtype.
    pub out: DevicePtr,
    pub schedule: DevicePtr,
    pub batch: u32,
    pub half: u32,
    pub neg_log_10000: f32,
    /// Rows of the schedule.
    pub steps: u32,
}

const _: () = assert!(std::mem::size_of::<SinusoidParams>() == 32);

/// Plans the current step's `[batch, channels]` timestep sinusoid.
pub fn step_sinusoid(
    batch: usize,
    channels: usize,
    steps: usize,
    (out, schedule): (DevicePtr, DevicePtr),
) -> Result<Plan<SinusoidParams>> {
    const OP: &str = "step_sinusoid";
    if channels == 0 || channels % 2 != 0 {
        return Err(Error::shape(
            OP,
            format!("{channels} channels: the sinusoid needs an even, positive count"),
        ));
    }
    Ok(Plan {
        geometry: grid_1d(OP, batch * channels)?,
        params: SinusoidParams {
            out,
            schedule,
            batch: to_u32(OP, "batch", batch)?,
            half: to_u32(OP, "channels / 2", channels / 2)?,
            // As src/model/embeddings.rs: −ln(10⁴) in f64, rounded to f32.
            neg_log_10000: -(10000f64.ln()) as f32,
            steps: to_u32(OP, "steps", steps)?,
        },
    })
}

/// Arguments of `flow_step_*`; mirrors `FlowStepParams` in kernels/sampler.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct FlowStepParams {
    pub x: DevicePtr,
    pub x0_prev: DevicePtr,
    /// The model output, `copies·len` elements in the storage dtype.
    pub output: DevicePtr,
    pub schedule: DevicePtr,
    /// SCM steps' noise, `steps·len` f32 values; 0 for the flow rules.
    pub noise: DevicePtr,
    pub len: u64,
    pub guidance: f32,
    /// [`Guidance`] bits: 1, the output leads with `[uncond; cond]`, guided by `guidance`; 2, it ends with the
    /// perturbed-attention copy, guided by the row's PAG scale.
    pub guide: u32,
    /// Rows of the schedule.
    pub steps: u32,
    pub pad: u32,
}

const _: () = assert!(std::mem::size_of::<FlowStepParams>() == 64);

/// Buffers of one `flow_step` launch.
#[derive(Clone, Copy, Debug)]
pub struct FlowStepBuffers {
    pub x: DevicePtr,
    pub x0_prev: DevicePtr,
    pub output: DevicePtr,
    pub schedule: DevicePtr,
    /// The noise of every step and its element count (SCM), or `None`.
    pub noise: Option<(DevicePtr, usize)>,
}

/// Plans one sampler step over a sample of shape `x` from a model output of shape `output`, by a schedule of
/// `steps` rows; `guidance` says which chunks the output holds.
pub fn flow_step(
    x: &[usize],
    output: &[usize],
    guidance: Guidance,
    steps: usize,
    buffers: FlowStepBuffers,
) -> Result<Plan<FlowStepParams>> {
    const OP: &str = "flow_step";
    let copies = guidance.copies();
    let (len, out_len) = (
        x.iter().product::<usize>(),
        output.iter().product::<usize>(),
    );
    if out_len != copies * len || x.len() != output.len() || x[1..] != output[1..] {
        return Err(Error::shape(
            OP,
            format!("model output {output:?} is not {copies} × the sample {x:?} along the batch"),
        ));
    }
    if let Some((_, noise_len)) = buffers.noise {
        if noise_len != steps * len {
            return Err(Error::shape(
                OP,
                format!("{noise_len} noise values for {steps} steps of {len}-element samples"),
            ));
        }
    }
    Ok(Plan {
        geometry: grid_1d(OP, len)?,
        params: FlowStepParams {
            x: buffers.x,
            x0_prev: buffers.x0_prev,
            output: buffers.output,
            schedule: buffers.schedule,
            noise: buffers.noise.map_or(0, |(p, _)| p),
            len: len as u64,
            guidance: guidance.cfg.unwrap_or(1.0),
            guide: guidance.bits(),
            steps: to_u32(OP, "steps", steps)?,
            pad: 0,
        },
    })
}

/// Arguments of `advance_schedule_*`; mirrors `AdvanceParams` in kernels/sampler.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdvanceParams {
    pub schedule: DevicePtr,
}

const _: () = assert!(std::mem::size_of::<AdvanceParams>() == 8);

/// Plans the schedule's move to its next row (one thread).
pub fn advance_schedule(schedule: DevicePtr) -> Plan<AdvanceParams> {
    Plan {
        geometry: Geometry {
            grid: [1, 1, 1],
            block: [1, 1, 1],
            shared_mem_bytes: 0,
        },
        params: AdvanceParams { schedule },
    }
}

// SAFETY: `#[repr(C)]` plain-old-data structs matching the kernels' params layouts (sizes asserted on both sides).
unsafe impl cudarc::driver::DeviceRepr for ModelInputParams {}
unsafe impl cudarc::driver::DeviceRepr for SinusoidParams {}
unsafe impl cudarc::driver::DeviceRepr for FlowStepParams {}
unsafe impl cudarc::driver::DeviceRepr for AdvanceParams {}

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
