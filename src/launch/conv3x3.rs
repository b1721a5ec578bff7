//! Launch plan for kernels/conv3x3.cu: the full 3×3 convolution (stride 1 or 2, zero padding 1) as an implicit GEMM.

use super::conv::ConvBuffers;
use super::{to_u32, Bind, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};

/// Output pixels per block; mirrors `BM` in kernels/conv3x3.cu.
const TILE_M: usize = 64;
/// Output channels per block; mirrors `BN` in kernels/conv3x3.cu.
const TILE_N: usize = 64;
/// Threads per block (4 warps of 32 × 32 outputs); mirrors `THREADS` in kernels/conv3x3.cu.
const THREADS: u32 = 128;

/// Arguments of `conv3x3_*`; mirrors `Conv3x3Params` in kernels/conv3x3.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Conv3x3Params {
    /// `[B, oh·ow, Cout]`.
    pub out: DevicePtr,
    /// `[B, h·w, Cin]`.
    pub x: DevicePtr,
    /// `[Cout, Cin, 3, 3]`.
    pub w: DevicePtr,
    /// `[Cout]`, or 0 without bias.
    pub bias: DevicePtr,
    pub batch: u32,
    pub h: u32,
    pub width: u32,
    pub oh: u32,
    pub ow: u32,
    pub cin: u32,
    pub cout: u32,
    pub stride: u32,
}

const _: () = assert!(std::mem::size_of::<Conv3x3Params>() == 64);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for Conv3x3Params {}

impl Bind<Conv3x3Params> for ConvBuffers {
    fn bind(self, p: &mut Conv3x3Params) {
        (p.out, p.x, p.w, p.bias) = (self.out, self.x, self.w, self.bias);
    }
}

/// Plans the 3×3 convolution of `x` `[B, h·w, Cin]` with `w` `[Cout, Cin, 3, 3]` and an optional bias `[Cout]`
/// (`bias_shape` `None`) at `stride` 1 or 2; returns the plan, to [`Plan::bind`] to
/// its buffers, and the output shape `[B, oh·ow, Cout]`.
pub fn conv3x3(
    x_shape: &[usize],
    w_shape: &[usize],
    bias_shape: Option<&[usize]>,
    (h, width): (usize, usize),
    stride: usize,
) -> Result<(Plan<Conv3x3Params>, Vec<usize>)> {
    const OP: &str = "conv3x3";
    let &[b, n, cin] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, h·w, Cin], got {x_shape:?}"),
        ));
    };
    if h.checked_mul(width) != Some(n) || h == 0 || width == 0 || !(1..=2).contains(&stride) {
        return Err(Error::shape(
            OP,
            format!("x {x_shape:?} is not [B, {h}·{width}, Cin], or stride {stride} is not 1 or 2"),
        ));
    }
    let cout = w_shape.first().copied().unwrap_or(0);
    if w_shape != [cout, cin, 3, 3] {
        return Err(Error::shape(
            OP,
            format!("weight {w_shape:?} is not [Cout, {cin}, 3, 3]"),
        ));
    }
    if bias_shape.is_some_and(|s| s != [cout]) {
        return Err(Error::shape(
            OP,
            format!("bias {bias_shape:?} is not [{cout}]"),
        ));
    }
    let (oh, ow) = ((h - 1) / stride + 1, (width - 1) / stride + 1);
    let m = b * oh * ow;
    let col_tiles = cout.div_ceil(TILE_N);
    if col_tiles > 65535 || 9 * cin > u32::MAX as usize {
        return Err(Error::shape(
            OP,
            format!("Cout = {cout} or Cin = {cin} beyond the kernel's limits"),
        ));
    }
    let empty = m == 0 || cout == 0 || cin == 0;
    Ok((
        Plan {
            geometry: Geometry {
                grid: [
                    to_u32(OP, "pixel tiles", m.div_ceil(TILE_M))?,
                    if empty { 0 } else { col_tiles as u32 },
                    1,
                ],
                block: [THREADS, 1, 1],
                shared_mem_bytes: 0,
            },
            params: Conv3x3Params {
                out: 0,
                x: 0,
                w: 0,
                bias: 0,
                batch: to_u32(OP, "B", b)?,
                h: to_u32(OP, "h", h)?,
                width: to_u32(OP, "w", width)?,
                oh: oh as u32,
                ow: ow as u32,
                cin: to_u32(OP, "Cin", cin)?,
                cout: to_u32(OP, "Cout", cout)?,
                stride: stride as u32,
            },
        },
        vec![b, oh * ow, cout],
    ))
}
