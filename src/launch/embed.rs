//! Launch plans for kernels/embed.cu: Gemma-2's token embedding gather and rotary position embedding.

use super::elementwise::{all_aligned, pack_len};
use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};

/// Threads per block of both kernels.
const THREADS: usize = 256;

/// A 1-D grid of `THREADS`-thread blocks covering `items` work items.
fn grid_1d(op: &'static str, items: usize) -> Result<Geometry> {
    let blocks = items.div_ceil(THREADS);
    if blocks > i32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{items} work items exceed the 1-D grid limit"),
        ));
    }
    Ok(Geometry {
        grid: [to_u32(op, "blocks", blocks)?, 1, 1],
        block: [THREADS as u32, 1, 1],
        shared_mem_bytes: 0,
    })
}

/// Arguments of `embedding_{f32,bf16,f16}`; mirrors `EmbeddingParams` in kernels/embed.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EmbeddingParams {
    /// `[N, D]`.
    pub out: DevicePtr,
    /// `[V, D]`.
    pub table: DevicePtr,
    /// `[N]` u32 token ids, each < V.
    pub ids: DevicePtr,
    pub n: u32,
    pub d: u32,
    pub vocab: u32,
    /// Multiplies every row; the kernel rounds it to the storage dtype first.
    pub scale: f32,
    /// 1 when every buffer is 16-byte aligned and D is a multiple of the pack.
    pub aligned: u32,
    pub pad: u32,
}

const _: () = assert!(std::mem::size_of::<EmbeddingParams>() == 48);

/// Buffers of one `embedding` launch; `ids` holds the same ids the plan checked, as u32.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddingBuffers {
    pub out: DevicePtr,
    pub table: DevicePtr,
    pub ids: DevicePtr,
}

/// Plans `out[i] = table[ids[i]] · scale` for a `[V, D]` table of `elem_bytes`-byte elements: one 16-byte pack of
/// a row per thread. Every id is checked against V here: an id ≥ V is an error naming it and its position.
pub fn embedding(
    table_shape: &[usize],
    ids: &[u32],
    scale: f32,
    elem_bytes: usize,
    buffers: EmbeddingBuffers,
) -> Result<Plan<EmbeddingParams>> {
    const OP: &str = "embedding";
    let &[vocab, d] = table_shape else {
        return Err(Error::shape(
            OP,
            format!("table must be [V, D], got {table_shape:?}"),
        ));
    };
    if let Some((i, id)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= vocab)
    {
        return Err(Error::InvalidInput(format!(
            "token id {id} (position {i}) is outside the embedding table of {vocab} rows"
        )));
    }
    let pack = pack_len(OP, elem_bytes)?;
    let packs = ids
        .len()
        .checked_mul(d.div_ceil(pack))
        .ok_or_else(|| Error::shape(OP, "N·D overflows"))?;
    let aligned = d % pack == 0 && all_aligned(&[buffers.out, buffers.table, buffers.ids]);
    Ok(Plan {
        geometry: grid_1d(OP, packs)?,
        params: EmbeddingParams {
            out: buffers.out,
            table: buffers.table,
            ids: buffers.ids,
            n: to_u32(OP, "N", ids.len())?,
            d: to_u32(OP, "D", d)?,
            vocab: to_u32(OP, "V", vocab)?,
            scale,
            aligned: u32::from(aligned),
            pad: 0,
        },
    })
}

/// Arguments of `rotary_{f32,bf16,f16}`; mirrors `RotaryParams` in kernels/embed.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RotaryParams {
    /// `[B, L, heads·d]`.
    pub y: DevicePtr,
    /// `[B, L, heads·d]`.
    pub x: DevicePtr,
    /// `[L, d]`.
    pub cos: DevicePtr,
    /// `[L, d]`.
    pub sin: DevicePtr,
    pub rows: u32,
    pub l: u32,
    pub heads: u32,
    pub d: u32,
}

const _: () = assert!(std::mem::size_of::<RotaryParams>() == 48);

// SAFETY (both impls): plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for EmbeddingParams {}
unsafe impl cudarc::driver::DeviceRepr for RotaryParams {}

/// Buffers of one `rotary` launch.
#[derive(Clone, Copy, Debug)]
pub struct RotaryBuffers {
    pub y: DevicePtr,
    pub x: DevicePtr,
    pub cos: DevicePtr,
    pub sin: DevicePtr,
}

/// Plans rotate-half RoPE over `x` [B, L, heads·d] with `cos`, `sin` [L, d] (d even): one thread per rotated pair.
pub fn rotary(
    x_shape: &[usize],
    cos_shape: &[usize],
    sin_shape: &[usize],
    heads: usize,
    buffers: RotaryBuffers,
) -> Result<Plan<RotaryParams>> {
    const OP: &str = "rotary";
    let &[b, l, width] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, L, heads·d], got {x_shape:?}"),
        ));
    };
    if heads == 0 || width % heads != 0 || !(width / heads).is_multiple_of(2) {
        return Err(Error::shape(
            OP,
            format!("width {width} is not {heads} heads of an even size"),
        ));
    }
    let d = width / heads;
    for (name, shape) in [("cos", cos_shape), ("sin", sin_shape)] {
        if shape != [l, d] {
            return Err(Error::shape(
                OP,
                format!("{name} {shape:?} is not [{l}, {d}]"),
            ));
        }
    }
    let rows = b
        .checked_mul(l)
        .ok_or_else(|| Error::shape(OP, "B·L overflows"))?;
    let pairs = rows
        .checked_mul(width / 2)
        .ok_or_else(|| Error::shape(OP, "B·L·heads·d/2 overflows"))?;
    Ok(Plan {
        geometry: grid_1d(OP, pairs)?,
        params: RotaryParams {
            y: buffers.y,
            x: buffers.x,
            cos: buffers.cos,
            sin: buffers.sin,
            rows: to_u32(OP, "B·L", rows)?,
            l: to_u32(OP, "L", l)?,
            heads: to_u32(OP, "heads", heads)?,
            d: to_u32(OP, "d", d)?,
        },
    })
}
