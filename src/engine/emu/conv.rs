//! kernels/conv.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::conv::{
    self as plan, DepthwiseConvBuffers, DepthwiseConvParams, DwConvGluBuffers, DwConvGluParams,
    GroupedLinearParams,
};
use crate::tensor::HostTensor;

emu_kernel!(fn entry(DwConvGluParams) = [
    sana_emu_dwconv3x3_glu_f32, sana_emu_dwconv3x3_glu_bf16, sana_emu_dwconv3x3_glu_f16
]);

emu_kernel!(fn depthwise_entry(DepthwiseConvParams) = [
    sana_emu_depthwise_conv_f32, sana_emu_depthwise_conv_bf16, sana_emu_depthwise_conv_f16
]);

emu_kernel!(fn grouped_entry(GroupedLinearParams) = [
    sana_emu_grouped_linear_f32, sana_emu_grouped_linear_bf16, sana_emu_grouped_linear_f16
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

/// Depthwise k×k convolution (zero padding k/2, optional bias) through kernels/conv.cu: `x` `[B, h·w, C]`, `w`
/// `[C, k, k]`, all rounded to `dtype`; as [`crate::cpu::conv::depthwise_conv`].
pub fn depthwise_conv(
    x: &HostTensor,
    w: &HostTensor,
    b: Option<&HostTensor>,
    h: usize,
    width: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (xs, ws) = (
        Storage::from_f32(dtype, x.data()),
        Storage::from_f32(dtype, w.data()),
    );
    let bs = b.map(|b| Storage::from_f32(dtype, b.data()));
    let mut out = Storage::poisoned(dtype, x.len());
    let buffers = DepthwiseConvBuffers {
        out: out.ptr_mut(),
        x: xs.ptr(),
        w: ws.ptr(),
        bias: bs.as_ref().map_or(0, Storage::ptr),
    };
    let p = plan::depthwise_conv(
        x.shape(),
        w.shape(),
        b.map(HostTensor::shape),
        (h, width),
        buffers,
    )?;
    if !p.geometry.is_empty() {
        // SAFETY: the plan checked x = [B, h·w, C], w = [C, k, k] and the bias [C]; out holds as many elements as
        // x; all buffers outlive the call.
        unsafe { launch("depthwise_conv", depthwise_entry(dtype), &p) }?;
    }
    HostTensor::new(x.shape().to_vec(), out.to_f32())
}

/// Grouped 1×1 convolution without bias through kernels/conv.cu: `x` `[.., Cin]`, `w` `[Cout, Cin/groups]`, all
/// rounded to `dtype`; as [`crate::cpu::linear::grouped_linear`].
pub fn grouped_linear(
    x: &HostTensor,
    w: &HostTensor,
    groups: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (xs, ws) = (
        Storage::from_f32(dtype, x.data()),
        Storage::from_f32(dtype, w.data()),
    );
    let (_, shape) = plan::grouped_linear(x.shape(), w.shape(), groups, (0, 0, 0))?;
    let mut out = Storage::poisoned(dtype, shape.iter().product());
    let (p, shape) = plan::grouped_linear(
        x.shape(),
        w.shape(),
        groups,
        (out.ptr_mut(), xs.ptr(), ws.ptr()),
    )?;
    if !p.geometry.is_empty() {
        // SAFETY: the plan checked x = [.., G·Ci] against w = [Cout, Ci] and sized the output, which `out` holds;
        // all buffers outlive the call.
        unsafe { launch("grouped_linear", grouped_entry(dtype), &p) }?;
    }
    HostTensor::new(shape, out.to_f32())
}
