//! kernels/layout.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::layout::{
    self as plan, ChannelSpace, ChannelSpaceParams, ConcatParams, GroupMeanParams, QkvBuffers,
    SplitQkvParams, TransposeBuffers, TransposeParams,
};
use crate::launch::Plan;
use crate::tensor::HostTensor;

emu_kernel!(fn entry(TransposeParams) = [
    sana_emu_transpose_f32, sana_emu_transpose_bf16, sana_emu_transpose_f16
]);

emu_kernel!(fn channel_space_entry(ChannelSpaceParams) = [
    sana_emu_channel_space_f32, sana_emu_channel_space_bf16, sana_emu_channel_space_f16
]);

emu_kernel!(fn split_qkv_entry(SplitQkvParams) = [
    sana_emu_split_qkv_groups_f32, sana_emu_split_qkv_groups_bf16, sana_emu_split_qkv_groups_f16
]);

emu_kernel!(fn concat_entry(ConcatParams) = [
    sana_emu_concat_channels_f32, sana_emu_concat_channels_bf16, sana_emu_concat_channels_f16
]);

emu_kernel!(fn group_mean_entry(GroupMeanParams) = [
    sana_emu_channel_group_mean_f32, sana_emu_channel_group_mean_bf16, sana_emu_channel_group_mean_f16
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

/// Splits `t` `[B, N, G·3d]` into q, k, v `[B, N, G·d]` through kernels/layout.cu, as
/// [`crate::cpu::layout::split_qkv_groups`].
pub fn split_qkv_groups(
    t: &HostTensor,
    head_dim: usize,
    dtype: StorageDtype,
) -> Result<(HostTensor, HostTensor, HostTensor)> {
    let xs = Storage::from_f32(dtype, t.data());
    let no_out = QkvBuffers { q: 0, k: 0, v: 0 };
    let (_, shape) = plan::split_qkv_groups(t.shape(), head_dim, 0, no_out)?;
    let len = shape.iter().product();
    let mut outs = [0, 1, 2].map(|_| Storage::poisoned(dtype, len));
    let [q, k, v] = &mut outs;
    let buffers = QkvBuffers {
        q: q.ptr_mut(),
        k: k.ptr_mut(),
        v: v.ptr_mut(),
    };
    let (p, _) = plan::split_qkv_groups(t.shape(), head_dim, xs.ptr(), buffers)?;
    if !p.geometry.is_empty() {
        // SAFETY: the plan checked t's shape and sized the three outputs, which q, k, v hold; every source index
        // lies inside t; all buffers outlive the call.
        unsafe { launch("split_qkv_groups", split_qkv_entry(dtype), &p) }?;
    }
    let [q, k, v] = outs.map(|s| s.to_f32());
    Ok((
        HostTensor::new(shape.clone(), q)?,
        HostTensor::new(shape.clone(), k)?,
        HostTensor::new(shape, v)?,
    ))
}

/// `[B, N, Ca]`, `[B, N, Cb]` → `[B, N, Ca + Cb]` through kernels/layout.cu, as
/// [`crate::cpu::layout::concat_channels`].
pub fn concat_channels(a: &HostTensor, b: &HostTensor, dtype: StorageDtype) -> Result<HostTensor> {
    let (sa, sb) = (
        Storage::from_f32(dtype, a.data()),
        Storage::from_f32(dtype, b.data()),
    );
    let (_, shape) = plan::concat_channels(a.shape(), b.shape(), (0, 0, 0))?;
    let mut out = Storage::poisoned(dtype, shape.iter().product());
    let (p, shape) =
        plan::concat_channels(a.shape(), b.shape(), (out.ptr_mut(), sa.ptr(), sb.ptr()))?;
    if !p.geometry.is_empty() {
        // SAFETY: the plan checked that a and b share [B, N] and sized the output, which `out` holds; all buffers
        // outlive the call.
        unsafe { launch("concat_channels", concat_entry(dtype), &p) }?;
    }
    HostTensor::new(shape, out.to_f32())
}

/// Mean of each run of `g` consecutive channels, `[B, N, C]` → `[B, N, C/g]`, through kernels/layout.cu, as
/// [`crate::cpu::layout::channel_group_mean`].
pub fn channel_group_mean(x: &HostTensor, g: usize, dtype: StorageDtype) -> Result<HostTensor> {
    let xs = Storage::from_f32(dtype, x.data());
    let (_, shape) = plan::channel_group_mean(x.shape(), g, (0, 0))?;
    let mut out = Storage::poisoned(dtype, shape.iter().product());
    let (p, shape) = plan::channel_group_mean(x.shape(), g, (out.ptr_mut(), xs.ptr()))?;
    if !p.geometry.is_empty() {
        // SAFETY: the plan checked that g divides x's channels and sized the output, which `out` holds; both
        // buffers outlive the call.
        unsafe { launch("channel_group_mean", group_mean_entry(dtype), &p) }?;
    }
    HostTensor::new(shape, out.to_f32())
}
