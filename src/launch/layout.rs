//! Launch plans for kernels/layout.cu: NCHW images ↔ channels-last tokens (a batched transpose), and the DC-AE's
//! channel/space rearrangements (one gather kernel).

use super::{to_u32, Bind, DevicePtr, Geometry, Plan};
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

/// The output and input of a one-input layout kernel (transpose, channel/space, group mean).
#[derive(Clone, Copy, Debug)]
pub struct PairBuffers {
    pub out: DevicePtr,
    pub x: DevicePtr,
}

impl PairBuffers {
    /// Null pointers (a plan's shape checks alone, in tests).
    pub const NONE: Self = Self { out: 0, x: 0 };
}

impl Bind<ChannelSpaceParams> for PairBuffers {
    fn bind(self, p: &mut ChannelSpaceParams) {
        (p.out, p.x) = (self.out, self.x);
    }
}

impl Bind<GroupMeanParams> for PairBuffers {
    fn bind(self, p: &mut GroupMeanParams) {
        (p.out, p.x) = (self.out, self.x);
    }
}

/// Largest grid.x of a launch (grid.y and grid.z stop at 65535).
const MAX_GRID_X: usize = (1 << 31) - 1;
/// Largest grid.y or grid.z of a launch.
const MAX_GRID_YZ: usize = 65_535;

/// `out[b, s, r] = x[b, r, s]` for `x` [B, R, S]: 32 × 32 tiles through shared memory, every tile of one batch
/// element on grid.x (row-tile-major, so consecutive blocks read along S), the batch on grid.y. Either side of the
/// matrix can be the long one — tokens_to_nchw's R = h·w, nchw_to_tokens's S = h·w — and grid.x holds 2³¹ − 1 tiles
/// (a 4096² image in any number of channels), where grid.y would stop at 65535 (1448² as rows).
fn transpose(
    op: &'static str,
    (b, r, s): (usize, usize, usize),
    buffers: PairBuffers,
) -> Result<Plan<TransposeParams>> {
    let tiles = r.div_ceil(TILE).checked_mul(s.div_ceil(TILE));
    let tiles = match tiles {
        Some(t) if t <= MAX_GRID_X && b <= MAX_GRID_YZ => t,
        _ => {
            return Err(Error::shape(
                op,
                format!(
                    "B = {b} over the grid limit {MAX_GRID_YZ}, or {r} × {s} over {MAX_GRID_X} tiles of {TILE}²"
                ),
            ))
        }
    };
    Ok(Plan {
        geometry: Geometry {
            grid: [tiles as u32, b as u32, 1],
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
pub fn nchw_to_tokens(x_shape: &[usize], buffers: PairBuffers) -> Result<Plan<TransposeParams>> {
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
    buffers: PairBuffers,
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

/// Arguments of `channel_space_*`; mirrors `ChannelSpaceParams` in kernels/layout.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ChannelSpaceParams {
    pub out: DevicePtr,
    pub x: DevicePtr,
    /// Output elements.
    pub total: u64,
    /// 0 repeat, 1 shuffle, 2 unshuffle.
    pub mode: u32,
    pub repeat: u32,
    pub h: u32,
    pub w: u32,
    /// Input channels.
    pub cx: u32,
    /// Output channels.
    pub cout: u32,
}

const _: () = assert!(std::mem::size_of::<ChannelSpaceParams>() == 48);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for ChannelSpaceParams {}

/// A channel/space rearrangement of tokens `[B, h·w, C]` (the modes of kernels/layout.cu `channel_space`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelSpace {
    /// `[B, N, C]` → `[B, N, C·r]`, each channel `r` times.
    Repeat(usize),
    /// `[B, h·w, 4C/r]` → `[B, 2h·2w, C]`: pixel shuffle of the channels repeated `r` times (1: pixel shuffle,
    /// 4: nearest upsampling, 2: the DC-AE up-block shortcut).
    Shuffle(usize),
    /// `[B, h·w, C]` → `[B, (h/2)·(w/2), 4C]`.
    Unshuffle,
}

/// Threads per block of the grid-stride gathers (`channel_space`, `split_qkv_groups`, `concat_channels`,
/// `channel_group_mean`).
const STRIDE_THREADS: u32 = 256;
/// Blocks at most; the kernels stride over the rest.
const STRIDE_MAX_BLOCKS: u64 = 65_535;

/// A 1-D grid-stride launch over `total` outputs.
fn stride_geometry(total: usize) -> Geometry {
    let blocks = (total as u64)
        .div_ceil(u64::from(STRIDE_THREADS))
        .min(STRIDE_MAX_BLOCKS);
    Geometry {
        grid: [blocks as u32, 1, 1],
        block: [STRIDE_THREADS, 1, 1],
        shared_mem_bytes: 0,
    }
}

/// Plans `op` on `x_shape` = [B, h·w, C]; returns the plan, to
/// [`Plan::bind`] to its buffers, and the output shape.
pub fn channel_space(
    x_shape: &[usize],
    (h, w): (usize, usize),
    op: ChannelSpace,
) -> Result<(Plan<ChannelSpaceParams>, Vec<usize>)> {
    const OP: &str = "channel_space";
    let &[b, n, c] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, h·w, C], got {x_shape:?}"),
        ));
    };
    let bad = |why: &str| Error::shape(OP, format!("{op:?} on {x_shape:?} over {h}×{w}: {why}"));
    if h.checked_mul(w) != Some(n) || c == 0 {
        return Err(bad("the grid does not match the tokens, or no channels"));
    }
    let (mode, repeat, shape) = match op {
        ChannelSpace::Repeat(r) if r > 0 => (0, r, vec![b, n, c * r]),
        ChannelSpace::Shuffle(r) if r > 0 && (c * r) % 4 == 0 => (1, r, vec![b, 4 * n, c * r / 4]),
        ChannelSpace::Unshuffle if h % 2 == 0 && w % 2 == 0 => (2, 1, vec![b, n / 4, 4 * c]),
        _ => {
            return Err(bad(
                "repeat 0, channels·r not a multiple of 4, or an odd grid",
            ))
        }
    };
    let total: usize = shape.iter().product();
    Ok((
        Plan {
            geometry: stride_geometry(total),
            params: ChannelSpaceParams {
                out: 0,
                x: 0,
                total: total as u64,
                mode,
                repeat: to_u32(OP, "repeat", repeat)?,
                h: to_u32(OP, "h", h)?,
                w: to_u32(OP, "w", w)?,
                cx: to_u32(OP, "C", c)?,
                cout: to_u32(OP, "output channels", shape[2])?,
            },
        },
        shape,
    ))
}

/// Arguments of `split_qkv_groups_*`; mirrors `SplitQkvParams` in kernels/layout.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SplitQkvParams {
    pub q: DevicePtr,
    pub k: DevicePtr,
    pub v: DevicePtr,
    /// `[B, N, G·3d]`.
    pub x: DevicePtr,
    /// Elements of each output.
    pub total: u64,
    /// Output channels `G·d`.
    pub c: u32,
    /// Group width `d`.
    pub d: u32,
}

const _: () = assert!(std::mem::size_of::<SplitQkvParams>() == 48);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for SplitQkvParams {}

/// Buffers of `split_qkv_groups`: the input `[B, N, G·3d]` and the outputs, each `[B, N, G·d]`.
#[derive(Clone, Copy, Debug)]
pub struct QkvBuffers {
    pub x: DevicePtr,
    pub q: DevicePtr,
    pub k: DevicePtr,
    pub v: DevicePtr,
}

impl Bind<SplitQkvParams> for QkvBuffers {
    fn bind(self, p: &mut SplitQkvParams) {
        (p.x, p.q, p.k, p.v) = (self.x, self.q, self.k, self.v);
    }
}

/// Plans the split of `x` `[B, N, G·3d]` (groups of `[query d | key d | value d]`) into q, k, v `[B, N, G·d]`;
/// returns the plan, to [`Plan::bind`] to its buffers, and the shape of each output.
pub fn split_qkv_groups(
    x_shape: &[usize],
    head_dim: usize,
) -> Result<(Plan<SplitQkvParams>, Vec<usize>)> {
    const OP: &str = "split_qkv_groups";
    let &[b, n, c3] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, N, G·3d], got {x_shape:?}"),
        ));
    };
    if head_dim == 0 || c3 % (3 * head_dim) != 0 {
        return Err(Error::shape(
            OP,
            format!("{c3} channels are not groups of 3·{head_dim}"),
        ));
    }
    let shape = vec![b, n, c3 / 3];
    let total = b * n * (c3 / 3);
    Ok((
        Plan {
            geometry: stride_geometry(total),
            params: SplitQkvParams {
                q: 0,
                k: 0,
                v: 0,
                x: 0,
                total: total as u64,
                c: to_u32(OP, "output channels", c3 / 3)?,
                d: to_u32(OP, "head_dim", head_dim)?,
            },
        },
        shape,
    ))
}

/// Arguments of `concat_channels_*`; mirrors `ConcatParams` in kernels/layout.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ConcatParams {
    /// `[B, N, Ca + Cb]`.
    pub out: DevicePtr,
    /// `[B, N, Ca]`.
    pub a: DevicePtr,
    /// `[B, N, Cb]`.
    pub b: DevicePtr,
    /// Output elements.
    pub total: u64,
    pub ca: u32,
    pub cb: u32,
}

const _: () = assert!(std::mem::size_of::<ConcatParams>() == 40);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for ConcatParams {}

/// Buffers of `concat_channels`.
#[derive(Clone, Copy, Debug)]
pub struct ConcatBuffers {
    pub out: DevicePtr,
    pub a: DevicePtr,
    pub b: DevicePtr,
}

impl Bind<ConcatParams> for ConcatBuffers {
    fn bind(self, p: &mut ConcatParams) {
        (p.out, p.a, p.b) = (self.out, self.a, self.b);
    }
}

/// Plans `[B, N, Ca]`, `[B, N, Cb]` → `[B, N, Ca + Cb]`; returns the plan, to
/// [`Plan::bind`] to its buffers, and the output shape.
pub fn concat_channels(
    a_shape: &[usize],
    b_shape: &[usize],
) -> Result<(Plan<ConcatParams>, Vec<usize>)> {
    const OP: &str = "concat_channels";
    let (&[bn, n, ca], &[bn2, n2, cb]) = (a_shape, b_shape) else {
        return Err(Error::shape(
            OP,
            format!("inputs must be [B, N, C], got {a_shape:?} and {b_shape:?}"),
        ));
    };
    if (bn, n) != (bn2, n2) || ca == 0 || cb == 0 {
        return Err(Error::shape(
            OP,
            format!("{a_shape:?} and {b_shape:?} differ in [B, N] or an input has no channels"),
        ));
    }
    let shape = vec![bn, n, ca + cb];
    let total = bn * n * (ca + cb);
    Ok((
        Plan {
            geometry: stride_geometry(total),
            params: ConcatParams {
                out: 0,
                a: 0,
                b: 0,
                total: total as u64,
                ca: to_u32(OP, "Ca", ca)?,
                cb: to_u32(OP, "Cb", cb)?,
            },
        },
        shape,
    ))
}

/// Arguments of `channel_group_mean_*`; mirrors `GroupMeanParams` in kernels/layout.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GroupMeanParams {
    /// `[B, N, C/g]`.
    pub out: DevicePtr,
    /// `[B, N, C]`.
    pub x: DevicePtr,
    /// Output elements.
    pub total: u64,
    /// Channels per group.
    pub g: u32,
    /// Always 0 (padding to a multiple of 8 bytes).
    pub reserved: u32,
}

const _: () = assert!(std::mem::size_of::<GroupMeanParams>() == 32);

// SAFETY: plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for GroupMeanParams {}

/// Plans the mean of each run of `g` consecutive channels, `[B, N, C]` → `[B, N, C/g]`; returns the plan (to
/// [`Plan::bind`]) and the
/// output shape.
pub fn channel_group_mean(
    x_shape: &[usize],
    g: usize,
) -> Result<(Plan<GroupMeanParams>, Vec<usize>)> {
    const OP: &str = "channel_group_mean";
    let &[b, n, c] = x_shape else {
        return Err(Error::shape(
            OP,
            format!("x must be [B, N, C], got {x_shape:?}"),
        ));
    };
    if g == 0 || c % g != 0 {
        return Err(Error::shape(
            OP,
            format!("{c} channels are not groups of {g}"),
        ));
    }
    let shape = vec![b, n, c / g];
    let total = b * n * (c / g);
    Ok((
        Plan {
            geometry: stride_geometry(total),
            params: GroupMeanParams {
                out: 0,
                x: 0,
                total: total as u64,
                g: to_u32(OP, "g", g)?,
                reserved: 0,
            },
        },
        shape,
    ))
}
