//! Launch plans for kernels/linear_attn.cu: ReLU linear attention as three launches (partial states per token
//! chunk, their reduction, the per-token application) through two f32 workspaces.

use super::elementwise::all_aligned;
use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};

/// Head dimension the kernels are specialised for (every Sana model: `attention_head_dim` = 32).
pub const HEAD_DIM: usize = 32;

/// f32 values of one head's state `[v; 1] ⊗ relu(k)`: 33 rows of 32.
pub const STATE_LEN: usize = (HEAD_DIM + 1) * HEAD_DIM;

/// Phase-1 blocks per (batch item, head), at most: enough blocks to fill a GPU at 1024² (16 chunks × 70 heads × 2)
/// while the partial states stay a fraction of the inputs.
pub const MAX_CHUNKS: usize = 32;

/// Tokens per phase-1 block, at least (two tiles of 32).
pub const MIN_CHUNK_TOKENS: usize = 64;

/// Tokens per phase-2 block; mirrors `APPLY_TOKENS` in kernels/linear_attn.cu.
pub const APPLY_TOKENS: usize = 64;

const STATE_THREADS: u32 = 128;
const REDUCE_THREADS: u32 = 256;
const APPLY_THREADS: u32 = 128;

/// Arguments of the three linear-attention kernels; mirrors `LinearAttentionParams` in kernels/linear_attn.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LinearAttentionParams {
    /// `[B, N, heads·32]`.
    pub out: DevicePtr,
    pub q: DevicePtr,
    pub k: DevicePtr,
    pub v: DevicePtr,
    /// f32 `[B, heads, chunks, 33, 32]`, 16-byte aligned.
    pub partials: DevicePtr,
    /// f32 `[B, heads, 33, 32]`, 16-byte aligned.
    pub state: DevicePtr,
    pub n: u32,
    pub heads: u32,
    pub chunks: u32,
    pub chunk_tokens: u32,
    pub eps: f32,
    /// 1 when q, k, v and out are 16-byte aligned (128-bit loads).
    pub aligned: u32,
}

const _: () = assert!(std::mem::size_of::<LinearAttentionParams>() == 72);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for LinearAttentionParams {}

/// Buffers of one linear attention; size the workspaces with [`workspace`].
#[derive(Clone, Copy, Debug)]
pub struct LinearAttentionBuffers {
    pub out: DevicePtr,
    pub q: DevicePtr,
    pub k: DevicePtr,
    pub v: DevicePtr,
    pub partials: DevicePtr,
    pub state: DevicePtr,
}

/// The three launches, in order: `linear_attn_state_<dtype>`, `linear_attn_reduce_f32`, `linear_attn_apply_<dtype>`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearAttentionPlan {
    pub state: Plan<LinearAttentionParams>,
    pub reduce: Plan<LinearAttentionParams>,
    pub apply: Plan<LinearAttentionParams>,
}

/// f32 element counts of the two workspaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workspace {
    pub partials: usize,
    pub state: usize,
}

/// `(B, N, heads)` of `q` [B, N, heads·32], with the head dimension checked.
fn dims(op: &'static str, q_shape: &[usize], heads: usize) -> Result<(usize, usize, usize)> {
    let &[b, n, width] = q_shape else {
        return Err(Error::shape(
            op,
            format!("q must be [B, N, heads·d], got {q_shape:?}"),
        ));
    };
    if heads == 0 || width != heads * HEAD_DIM {
        return Err(Error::shape(
            op,
            format!(
                "width {width} is not {heads} heads of dimension {HEAD_DIM} (the kernels are specialised for \
                 Sana's head dimension {HEAD_DIM})"
            ),
        ));
    }
    Ok((b, n, heads))
}

/// `(chunk_tokens, chunks)` for `n` tokens: at least 64 tokens (a multiple of 32) per chunk, at most 32 chunks.
fn chunking(n: usize) -> (usize, usize) {
    let tokens = n
        .div_ceil(MAX_CHUNKS)
        .next_multiple_of(32)
        .max(MIN_CHUNK_TOKENS);
    (tokens, n.div_ceil(tokens))
}

/// Workspace sizes for `q` [B, N, heads·32].
pub fn workspace(q_shape: &[usize], heads: usize) -> Result<Workspace> {
    let (b, n, heads) = dims("linear_attention", q_shape, heads)?;
    let (_, chunks) = chunking(n);
    Ok(Workspace {
        partials: b * heads * chunks * STATE_LEN,
        state: b * heads * STATE_LEN,
    })
}

/// Plans `out_n = KV·relu(q_n) / (ks·relu(q_n) + eps)` per head for `q`, `k`, `v` [B, N, heads·32].
pub fn linear_attention(
    q_shape: &[usize],
    k_shape: &[usize],
    v_shape: &[usize],
    heads: usize,
    eps: f32,
    buffers: LinearAttentionBuffers,
) -> Result<LinearAttentionPlan> {
    const OP: &str = "linear_attention";
    let (b, n, heads) = dims(OP, q_shape, heads)?;
    for (name, shape) in [("k", k_shape), ("v", v_shape)] {
        if shape != q_shape {
            return Err(Error::shape(
                OP,
                format!("{name} {shape:?} does not match q {q_shape:?}"),
            ));
        }
    }
    if !all_aligned(&[buffers.partials, buffers.state]) {
        return Err(Error::shape(
            OP,
            "the f32 workspaces must be 16-byte aligned (128-bit stores)",
        ));
    }
    let (chunk_tokens, chunks) = chunking(n);
    if b > 65535 || heads > 65535 {
        return Err(Error::shape(
            OP,
            format!("B = {b} or heads = {heads} exceeds the grid limit 65535"),
        ));
    }
    let params = LinearAttentionParams {
        out: buffers.out,
        q: buffers.q,
        k: buffers.k,
        v: buffers.v,
        partials: buffers.partials,
        state: buffers.state,
        n: to_u32(OP, "N", n)?,
        heads: heads as u32,
        chunks: to_u32(OP, "chunks", chunks)?,
        chunk_tokens: to_u32(OP, "chunk tokens", chunk_tokens)?,
        eps,
        aligned: u32::from(all_aligned(&[buffers.out, buffers.q, buffers.k, buffers.v])),
    };
    // With no tokens every grid is empty: there is nothing to write.
    let (b, heads) = (if n == 0 { 0 } else { b as u32 }, heads as u32);
    let plan = |grid: [u32; 3], threads: u32| Plan {
        geometry: Geometry {
            grid,
            block: [threads, 1, 1],
            shared_mem_bytes: 0,
        },
        params,
    };
    Ok(LinearAttentionPlan {
        state: plan([chunks as u32, heads, b], STATE_THREADS),
        reduce: plan([heads, b, 1], REDUCE_THREADS),
        apply: plan(
            [
                to_u32(OP, "token tiles", n.div_ceil(APPLY_TOKENS))?,
                heads,
                b,
            ],
            APPLY_THREADS,
        ),
    })
}
