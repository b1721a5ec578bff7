//! Launch plans for kernels/attention.cu: softmax attention with an additive key bias (Sana's cross-attention).

use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};

/// Queries per block; mirrors `QUERIES` in kernels/attention.cu.
pub const QUERIES: usize = 32;

/// Largest head dimension the kernels serve.
pub const MAX_HEAD_DIM: usize = 128;

const THREADS: u32 = 128;

/// Which compiled kernel serves a head dimension: `attention_d<max>_<dtype>` holds `⌈max/8⌉` accumulators per query
/// per lane and scores `key_tile` keys per shared-memory tile. Sana's 32, 72 and 112 each have an exact class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadDimClass {
    D32,
    D72,
    D112,
    D128,
}

impl HeadDimClass {
    /// The smallest class serving head dimension `d` (1 ≤ d ≤ 128).
    pub fn for_head_dim(d: usize) -> Option<Self> {
        match d {
            1..=32 => Some(Self::D32),
            33..=72 => Some(Self::D72),
            73..=112 => Some(Self::D112),
            113..=MAX_HEAD_DIM => Some(Self::D128),
            _ => None,
        }
    }

    /// Keys per shared-memory tile (8 lanes × keys per lane).
    pub fn key_tile(self) -> usize {
        match self {
            Self::D128 => 16,
            _ => 32,
        }
    }
}

/// Arguments of `attention_d*_*`; mirrors `AttentionParams` in kernels/attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    /// `[B, N, heads·d]`.
    pub out: DevicePtr,
    /// `[B, N, heads·d]`.
    pub q: DevicePtr,
    /// `[B, L, heads·d]`.
    pub k: DevicePtr,
    /// `[B, L, heads·d]`.
    pub v: DevicePtr,
    /// `[B, L]`.
    pub key_bias: DevicePtr,
    pub n: u32,
    pub l: u32,
    pub heads: u32,
    pub d: u32,
    pub stride: u32,
    pub scale: f32,
}

const _: () = assert!(std::mem::size_of::<AttentionParams>() == 64);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for AttentionParams {}

/// Buffers of one attention launch.
#[derive(Clone, Copy, Debug)]
pub struct AttentionBuffers {
    pub out: DevicePtr,
    pub q: DevicePtr,
    pub k: DevicePtr,
    pub v: DevicePtr,
    pub key_bias: DevicePtr,
}

/// A launch of the kernel compiled for `class` (`launch::kernel::attention_kernel`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionPlan {
    pub class: HeadDimClass,
    pub plan: Plan<AttentionParams>,
}

/// Plans `softmax(q kᵀ/√d + bias) v` per head for `q` [B, N, heads·d], `k`, `v` [B, L, heads·d] and `key_bias`
/// [B, L] (d ≤ 128, L ≥ 1): one block of 128 threads per 32 queries of one head and batch item.
pub fn attention(
    q_shape: &[usize],
    k_shape: &[usize],
    v_shape: &[usize],
    bias_shape: &[usize],
    heads: usize,
    buffers: AttentionBuffers,
) -> Result<AttentionPlan> {
    const OP: &str = "attention";
    let &[b, n, width] = q_shape else {
        return Err(Error::shape(
            OP,
            format!("q must be [B, N, heads·d], got {q_shape:?}"),
        ));
    };
    let l = k_shape.get(1).copied().unwrap_or(0);
    for (name, shape) in [("k", k_shape), ("v", v_shape)] {
        if shape != [b, l, width] {
            return Err(Error::shape(
                OP,
                format!("{name} {shape:?} is not [{b}, L, {width}] (k's L = {l})"),
            ));
        }
    }
    if bias_shape != [b, l] {
        return Err(Error::shape(
            OP,
            format!("key_bias {bias_shape:?} is not [{b}, {l}]"),
        ));
    }
    if l == 0 {
        return Err(Error::shape(
            OP,
            "no keys: the softmax over L = 0 is undefined",
        ));
    }
    if heads == 0 || width % heads != 0 {
        return Err(Error::shape(
            OP,
            format!("width {width} is not divisible into {heads} heads"),
        ));
    }
    let d = width / heads;
    let class = HeadDimClass::for_head_dim(d).ok_or_else(|| {
        Error::shape(
            OP,
            format!("head dimension {d} is outside 1..={MAX_HEAD_DIM}"),
        )
    })?;
    if b > 65535 || heads > 65535 {
        return Err(Error::shape(
            OP,
            format!("B = {b} or heads = {heads} exceeds the grid limit 65535"),
        ));
    }
    // Q tile and K tile with odd row strides, V tile, P tile with TK + 1 columns, bias tile; all f32.
    let (tk, odd) = (class.key_tile(), d | 1);
    let smem = 4 * (QUERIES * odd + tk * odd + tk * d + QUERIES * (tk + 1) + tk);
    let blocks = if n == 0 { 0 } else { b };
    Ok(AttentionPlan {
        class,
        plan: Plan {
            geometry: Geometry {
                grid: [
                    to_u32(OP, "query tiles", n.div_ceil(QUERIES))?,
                    heads as u32,
                    blocks as u32,
                ],
                block: [THREADS, 1, 1],
                shared_mem_bytes: to_u32(OP, "shared memory", smem)?,
            },
            params: AttentionParams {
                out: buffers.out,
                q: buffers.q,
                k: buffers.k,
                v: buffers.v,
                key_bias: buffers.key_bias,
                n: to_u32(OP, "N", n)?,
                l: to_u32(OP, "L", l)?,
                heads: heads as u32,
                d: d as u32,
                stride: to_u32(OP, "heads·d", width)?,
                // As torch's default SDPA scale: 1/√d in double, then rounded to f32.
                scale: (1.0 / (d as f64).sqrt()) as f32,
            },
        },
    })
}
