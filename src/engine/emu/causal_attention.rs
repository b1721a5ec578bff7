//! kernels/causal_attention.cu through the emulator.

use super::{launch, Storage, StorageDtype};
use crate::engine::CausalAttention;
use crate::error::Result;
use crate::launch::causal_attention::{
    self as plan, CausalAttentionBuffers, CausalAttentionParams, HeadDimClass,
};
use crate::tensor::HostTensor;

emu_kernel!(fn d64_entry(CausalAttentionParams) = [
    sana_emu_causal_attention_d64_f32,
    sana_emu_causal_attention_d64_bf16,
    sana_emu_causal_attention_d64_f16
]);
emu_kernel!(fn d128_entry(CausalAttentionParams) = [
    sana_emu_causal_attention_d128_f32,
    sana_emu_causal_attention_d128_bf16,
    sana_emu_causal_attention_d128_f16
]);
emu_kernel!(fn d256_entry(CausalAttentionParams) = [
    sana_emu_causal_attention_d256_f32,
    sana_emu_causal_attention_d256_bf16,
    sana_emu_causal_attention_d256_f16
]);

/// Causal self-attention through kernels/causal_attention.cu: `q` [B, L, heads·d], `k`, `v` [B, L, kv_heads·d],
/// `key_mask` [B, L], all rounded to `dtype`, as [`crate::cpu::causal_attention::causal_attention`].
pub fn causal_attention(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    key_mask: &HostTensor,
    params: &CausalAttention,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (qs, ks, vs, ms) = (
        Storage::from_f32(dtype, q.data()),
        Storage::from_f32(dtype, k.data()),
        Storage::from_f32(dtype, v.data()),
        Storage::from_f32(dtype, key_mask.data()),
    );
    let mut out = Storage::poisoned(dtype, q.len());
    let buffers = CausalAttentionBuffers {
        out: out.ptr_mut(),
        q: qs.ptr(),
        k: ks.ptr(),
        v: vs.ptr(),
        key_mask: ms.ptr(),
    };
    let p = plan::causal_attention(
        q.shape(),
        k.shape(),
        v.shape(),
        key_mask.shape(),
        params,
        buffers,
    )?;
    let entry = match p.class {
        HeadDimClass::D64 => d64_entry(dtype),
        HeadDimClass::D128 => d128_entry(dtype),
        HeadDimClass::D256 => d256_entry(dtype),
    };
    // SAFETY: the plan checked q = [B, L, heads·d], k = v = [B, L, kv_heads·d], key_mask = [B, L] with d within the
    // chosen class and heads a multiple of kv_heads; out is a fresh buffer of q's size; all buffers outlive the call.
    unsafe { launch(p.class.kernel(), entry, &p.plan) }?;
    HostTensor::new(q.shape().to_vec(), out.to_f32())
}
