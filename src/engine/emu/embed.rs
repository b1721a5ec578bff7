//! kernels/embed.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::embed::{
    self as plan, EmbeddingBuffers, EmbeddingParams, RotaryBuffers, RotaryParams,
};
use crate::tensor::HostTensor;

emu_kernel!(fn embedding_entry(EmbeddingParams) = [
    sana_emu_embedding_f32, sana_emu_embedding_bf16, sana_emu_embedding_f16
]);
emu_kernel!(fn rotary_entry(RotaryParams) = [
    sana_emu_rotary_f32, sana_emu_rotary_bf16, sana_emu_rotary_f16
]);

/// `table[ids[i]] · scale` → [ids.len(), D] with `scale` rounded to `dtype`, as [`crate::cpu::embed::embedding`]
/// given that rounded scale. An id ≥ V is an error.
pub fn embedding(
    table: &HostTensor,
    ids: &[u32],
    scale: f32,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let ts = Storage::from_f32(dtype, table.data());
    let d = table.shape().get(1).copied().unwrap_or(0);
    let mut out = Storage::poisoned(dtype, ids.len() * d);
    let buffers = EmbeddingBuffers {
        out: out.ptr_mut(),
        table: ts.ptr(),
        ids: ids.as_ptr() as u64,
    };
    let plan = plan::embedding(table.shape(), ids, scale, dtype.size(), buffers)?;
    // SAFETY: the plan checked table = [V, D] and every id < V; ids holds N u32s and out N·D elements; all buffers
    // outlive the call.
    unsafe { launch("embedding", embedding_entry(dtype), &plan) }?;
    HostTensor::new(vec![ids.len(), d], out.to_f32())
}

/// Rotate-half RoPE of `x` [B, L, heads·d] with `cos`, `sin` [L, d], all rounded to `dtype`, as
/// [`crate::cpu::rotary::rotary`].
pub fn rotary(
    x: &HostTensor,
    cos: &HostTensor,
    sin: &HostTensor,
    heads: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (xs, cs, ss) = (
        Storage::from_f32(dtype, x.data()),
        Storage::from_f32(dtype, cos.data()),
        Storage::from_f32(dtype, sin.data()),
    );
    let mut ys = Storage::poisoned(dtype, x.len());
    let buffers = RotaryBuffers {
        y: ys.ptr_mut(),
        x: xs.ptr(),
        cos: cs.ptr(),
        sin: ss.ptr(),
    };
    let plan = plan::rotary(x.shape(), cos.shape(), sin.shape(), heads, buffers)?;
    // SAFETY: the plan checked x = [B, L, heads·d] (d even) and cos = sin = [L, d]; y is a fresh buffer of x's size;
    // all buffers outlive the call.
    unsafe { launch("rotary", rotary_entry(dtype), &plan) }?;
    HostTensor::new(x.shape().to_vec(), ys.to_f32())
}
