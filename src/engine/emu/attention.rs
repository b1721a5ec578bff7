//! kernels/attention.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::error::Result;
use crate::launch::attention::{self as plan, AttentionBuffers, AttentionParams, HeadDimClass};
use crate::tensor::HostTensor;

emu_kernel!(fn d32_entry(AttentionParams) = [
    sana_emu_attention_d32_f32, sana_emu_attention_d32_bf16, sana_emu_attention_d32_f16
]);
emu_kernel!(fn d72_entry(AttentionParams) = [
    sana_emu_attention_d72_f32, sana_emu_attention_d72_bf16, sana_emu_attention_d72_f16
]);
emu_kernel!(fn d112_entry(AttentionParams) = [
    sana_emu_attention_d112_f32, sana_emu_attention_d112_bf16, sana_emu_attention_d112_f16
]);
emu_kernel!(fn d128_entry(AttentionParams) = [
    sana_emu_attention_d128_f32, sana_emu_attention_d128_bf16, sana_emu_attention_d128_f16
]);

/// Softmax attention with an additive key bias through kernels/attention.cu: `q` [B, N, heads·d], `k`, `v`
/// [B, L, heads·d], `key_bias` [B, L], all rounded to `dtype`, as [`crate::cpu::attention::attention`].
pub fn attention(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    key_bias: &HostTensor,
    heads: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (qs, ks, vs, bs) = (
        Storage::from_f32(dtype, q.data()),
        Storage::from_f32(dtype, k.data()),
        Storage::from_f32(dtype, v.data()),
        Storage::from_f32(dtype, key_bias.data()),
    );
    let mut out = Storage::poisoned(dtype, q.len());
    let buffers = AttentionBuffers {
        out: out.ptr_mut(),
        q: qs.ptr(),
        k: ks.ptr(),
        v: vs.ptr(),
        key_bias: bs.ptr(),
    };
    let p = plan::attention(
        q.shape(),
        k.shape(),
        v.shape(),
        key_bias.shape(),
        heads,
        buffers,
    )?;
    let entry = match p.class {
        HeadDimClass::D32 => d32_entry(dtype),
        HeadDimClass::D72 => d72_entry(dtype),
        HeadDimClass::D112 => d112_entry(dtype),
        HeadDimClass::D128 => d128_entry(dtype),
    };
    // SAFETY: the plan checked q = [B, N, heads·d], k = v = [B, L, heads·d], key_bias = [B, L] with d within the
    // chosen class; out is a fresh buffer of q's size; all buffers outlive the call.
    unsafe { launch(p.class.kernel(), entry, &p.plan) }?;
    HostTensor::new(q.shape().to_vec(), out.to_f32())
}
