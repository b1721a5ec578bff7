//! Launch plans for kernels/conv.cu: the depthwise 3×3 convolution + bias + GLU(SiLU) of Sana's Mix-FFN.

use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};

/// Channels (threads) per block.
const THREADS: usize = 128;

/// Output rows per block: enough work per thread to amortise its 20 weight loads, enough blocks to fill a GPU at
/// 1024² (⌈5600/128⌉ × 32/4 × 2 = 704).
pub const ROWS: usize = 4;

/// Arguments of `dwconv3x3_glu_*`; mirrors `DwConvGluParams` in kernels/conv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DwConvGluParams {
    /// `[B, h·w, F]`.
    pub out: DevicePtr,
    /// `[B, h·w, 2F]`.
    pub x: DevicePtr,
    /// `[2F, 9]`.
    pub w: DevicePtr,
    /// `[2F]`.
    pub bias: DevicePtr,
    pub h: u32,
    pub width: u32,
    pub f: u32,
    pub rows: u32,
}

const _: () = assert!(std::mem::size_of::<DwConvGluParams>() == 48);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for DwConvGluParams {}

/// Buffers of one `dwconv3x3_glu` launch.
#[derive(Clone, Copy, Debug)]
pub struct DwConvGluBuffers {
    pub out: DevicePtr,
    pub x: DevicePtr,
    pub w: DevicePtr,
    pub bias: DevicePtr,
}

/// Plans the depthwise 3×3 conv (zero padding 1) + bias + `value · SiLU(gate)` over `x` `[B, h·w, 2F]` seen as
/// `[B, h, w, 2F]`, with `w` `[2F, 9]` and `bias` `[2F]`; the output is `[B, h·w, F]`.
pub fn dwconv3x3_glu(
    x_shape: &[usize],
    w_shape: &[usize],
    bias_shape: &[usize],
    h: usize,
    width: usize,
    buffers: DwConvGluBuffers,
) -> Result<Plan<DwConvGluParams>> {
    const OP: &str = "dwconv3x3_glu";
    let &[b, n, c2] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, h·w, 2F], got {x_shape:?}"),
        ));
    };
    if h.checked_mul(width) != Some(n) || c2 % 2 != 0 {
        return Err(Error::shape(
            OP,
            format!("x {x_shape:?} is not [B, {h}·{width}, 2F]"),
        ));
    }
    if w_shape != [c2, 9] {
        return Err(Error::shape(
            OP,
            format!("weight {w_shape:?} is not [{c2}, 9]"),
        ));
    }
    if bias_shape != [c2] {
        return Err(Error::shape(
            OP,
            format!("bias {bias_shape:?} is not [{c2}]"),
        ));
    }
    if b > 65535 {
        return Err(Error::shape(
            OP,
            format!("B = {b} exceeds the grid limit 65535"),
        ));
    }
    let f = c2 / 2;
    let strips = h.div_ceil(ROWS);
    if strips > 65535 {
        return Err(Error::shape(
            OP,
            format!("h = {h} needs {strips} row strips, beyond the grid limit 65535"),
        ));
    }
    let empty = n == 0 || f == 0;
    Ok(Plan {
        geometry: Geometry {
            grid: [
                to_u32(OP, "channel tiles", f.div_ceil(THREADS))?,
                strips as u32,
                if empty { 0 } else { b as u32 },
            ],
            block: [THREADS as u32, 1, 1],
            shared_mem_bytes: 0,
        },
        params: DwConvGluParams {
            out: buffers.out,
            x: buffers.x,
            w: buffers.w,
            bias: buffers.bias,
            h: to_u32(OP, "h", h)?,
            width: to_u32(OP, "w", width)?,
            f: to_u32(OP, "F", f)?,
            rows: ROWS as u32,
        },
    })
}
