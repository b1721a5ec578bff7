//! kernels/sampler.cu through the emulator. The sampler state (sample, previous clean estimate, schedule) is f32
//! in every engine; only the model output and input are in the storage dtype.

use super::{launch, Storage, StorageDtype};
use crate::error::{Error, Result};
use crate::launch::sampler::{
    self as plan, AdvanceParams, FlowStepBuffers, FlowStepParams, ModelInputParams, SinusoidParams,
};
use crate::tensor::HostTensor;
use crate::vocabulary::schedule as table;

emu_kernel!(fn model_input_entry(ModelInputParams) = [
    sana_emu_model_input_f32, sana_emu_model_input_bf16, sana_emu_model_input_f16
]);
emu_kernel!(fn step_sinusoid_entry(SinusoidParams) = [
    sana_emu_step_sinusoid_f32, sana_emu_step_sinusoid_bf16, sana_emu_step_sinusoid_f16
]);
emu_kernel!(fn flow_step_entry(FlowStepParams) = [
    sana_emu_flow_step_f32, sana_emu_flow_step_bf16, sana_emu_flow_step_f16
]);
emu_kernel!(fn advance_schedule_entry(AdvanceParams) = [
    sana_emu_advance_schedule_f32, sana_emu_advance_schedule_bf16, sana_emu_advance_schedule_f16
]);

/// `copies` copies of the f32 sample `x` along the batch, in the storage dtype, as
/// [`crate::cpu::sampler::model_input`] then rounding.
pub fn model_input(
    x: &HostTensor,
    copies: usize,
    schedule: &HostTensor,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    table::step_index(schedule)?;
    let steps = table::schedule_steps(schedule)?;
    let xs = Storage::from_f32(StorageDtype::F32, x.data());
    let ss = Storage::from_f32(StorageDtype::F32, schedule.data());
    let mut out = Storage::poisoned(dtype, copies * x.len());
    let p = plan::model_input(x.len(), copies, steps, (out.ptr_mut(), xs.ptr(), ss.ptr()))?;
    // SAFETY: x holds len f32 values, out copies·len elements, the schedule `steps` rows; all outlive the call.
    unsafe { launch("model_input", model_input_entry(dtype), &p) }?;
    let mut shape = x.shape().to_vec();
    if let Some(b) = shape.first_mut() {
        *b *= copies;
    }
    HostTensor::new(shape, out.to_f32())
}

/// The current step's `[batch, channels]` timestep sinusoid, as [`crate::cpu::sampler::step_sinusoid`].
pub fn step_sinusoid(
    schedule: &HostTensor,
    batch: usize,
    channels: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    table::step_index(schedule)?;
    let steps = table::schedule_steps(schedule)?;
    let ss = Storage::from_f32(StorageDtype::F32, schedule.data());
    let mut out = Storage::poisoned(dtype, batch * channels);
    let p = plan::step_sinusoid(batch, channels, steps, (out.ptr_mut(), ss.ptr()))?;
    // SAFETY: the schedule's index was checked to address one of its rows; out holds batch·channels elements.
    unsafe { launch("step_sinusoid", step_sinusoid_entry(dtype), &p) }?;
    HostTensor::new(vec![batch, channels], out.to_f32())
}

/// One sampler step on `x` and `x0_prev` in place, as [`crate::cpu::sampler::flow_step`].
pub fn flow_step(
    schedule: &HostTensor,
    output: &HostTensor,
    guidance: crate::vocabulary::Guidance,
    noise: Option<&HostTensor>,
    x: &mut HostTensor,
    x0_prev: &mut HostTensor,
    dtype: StorageDtype,
) -> Result<()> {
    table::step_index(schedule)?;
    let steps = table::schedule_steps(schedule)?;
    if x.shape() != x0_prev.shape() {
        return Err(Error::shape(
            "flow_step",
            format!(
                "sample {:?} and x0_prev {:?} differ",
                x.shape(),
                x0_prev.shape()
            ),
        ));
    }
    let ss = Storage::from_f32(StorageDtype::F32, schedule.data());
    let os = Storage::from_f32(dtype, output.data());
    let ns = noise.map(|n| Storage::from_f32(StorageDtype::F32, n.data()));
    let (_, rule) = table::decode_row(schedule, table::step_index(schedule)?)?;
    if matches!(rule, crate::vocabulary::StepRule::Scm { .. }) && noise.is_none() {
        return Err(Error::shape(
            "flow_step",
            "an SCM step needs the noise of every step",
        ));
    }
    let mut xs = Storage::from_f32(StorageDtype::F32, x.data());
    let mut ps = Storage::from_f32(StorageDtype::F32, x0_prev.data());
    let buffers = FlowStepBuffers {
        x: xs.ptr_mut(),
        x0_prev: ps.ptr_mut(),
        output: os.ptr(),
        schedule: ss.ptr(),
        noise: ns.as_ref().zip(noise).map(|(s, t)| (s.ptr(), t.len())),
    };
    let p = plan::flow_step(x.shape(), output.shape(), guidance, steps, buffers)?;
    // SAFETY: the plan checked the output against the sample; x0_prev has the sample's shape; the schedule's index
    // addresses one of its rows; all buffers outlive the call.
    unsafe { launch("flow_step", flow_step_entry(dtype), &p) }?;
    x.data_mut().copy_from_slice(&xs.to_f32());
    x0_prev.data_mut().copy_from_slice(&ps.to_f32());
    Ok(())
}

/// Moves the schedule to its next row.
pub fn advance_schedule(schedule: &mut HostTensor, dtype: StorageDtype) -> Result<()> {
    table::step_index(schedule)?;
    let mut ss = Storage::from_f32(StorageDtype::F32, schedule.data());
    let p = plan::advance_schedule(ss.ptr_mut());
    // SAFETY: the schedule holds at least its index element.
    unsafe { launch("advance_schedule", advance_schedule_entry(dtype), &p) }?;
    schedule.data_mut().copy_from_slice(&ss.to_f32());
    Ok(())
}
