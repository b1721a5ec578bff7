//! Launch plans for kernels/causal_attention.cu: Gemma-2's causal self-attention (GQA, soft-cap, sliding window,
//! key padding mask).

use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};
use crate::vocabulary::CausalAttention;

/// Largest head dimension the kernels serve.
pub const MAX_HEAD_DIM: usize = 256;

/// Lanes sharing a query pair; mirrors `LANES` in kernels/causal_attention.cu.
const LANES: usize = 8;

/// Which compiled kernel serves a head dimension: `causal_attention_d<max>_<dtype>` holds `⌈max/8⌉` accumulators per
/// query per lane, owns `queries()` queries per block and scores `key_tile()` keys per shared-memory tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadDimClass {
    D64,
    D128,
    D256,
}

impl HeadDimClass {
    /// The smallest class serving head dimension `d` (1 ≤ d ≤ 256).
    pub fn for_head_dim(d: usize) -> Option<Self> {
        match d {
            1..=64 => Some(Self::D64),
            65..=128 => Some(Self::D128),
            129..=MAX_HEAD_DIM => Some(Self::D256),
            _ => None,
        }
    }

    /// Queries per block (the kernel's QPB); the block has 4 threads per query.
    pub fn queries(self) -> usize {
        match self {
            Self::D256 => 16,
            _ => 32,
        }
    }

    /// Keys per shared-memory tile (8 lanes × keys per lane).
    pub fn key_tile(self) -> usize {
        match self {
            Self::D64 => 32,
            Self::D128 => 16,
            Self::D256 => 8,
        }
    }
}

/// Arguments of `causal_attention_d*_*`; mirrors `CausalAttentionParams` in kernels/causal_attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct CausalAttentionParams {
    /// `[B, L, heads·d]`.
    pub out: DevicePtr,
    /// `[B, L, heads·d]`.
    pub q: DevicePtr,
    /// `[B, L, kv_heads·d]`.
    pub k: DevicePtr,
    /// `[B, L, kv_heads·d]`.
    pub v: DevicePtr,
    /// `[B, L]`, non-zero = attend.
    pub key_mask: DevicePtr,
    pub l: u32,
    pub heads: u32,
    /// Query heads per key/value head.
    pub group: u32,
    pub d: u32,
    /// `heads·d`.
    pub q_stride: u32,
    /// `kv_heads·d`.
    pub kv_stride: u32,
    /// Query `i` sees key `j` only if `i − j < window`; `L` when there is no window (every causal key is closer).
    pub window: u32,
    pub scale: f32,
    /// The soft-cap `c`, 0 for none.
    pub softcap: f32,
    pub pad: u32,
}

const _: () = assert!(std::mem::size_of::<CausalAttentionParams>() == 80);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for CausalAttentionParams {}

/// Buffers of one causal attention launch.
#[derive(Clone, Copy, Debug)]
pub struct CausalAttentionBuffers {
    pub out: DevicePtr,
    pub q: DevicePtr,
    pub k: DevicePtr,
    pub v: DevicePtr,
    pub key_mask: DevicePtr,
}

/// A launch of the kernel compiled for `class` (`launch::kernel::causal_attention_kernel`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CausalAttentionPlan {
    pub class: HeadDimClass,
    pub plan: Plan<CausalAttentionParams>,
}

/// Plans causal attention for `q` [B, L, heads·d], `k`, `v` [B, L, kv_heads·d] and `key_mask` [B, L] (d ≤ 256, heads
/// a multiple of kv_heads, a positive finite soft-cap): one block per `class.queries()` queries of one head and batch
/// item.
pub fn causal_attention(
    q_shape: &[usize],
    k_shape: &[usize],
    v_shape: &[usize],
    mask_shape: &[usize],
    p: &CausalAttention,
    buffers: CausalAttentionBuffers,
) -> Result<CausalAttentionPlan> {
    const OP: &str = "causal_attention";
    let &[b, l, qdim] = q_shape else {
        return Err(Error::shape(
            OP,
            format!("q must be [B, L, heads·d], got {q_shape:?}"),
        ));
    };
    let (heads, kv_heads) = (p.heads, p.kv_heads);
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || qdim % heads != 0 {
        return Err(Error::shape(
            OP,
            format!(
                "width {qdim} cannot hold {heads} query heads sharing {kv_heads} key/value heads"
            ),
        ));
    }
    let d = qdim / heads;
    let kvdim = kv_heads * d;
    for (name, shape) in [("k", k_shape), ("v", v_shape)] {
        if shape != [b, l, kvdim] {
            return Err(Error::shape(
                OP,
                format!("{name} {shape:?} is not [{b}, {l}, {kvdim}]"),
            ));
        }
    }
    if mask_shape != [b, l] {
        return Err(Error::shape(
            OP,
            format!("key_mask {mask_shape:?} is not [{b}, {l}]"),
        ));
    }
    let class = HeadDimClass::for_head_dim(d).ok_or_else(|| {
        Error::shape(
            OP,
            format!("head dimension {d} is outside 1..={MAX_HEAD_DIM}"),
        )
    })?;
    let softcap = match p.softcap {
        None => 0.0,
        Some(c) if c > 0.0 && c.is_finite() => c,
        Some(c) => {
            return Err(Error::shape(
                OP,
                format!("soft-cap {c} is not a positive finite number"),
            ))
        }
    };
    if b > 65535 || heads > 65535 {
        return Err(Error::shape(
            OP,
            format!("B = {b} or heads = {heads} exceeds the grid limit 65535"),
        ));
    }
    // Q tile and K tile with odd row strides, V tile, P tile with TK + 1 columns, mask tile, flags; all f32.
    let (qpb, tk, odd) = (class.queries(), class.key_tile(), d | 1);
    let smem = 4 * (qpb * odd + tk * odd + tk * d + qpb * (tk + 1) + tk + qpb);
    let blocks = if l == 0 { 0 } else { b };
    Ok(CausalAttentionPlan {
        class,
        plan: Plan {
            geometry: Geometry {
                grid: [
                    to_u32(OP, "query tiles", l.div_ceil(qpb))?,
                    heads as u32,
                    blocks as u32,
                ],
                block: [to_u32(OP, "threads", qpb / 2 * LANES)?, 1, 1],
                shared_mem_bytes: to_u32(OP, "shared memory", smem)?,
            },
            params: CausalAttentionParams {
                out: buffers.out,
                q: buffers.q,
                k: buffers.k,
                v: buffers.v,
                key_mask: buffers.key_mask,
                l: to_u32(OP, "L", l)?,
                heads: heads as u32,
                group: to_u32(OP, "heads / kv_heads", heads / kv_heads)?,
                d: d as u32,
                q_stride: to_u32(OP, "heads·d", qdim)?,
                kv_stride: to_u32(OP, "kv_heads·d", kvdim)?,
                window: to_u32(OP, "window", p.window.map_or(l, |w| w.min(l)))?,
                scale: p.scale,
                softcap,
                pad: 0,
            },
        },
    })
}
