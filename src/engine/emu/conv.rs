//! kernels/conv.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::conv::{self as plan, DwConvGluBuffers, DwConvGluParams};
use crate::tensor::HostTensor;

emu_kernel!(fn entry(DwConvGluParams) = [
    sana_emu_dwconv3x3_glu_f32, sana_emu_dwconv3x3_glu_bf16, sana_emu_dwconv3x3_glu_f16
]);

/// Depthwise 3×3 conv (zero padding 1) + bias + GLU(SiLU) through kernels/conv.cu: `x` `[B, h·w, 2F]`, `w`
/// `[2F, 9]`, `b` `[2F]`, all rounded to `dtype`; out `[B, h·w, F]`, as [`crate::cpu::conv::dwconv3x3_glu`].
pub fn dwconv3x3_glu(
    x: &HostTensor,
    w: &HostTensor,
    b: &HostTensor,
    h: usize,
    width: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (xs, ws, bs) = (
        Storage::from_f32(dtype, x.data()),
        Storage::from_f32(dtype, w.data()),
        Storage::from_f32(dtype, b.data()),
    );
    let mut out = Storage::poisoned(dtype, x.len() / 2);
    let buffers = DwConvGluBuffers {
        out: out.ptr_mut(),
        x: xs.ptr(),
        w: ws.ptr(),
        bias: bs.ptr(),
    };
    let p = plan::dwconv3x3_glu(x.shape(), w.shape(), b.shape(), h, width, buffers)?;
    // SAFETY: the plan checked x = [B, h·w, 2F], w = [2F, 9], b = [2F]; out holds B·h·w·F elements; all buffers
    // outlive the call.
    unsafe { launch("dwconv3x3_glu", entry(dtype), &p) }?;
    let (batch, n) = (x.shape()[0], x.shape()[1]);
    HostTensor::new(vec![batch, n, x.shape()[2] / 2], out.to_f32())
}
