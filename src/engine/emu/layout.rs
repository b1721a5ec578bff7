//! kernels/layout.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::layout::{
    self as plan, ChannelSpace, ChannelSpaceParams, TransposeBuffers, TransposeParams,
};
use crate::launch::Plan;
use crate::tensor::HostTensor;

emu_kernel!(fn entry(TransposeParams) = [
    sana_emu_transpose_f32, sana_emu_transpose_bf16, sana_emu_transpose_f16
]);

emu_kernel!(fn channel_space_entry(ChannelSpaceParams) = [
    sana_emu_channel_space_f32, sana_emu_channel_space_bf16, sana_emu_channel_space_f16
]);

/// A channel/space rearrangement of tokens `x` [B, h·w, C] through kernels/layout.cu, as the matching function of
/// [`crate::cpu::layout`] (`repeat_channels`, `pixel_shuffle`, `upsample_nearest2x`, `pixel_unshuffle`).
pub fn channel_space(
    x: &HostTensor,
    grid: (usize, usize),
    op: ChannelSpace,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let xs = Storage::from_f32(dtype, x.data());
    let (_, shape) = plan::channel_space(x.shape(), grid, op, (0, 0))?;
    let mut out = Storage::poisoned(dtype, shape.iter().product());
    let (p, shape) = plan::channel_space(x.shape(), grid, op, (out.ptr_mut(), xs.ptr()))?;
    if !p.geometry.is_empty() {
        // SAFETY: the plan checked x's shape against the grid and sized the output, which `out` holds; every
        // source index the kernel forms lies inside x; both buffers outlive the call.
        unsafe { launch("channel_space", channel_space_entry(dtype), &p) }?;
    }
    HostTensor::new(shape, out.to_f32())
}

/// Runs the transpose that `make_plan` plans for `x` and returns the result with `shape`.
fn run(
    x: &HostTensor,
    dtype: StorageDtype,
    kernel: &'static str,
    make_plan: impl FnOnce(TransposeBuffers) -> Result<Plan<TransposeParams>>,
    shape: impl FnOnce() -> Vec<usize>,
) -> Result<HostTensor> {
    let xs = Storage::from_f32(dtype, x.data());
    let mut out = Storage::poisoned(dtype, x.len());
    let p = make_plan(TransposeBuffers {
        out: out.ptr_mut(),
        x: xs.ptr(),
    })?;
    // SAFETY: the plan checked the shape of x, whose element count out shares; both outlive the call.
    unsafe { launch(kernel, entry(dtype), &p) }?;
    HostTensor::new(shape(), out.to_f32())
}

/// `[B, C, h, w]` → tokens `[B, h·w, C]` through kernels/layout.cu, as [`crate::cpu::layout::nchw_to_tokens`].
pub fn nchw_to_tokens(x: &HostTensor, dtype: StorageDtype) -> Result<HostTensor> {
    let s = x.shape();
    run(
        x,
        dtype,
        "nchw_to_tokens",
        |buffers| plan::nchw_to_tokens(s, buffers),
        || vec![s[0], s[2] * s[3], s[1]],
    )
}

/// Tokens `[B, h·w, C]` → `[B, C, h, w]` through kernels/layout.cu, as [`crate::cpu::layout::tokens_to_nchw`].
pub fn tokens_to_nchw(
    x: &HostTensor,
    h: usize,
    w: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let s = x.shape();
    run(
        x,
        dtype,
        "tokens_to_nchw",
        |buffers| plan::tokens_to_nchw(s, h, w, buffers),
        || vec![s[0], s[2], h, w],
    )
}
