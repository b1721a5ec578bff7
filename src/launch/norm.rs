//! Launch plans for kernels/norm.cu.

use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};

/// Largest D whose f32 row (4·D bytes, 96 KiB) fits the shared memory of every architecture the PTX targets after
/// opting in (sm_86/89: 99 KiB with the kernel's own 128 bytes); rows above 48 KiB opt in per launch (the cuda
/// engine's `cuFuncSetAttribute`).
pub const LAYER_NORM_MAX_D: usize = 24 * 1024;

/// Threads per block of `layer_norm_modulate_*`, at most.
const LAYER_NORM_MAX_THREADS: usize = 256;

/// Threads of a block normalising one row of `d` values: a warp per 32 values, at most 256.
fn row_threads(d: usize) -> usize {
    d.next_multiple_of(32).min(LAYER_NORM_MAX_THREADS)
}

/// One block per row of `d` values, the row cached in f32 shared memory: the geometry of the LayerNorm kernels
/// (kernels/layer_norm_row.cuh), plain and fused with the residual add.
pub(crate) fn cached_row_geometry(op: &'static str, rows: usize, d: usize) -> Result<Geometry> {
    if d == 0 || d > LAYER_NORM_MAX_D {
        return Err(Error::shape(
            op,
            format!("D = {d} is outside 1..={LAYER_NORM_MAX_D} (the row is cached in at most 96 KiB of shared memory)"),
        ));
    }
    if rows > i32::MAX as usize {
        return Err(Error::shape(
            op,
            format!("{rows} rows exceed the grid limit 2^31 − 1"),
        ));
    }
    Ok(Geometry {
        grid: [to_u32(op, "rows", rows)?, 1, 1],
        block: [to_u32(op, "threads", row_threads(d))?, 1, 1],
        shared_mem_bytes: to_u32(op, "shared memory", d * 4)?,
    })
}

/// Arguments of `layer_norm_modulate_{f32,bf16,f16}`; mirrors `LayerNormModulateParams` in kernels/norm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LayerNormModulateParams {
    /// Output `[B, N, D]`.
    pub y: DevicePtr,
    /// Input `[B, N, D]`.
    pub x: DevicePtr,
    /// Modulation table `[B, K, D]`.
    pub modulation: DevicePtr,
    pub n: u32,
    pub d: u32,
    pub k: u32,
    pub shift_row: u32,
    pub scale_row: u32,
    pub eps: f32,
}

const _: () = assert!(std::mem::size_of::<LayerNormModulateParams>() == 48);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for LayerNormModulateParams {}

/// Buffers of one `layer_norm_modulate` launch, in the storage dtype the kernel is chosen for.
#[derive(Clone, Copy, Debug)]
pub struct LayerNormModulateBuffers {
    pub y: DevicePtr,
    pub x: DevicePtr,
    pub modulation: DevicePtr,
}

/// Plans `y = LayerNorm(x)·(1 + m[b, scale_row]) + m[b, shift_row]` for `x`: [B, N, D] and `modulation`: [B, K, D]:
/// one block per row (grid B·N), min(256, D rounded up to 32) threads, the row cached in f32 shared memory.
pub fn layer_norm_modulate(
    x_shape: &[usize],
    modulation_shape: &[usize],
    shift_row: usize,
    scale_row: usize,
    eps: f32,
    buffers: LayerNormModulateBuffers,
) -> Result<Plan<LayerNormModulateParams>> {
    const OP: &str = "layer_norm_modulate";
    let &[b, n, d] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, N, D], got {x_shape:?}"),
        ));
    };
    let &[mb, k, md] = modulation_shape else {
        return Err(Error::shape(
            OP,
            format!("modulation must be [B, K, D], got {modulation_shape:?}"),
        ));
    };
    if (mb, md) != (b, d) {
        return Err(Error::shape(
            OP,
            format!("modulation {modulation_shape:?} does not match x {x_shape:?} (expected [{b}, K, {d}])"),
        ));
    }
    if shift_row >= k || scale_row >= k {
        return Err(Error::shape(
            OP,
            format!("rows {shift_row}/{scale_row} out of a {k}-row modulation table"),
        ));
    }
    Ok(Plan {
        geometry: cached_row_geometry(OP, b * n, d)?,
        params: LayerNormModulateParams {
            y: buffers.y,
            x: buffers.x,
            modulation: buffers.modulation,
            n: to_u32(OP, "N", n)?,
            d: to_u32(OP, "D", d)?,
            k: to_u32(OP, "K", k)?,
            shift_row: to_u32(OP, "shift_row", shift_row)?,
            scale_row: to_u32(OP, "scale_row", scale_row)?,
            eps,
        },
    })
}

/// Arguments of `rms_norm_{f32,bf16,f16}`; mirrors `RmsNormParams` in kernels/norm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RmsNormParams {
    /// Output `[rows, D]`.
    pub y: DevicePtr,
    /// Input `[rows, D]`.
    pub x: DevicePtr,
    /// Weight `[D]`.
    pub w: DevicePtr,
    /// Bias `[D]`, or null for none.
    pub b: DevicePtr,
    pub d: u32,
    /// 0: diffusers `RMSNorm` (round, then `· w`); 1: Gemma (`· (1 + w)`, one rounding).
    pub plus_one: u32,
    pub eps: f32,
    pub pad: u32,
}

const _: () = assert!(std::mem::size_of::<RmsNormParams>() == 48);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for RmsNormParams {}

/// Buffers of one `rms_norm` launch (`b` 0 when there is no bias).
#[derive(Clone, Copy, Debug)]
pub struct RmsNormBuffers {
    pub y: DevicePtr,
    pub x: DevicePtr,
    pub w: DevicePtr,
    pub b: DevicePtr,
}

/// Plans an RMSNorm over the last dimension of `x_shape` (any rank ≥ 1) with a `[D]` weight and an optional `[D]`
/// bias (`b_shape` `None` means `b` is null): one block per row, min(256, D rounded up to 32) threads.
pub fn rms_norm(
    x_shape: &[usize],
    w_shape: &[usize],
    b_shape: Option<&[usize]>,
    plus_one: bool,
    eps: f32,
    RmsNormBuffers { y, x, w, b }: RmsNormBuffers,
) -> Result<Plan<RmsNormParams>> {
    const OP: &str = "rms_norm";
    let Some(&d) = x_shape.last() else {
        return Err(Error::shape(OP, "x has no dimensions"));
    };
    if w_shape != [d] || d == 0 {
        return Err(Error::shape(
            OP,
            format!("weight {w_shape:?} must be [D] = [{d}] for x {x_shape:?}, D > 0"),
        ));
    }
    if b_shape.is_some_and(|b| b != [d]) || b_shape.is_none() != (b == 0) {
        return Err(Error::shape(
            OP,
            format!(
                "bias {b_shape:?} must be [D] = [{d}] for x {x_shape:?}, given with its pointer"
            ),
        ));
    }
    let rows: usize = x_shape[..x_shape.len() - 1].iter().product();
    if rows > i32::MAX as usize {
        return Err(Error::shape(
            OP,
            format!("{rows} rows exceed the grid limit 2^31 − 1"),
        ));
    }
    Ok(Plan {
        geometry: Geometry {
            grid: [to_u32(OP, "rows", rows)?, 1, 1],
            block: [to_u32(OP, "threads", row_threads(d))?, 1, 1],
            shared_mem_bytes: 0,
        },
        params: RmsNormParams {
            y,
            x,
            w,
            b,
            d: to_u32(OP, "D", d)?,
            plus_one: u32::from(plus_one),
            eps,
            pad: 0,
        },
    })
}
