//! kernels/norm.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::norm::{
    self as plan, LayerNormModulateBuffers, LayerNormModulateParams, RmsNormParams,
};
use crate::tensor::HostTensor;

emu_kernel!(fn entry(LayerNormModulateParams) = [
    sana_emu_layer_norm_modulate_f32,
    sana_emu_layer_norm_modulate_bf16,
    sana_emu_layer_norm_modulate_f16
]);

emu_kernel!(fn rms_entry(RmsNormParams) = [
    sana_emu_rms_norm_f32,
    sana_emu_rms_norm_bf16,
    sana_emu_rms_norm_f16
]);

/// RMSNorm over the last dimension through kernels/norm.cu: the diffusers form (`plus_one = false`, as
/// [`crate::cpu::norm::rms_norm`], rounding before the weight multiply, then adding the optional bias) or Gemma's
/// (`true`, as [`crate::cpu::norm::rms_norm_plus_one`]). `x` any rank, `w` and `b` `[D]`; inputs first rounded to
/// `dtype`.
pub fn rms_norm(
    x: &HostTensor,
    w: &HostTensor,
    b: Option<&HostTensor>,
    plus_one: bool,
    eps: f32,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let xs = Storage::from_f32(dtype, x.data());
    let ws = Storage::from_f32(dtype, w.data());
    let bs = b.map(|b| Storage::from_f32(dtype, b.data()));
    let mut ys = Storage::poisoned(dtype, x.len());
    let plan = plan::rms_norm(
        x.shape(),
        w.shape(),
        b.map(HostTensor::shape),
        plus_one,
        eps,
        (
            ys.ptr_mut(),
            xs.ptr(),
            ws.ptr(),
            bs.as_ref().map_or(0, Storage::ptr),
        ),
    )?;
    // SAFETY: the plan checked w (and b when given) = [D] with D the last dimension of x; the buffers hold exactly
    // product(shape) elements, y is fresh and of x's size, and all of them outlive the call.
    unsafe { launch("rms_norm", rms_entry(dtype), &plan) }?;
    HostTensor::new(x.shape().to_vec(), ys.to_f32())
}

/// `LayerNorm(x) · (1 + modulation[b, scale_row]) + modulation[b, shift_row]` through kernels/norm.cu, with `x` and
/// `modulation` first rounded to `dtype` and the result read back as f32. Shapes as
/// [`crate::cpu::norm::layer_norm_modulate`]: `x` [B, N, D], `modulation` [B, K, D].
pub fn layer_norm_modulate(
    x: &HostTensor,
    modulation: &HostTensor,
    shift_row: usize,
    scale_row: usize,
    eps: f32,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let xs = Storage::from_f32(dtype, x.data());
    let ms = Storage::from_f32(dtype, modulation.data());
    let mut ys = Storage::poisoned(dtype, x.len());
    let buffers = LayerNormModulateBuffers {
        y: ys.ptr_mut(),
        x: xs.ptr(),
        modulation: ms.ptr(),
    };
    let plan = plan::layer_norm_modulate(
        x.shape(),
        modulation.shape(),
        shift_row,
        scale_row,
        eps,
        buffers,
    )?;
    // SAFETY: the plan checked x = [B, N, D] and modulation = [B, K, D] with both rows < K; the buffers hold exactly
    // those element counts (HostTensor guarantees data.len() == product(shape)), y is a fresh buffer of x's size,
    // and all three outlive the call.
    unsafe { launch("layer_norm_modulate", entry(dtype), &plan) }?;
    HostTensor::new(x.shape().to_vec(), ys.to_f32())
}
