//! Launch plans for kernels/conv.cu: the depthwise 3×3 convolution + bias + GLU(SiLU) of Sana's Mix-FFN, and the
//! DC-AE's depthwise k×k and grouped 1×1 convolutions.

use super::{to_u32, Bind, DevicePtr, Geometry, Plan};
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

/// Buffers of one convolution launch (this file's and kernels/conv3x3.cu's); `bias` 0 when there is none.
#[derive(Clone, Copy, Debug)]
pub struct ConvBuffers {
    pub out: DevicePtr,
    pub x: DevicePtr,
    pub w: DevicePtr,
    pub bias: DevicePtr,
}

impl Bind<GroupedLinearParams> for ConvBuffers {
    fn bind(self, p: &mut GroupedLinearParams) {
        (p.out, p.x, p.w) = (self.out, self.x, self.w);
    }
}

/// The depthwise kernels' grid: x = tiles of THREADS output channels, y = strips of `rows` image rows, z = batch;
/// an empty grid when there is nothing to compute.
fn strip_geometry(
    op: &'static str,
    (b, n, h): (usize, usize, usize),
    channels: usize,
    rows: usize,
) -> Result<Geometry> {
    let strips = h.div_ceil(rows);
    if b > 65535 || strips > 65535 {
        return Err(Error::shape(
            op,
            format!("B = {b} or h = {h} ({strips} row strips) exceeds the grid limit 65535"),
        ));
    }
    let empty = n == 0 || channels == 0;
    Ok(Geometry {
        grid: [
            to_u32(op, "channel tiles", channels.div_ceil(THREADS))?,
            strips as u32,
            if empty { 0 } else { b as u32 },
        ],
        block: [THREADS as u32, 1, 1],
        shared_mem_bytes: 0,
    })
}

/// Plans the depthwise 3×3 conv (zero padding 1) + bias + `value · SiLU(gate)` over `x` `[B, h·w, 2F]` seen as
/// `[B, h, w, 2F]`, with `w` `[2F, 9]` and `bias` `[2F]`; the output is `[B, h·w, F]`.
pub fn dwconv3x3_glu(
    x_shape: &[usize],
    w_shape: &[usize],
    bias_shape: &[usize],
    h: usize,
    width: usize,
    buffers: ConvBuffers,
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
    Ok(Plan {
        geometry: strip_geometry(OP, (b, n, h), f, ROWS)?,
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

/// Output rows per block of `depthwise_conv` (as `dwconv3x3_glu`).
const DEPTHWISE_ROWS: usize = 4;

/// Arguments of `depthwise_conv_*`; mirrors `DepthwiseConvParams` in kernels/conv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DepthwiseConvParams {
    /// `[B, h·w, C]`.
    pub out: DevicePtr,
    /// `[B, h·w, C]`.
    pub x: DevicePtr,
    /// `[C, k, k]`.
    pub w: DevicePtr,
    /// `[C]`, or 0 without bias.
    pub bias: DevicePtr,
    pub h: u32,
    pub width: u32,
    pub c: u32,
    pub k: u32,
    pub rows: u32,
    /// Always 0 (padding to a multiple of 8 bytes).
    pub reserved: u32,
}

const _: () = assert!(std::mem::size_of::<DepthwiseConvParams>() == 56);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for DepthwiseConvParams {}

/// Plans the depthwise k×k convolution (k odd, zero padding k/2) of `x` `[B, h·w, C]` with `w` `[C, k, k]` and an
/// optional bias `[C]` (`bias_shape` `None`); the output is `[B, h·w, C]`.
pub fn depthwise_conv(
    x_shape: &[usize],
    w_shape: &[usize],
    bias_shape: Option<&[usize]>,
    (h, width): (usize, usize),
    buffers: ConvBuffers,
) -> Result<Plan<DepthwiseConvParams>> {
    const OP: &str = "depthwise_conv";
    let &[b, n, c] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, h·w, C], got {x_shape:?}"),
        ));
    };
    let k = w_shape.get(1).copied().unwrap_or(0);
    if h.checked_mul(width) != Some(n) || w_shape != [c, k, k] || k % 2 == 0 {
        return Err(Error::shape(
            OP,
            format!("x {x_shape:?} with weight {w_shape:?}: need [B, {h}·{width}, C] and [C, k, k], k odd"),
        ));
    }
    if bias_shape.is_some_and(|s| s != [c]) {
        return Err(Error::shape(
            OP,
            format!("bias {bias_shape:?} is not [{c}]"),
        ));
    }
    Ok(Plan {
        geometry: strip_geometry(OP, (b, n, h), c, DEPTHWISE_ROWS)?,
        params: DepthwiseConvParams {
            out: buffers.out,
            x: buffers.x,
            w: buffers.w,
            bias: buffers.bias,
            h: to_u32(OP, "h", h)?,
            width: to_u32(OP, "w", width)?,
            c: to_u32(OP, "C", c)?,
            k: to_u32(OP, "k", k)?,
            rows: DEPTHWISE_ROWS as u32,
            reserved: 0,
        },
    })
}

/// Largest grid.x of a launch.
const MAX_GRID_X: usize = (1 << 31) - 1;

/// Rows (tokens) per block of `grouped_linear`: enough to reuse each thread's weight row from L1, few enough that
/// the DC-AE's stage 3 (16 384 tokens at 1024²) still makes 1024 row strips.
const GROUPED_ROWS: usize = 16;

/// Arguments of `grouped_linear_*`; mirrors `GroupedLinearParams` in kernels/conv.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GroupedLinearParams {
    /// `[R, Cout]`.
    pub out: DevicePtr,
    /// `[R, Cin]`.
    pub x: DevicePtr,
    /// `[Cout, Cin/G]`.
    pub w: DevicePtr,
    /// Rows R (all leading dimensions of x).
    pub rows_total: u64,
    pub cin: u32,
    pub cout: u32,
    pub group_in: u32,
    pub group_out: u32,
    pub rows: u32,
    /// Always 0 (padding to a multiple of 8 bytes).
    pub reserved: u32,
}

const _: () = assert!(std::mem::size_of::<GroupedLinearParams>() == 56);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for GroupedLinearParams {}

/// Plans the grouped 1×1 convolution of `x` `[.., Cin]` with `w` `[Cout, Cin/groups]`, no bias. Returns the plan,
/// to [`Plan::bind`] to its buffers (`bias` is not read), and the output shape `[.., Cout]`.
pub fn grouped_linear(
    x_shape: &[usize],
    w_shape: &[usize],
    groups: usize,
) -> Result<(Plan<GroupedLinearParams>, Vec<usize>)> {
    const OP: &str = "grouped_linear";
    let (&[cout, group_in], Some((&cin, lead))) = (w_shape, x_shape.split_last()) else {
        return Err(Error::shape(
            OP,
            format!("x {x_shape:?} must be [.., Cin] and weight {w_shape:?} [Cout, Cin/G]"),
        ));
    };
    if groups == 0 || cin != groups * group_in || cout % groups != 0 {
        return Err(Error::shape(
            OP,
            format!(
                "input {x_shape:?}, weight {w_shape:?} and {groups} groups do not fit together"
            ),
        ));
    }
    let rows: usize = lead.iter().product();
    // Every (row strip, channel tile) block on grid.x (kernels/conv.cu): the strips outgrow grid.y's 65535.
    let strips = rows.div_ceil(GROUPED_ROWS);
    let blocks = strips * cout.div_ceil(THREADS);
    if blocks > MAX_GRID_X {
        return Err(Error::shape(
            OP,
            format!("{rows} rows × {cout} channels need {blocks} blocks, over the grid limit {MAX_GRID_X}"),
        ));
    }
    let mut shape = x_shape.to_vec();
    shape[lead.len()] = cout;
    Ok((
        Plan {
            geometry: Geometry {
                grid: [blocks as u32, 1, 1],
                block: [THREADS as u32, 1, 1],
                shared_mem_bytes: 0,
            },
            params: GroupedLinearParams {
                out: 0,
                x: 0,
                w: 0,
                rows_total: rows as u64,
                cin: to_u32(OP, "Cin", cin)?,
                cout: to_u32(OP, "Cout", cout)?,
                group_in: to_u32(OP, "Cin/G", group_in)?,
                group_out: to_u32(OP, "Cout/G", cout / groups)?,
                rows: GROUPED_ROWS as u32,
                reserved: 0,
            },
        },
        shape,
    ))
}
