//! Launch plans for kernels/layout.cu: NCHW images ↔ channels-last tokens, both as a batched transpose.

use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};

/// Tile edge; mirrors `TILE` in kernels/layout.cu.
const TILE: usize = 32;

/// Rows of threads per block (each moves TILE / ROWS elements of a column each way).
const BLOCK_ROWS: u32 = 8;

/// Arguments of `transpose_*`; mirrors `TransposeParams` in kernels/layout.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TransposeParams {
    /// `[B, S, R]`.
    pub out: DevicePtr,
    /// `[B, R, S]`.
    pub x: DevicePtr,
    pub rows: u32,
    pub cols: u32,
}

const _: () = assert!(std::mem::size_of::<TransposeParams>() == 24);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for TransposeParams {}

/// Buffers of one transpose.
#[derive(Clone, Copy, Debug)]
pub struct TransposeBuffers {
    pub out: DevicePtr,
    pub x: DevicePtr,
}

/// `out[b, s, r] = x[b, r, s]` for `x` [B, R, S]: 32 × 32 tiles through shared memory.
fn transpose(
    op: &'static str,
    (b, r, s): (usize, usize, usize),
    buffers: TransposeBuffers,
) -> Result<Plan<TransposeParams>> {
    let (row_tiles, col_tiles) = (r.div_ceil(TILE), s.div_ceil(TILE));
    if b > 65535 || row_tiles > 65535 {
        return Err(Error::shape(
            op,
            format!("B = {b} or {r} rows ({row_tiles} tiles) exceed the grid limit 65535"),
        ));
    }
    let empty = r == 0 || s == 0;
    Ok(Plan {
        geometry: Geometry {
            grid: [
                to_u32(op, "column tiles", col_tiles)?,
                row_tiles as u32,
                if empty { 0 } else { b as u32 },
            ],
            block: [TILE as u32, BLOCK_ROWS, 1],
            shared_mem_bytes: 0,
        },
        params: TransposeParams {
            out: buffers.out,
            x: buffers.x,
            rows: to_u32(op, "rows", r)?,
            cols: to_u32(op, "columns", s)?,
        },
    })
}

/// Plans `[B, C, h, w]` → tokens `[B, h·w, C]`.
pub fn nchw_to_tokens(
    x_shape: &[usize],
    buffers: TransposeBuffers,
) -> Result<Plan<TransposeParams>> {
    const OP: &str = "nchw_to_tokens";
    let &[b, c, h, w] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, C, h, w], got {x_shape:?}"),
        ));
    };
    transpose(OP, (b, c, h * w), buffers)
}

/// Plans tokens `[B, h·w, C]` → `[B, C, h, w]`.
pub fn tokens_to_nchw(
    x_shape: &[usize],
    h: usize,
    w: usize,
    buffers: TransposeBuffers,
) -> Result<Plan<TransposeParams>> {
    const OP: &str = "tokens_to_nchw";
    let &[b, n, c] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, h·w, C], got {x_shape:?}"),
        ));
    };
    if h.checked_mul(w) != Some(n) {
        return Err(Error::shape(
            OP,
            format!("x {x_shape:?} does not hold {h}·{w} tokens"),
        ));
    }
    if n == 0 {
        return Err(Error::shape(OP, "empty image grid"));
    }
    transpose(OP, (b, n, c), buffers)
}
