//! kernels/conv3x3.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::conv3x3::{self as plan, Conv3x3Buffers, Conv3x3Params};
use crate::tensor::HostTensor;

emu_kernel!(fn entry(Conv3x3Params) = [
    sana_emu_conv3x3_f32, sana_emu_conv3x3_bf16, sana_emu_conv3x3_f16
]);

/// 3×3 convolution (zero padding 1, stride 1 or 2, optional bias) through kernels/conv3x3.cu: `x` `[B, h·w, Cin]`,
/// `w` `[Cout, Cin, 3, 3]`, all rounded to `dtype`; as [`crate::cpu::conv::conv3x3`].
pub fn conv3x3(
    x: &HostTensor,
    w: &HostTensor,
    b: Option<&HostTensor>,
    grid: (usize, usize),
    stride: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (xs, ws) = (
        Storage::from_f32(dtype, x.data()),
        Storage::from_f32(dtype, w.data()),
    );
    let bs = b.map(|b| Storage::from_f32(dtype, b.data()));
    let bias_shape = b.map(HostTensor::shape);
    let no_buffers = Conv3x3Buffers {
        out: 0,
        x: 0,
        w: 0,
        bias: 0,
    };
    let (_, shape) = plan::conv3x3(x.shape(), w.shape(), bias_shape, grid, stride, no_buffers)?;
    let mut out = Storage::poisoned(dtype, shape.iter().product());
    let buffers = Conv3x3Buffers {
        out: out.ptr_mut(),
        x: xs.ptr(),
        w: ws.ptr(),
        bias: bs.as_ref().map_or(0, Storage::ptr),
    };
    let (p, shape) = plan::conv3x3(x.shape(), w.shape(), bias_shape, grid, stride, buffers)?;
    if !p.geometry.is_empty() {
        // SAFETY: the plan checked x = [B, h·w, Cin], w = [Cout, Cin, 3, 3], the bias [Cout], and sized the output,
        // which `out` holds; all buffers outlive the call.
        unsafe { launch("conv3x3", entry(dtype), &p) }?;
    }
    HostTensor::new(shape, out.to_f32())
}
