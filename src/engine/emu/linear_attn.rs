//! kernels/linear_attn.cu through the emulator.

use super::{launch, Entry, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::linear_attn::{self as plan, LinearAttentionBuffers, LinearAttentionParams};
use crate::launch::{DevicePtr, Geometry};
use crate::tensor::HostTensor;

emu_kernel!(fn state_entry(LinearAttentionParams) = [
    sana_emu_linear_attn_state_f32, sana_emu_linear_attn_state_bf16, sana_emu_linear_attn_state_f16
]);
emu_kernel!(fn apply_entry(LinearAttentionParams) = [
    sana_emu_linear_attn_apply_f32, sana_emu_linear_attn_apply_bf16, sana_emu_linear_attn_apply_f16
]);

extern "C" {
    fn sana_emu_linear_attn_reduce_f32(
        g: *const Geometry,
        p: *const LinearAttentionParams,
    ) -> std::ffi::c_int;
}

/// Four f32s on a 16-byte boundary: workspaces built from these satisfy the kernels' 128-bit stores.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct F32x4([f32; 4]);

/// A NaN-filled f32 workspace of at least `len` elements, 16-byte aligned.
fn workspace(len: usize) -> Vec<F32x4> {
    vec![F32x4([f32::NAN; 4]); len.div_ceil(4)]
}

/// Sana's ReLU linear attention through kernels/linear_attn.cu: `q`, `k`, `v` [B, N, heads·32] rounded to `dtype`,
/// as [`crate::cpu::linear_attn::linear_attention`].
pub fn linear_attention(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    heads: usize,
    eps: f32,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let sizes = plan::workspace(q.shape(), heads)?;
    let (qs, ks, vs) = (
        Storage::from_f32(dtype, q.data()),
        Storage::from_f32(dtype, k.data()),
        Storage::from_f32(dtype, v.data()),
    );
    let mut out = Storage::poisoned(dtype, q.len());
    let mut partials = workspace(sizes.partials);
    let mut state = workspace(sizes.state);
    let buffers = LinearAttentionBuffers {
        out: out.ptr_mut(),
        q: qs.ptr(),
        k: ks.ptr(),
        v: vs.ptr(),
        partials: partials.as_mut_ptr() as DevicePtr,
        state: state.as_mut_ptr() as DevicePtr,
    };
    let plans = plan::linear_attention(q.shape(), k.shape(), v.shape(), heads, eps, buffers)?;
    let reduce: Entry<LinearAttentionParams> = sana_emu_linear_attn_reduce_f32;
    // SAFETY: the plan checked q = k = v = [B, N, heads·32]; out is a fresh buffer of q's size and the workspaces
    // hold the sizes `plan::workspace` gives for that shape, 16-byte aligned; all outlive the three calls, which
    // run in order (phase 1 writes partials, the reduction reads them and writes state, phase 2 reads state).
    unsafe {
        launch("linear_attn_state", state_entry(dtype), &plans.state)?;
        launch("linear_attn_reduce", reduce, &plans.reduce)?;
        launch("linear_attn_apply", apply_entry(dtype), &plans.apply)?;
    }
    HostTensor::new(q.shape().to_vec(), out.to_f32())
}
