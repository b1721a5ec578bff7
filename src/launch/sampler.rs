//! Launch plans for kernels/sampler.cu, which reads the step schedule of src/vocabulary/schedule.rs (one row per
//! step; the device advances the index after each step, so every step launches the same kernels with the same
//! arguments: a CUDA graph).

use super::elementwise::grid_1d;
use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};
use crate::vocabulary::Guidance;

/// The kernel's `guide` bits of `guidance`: 1 classifier-free, 2 perturbed-attention.
fn guide_bits(guidance: Guidance) -> u32 {
    u32::from(guidance.cfg.is_some()) | (u32::from(guidance.pag) << 1)
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

/// Buffers of `model_input`: the storage-dtype output, the f32 sample and the schedule.
#[derive(Clone, Copy, Debug)]
pub struct ModelInputBuffers {
    pub out: DevicePtr,
    pub x: DevicePtr,
    pub schedule: DevicePtr,
}

/// Plans `copies` storage-dtype copies of an f32 sample of `len` elements (scaled to the TrigFlow input when the
/// current row of a `steps`-row schedule is an SCM step).
pub fn model_input(
    len: usize,
    copies: usize,
    steps: usize,
    ModelInputBuffers { out, x, schedule }: ModelInputBuffers,
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

/// Buffers of `step_sinusoid`: the storage-dtype output and the schedule.
#[derive(Clone, Copy, Debug)]
pub struct SinusoidBuffers {
    pub out: DevicePtr,
    pub schedule: DevicePtr,
}

/// Plans the current step's `[batch, channels]` timestep sinusoid.
pub fn step_sinusoid(
    batch: usize,
    channels: usize,
    steps: usize,
    SinusoidBuffers { out, schedule }: SinusoidBuffers,
) -> Result<Plan<SinusoidParams>> {
    const OP: &str = "step_sinusoid";
    if channels == 0 || !channels.is_multiple_of(2) {
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
            guide: guide_bits(guidance),
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
