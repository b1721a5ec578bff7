//! Launch plans for kernels/elementwise.cu: AdaLN modulation rows, add, mul, activations, the gated residual and the
//! gated residual fused with the next LayerNorm-modulate.

use super::{to_u32, DevicePtr, Geometry, Plan};
use crate::error::{Error, Result};
use crate::launch::norm::cached_row_geometry;
use crate::vocabulary::Activation;

/// Threads per block of the 1-D elementwise kernels.
const THREADS: usize = 256;

/// Elements in one 16-byte `sana::Pack` of a storage type of `elem_bytes` (2: bf16/f16, 4: f32).
pub fn pack_len(op: &'static str, elem_bytes: usize) -> Result<usize> {
    match elem_bytes {
        2 | 4 => Ok(16 / elem_bytes),
        _ => Err(Error::shape(
            op,
            format!("storage elements of {elem_bytes} bytes (kernels take f32, bf16 or f16)"),
        )),
    }
}

/// True when every address is 16-byte aligned, so that kernels may use 128-bit loads and stores.
pub fn all_aligned(ptrs: &[DevicePtr]) -> bool {
    ptrs.iter().all(|p| p % 16 == 0)
}

/// The code of `act` in kernels/elementwise.cu (`ACT_*`).
pub fn act_code(act: Activation) -> u32 {
    match act {
        Activation::Identity => 0,
        Activation::Silu => 1,
        Activation::GeluTanh => 2,
        Activation::Relu => 3,
    }
}

/// A 1-D grid of `THREADS`-thread blocks covering `items` work items.
pub(crate) fn grid_1d(op: &'static str, items: usize) -> Result<Geometry> {
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

fn dims3(op: &'static str, what: &str, shape: &[usize]) -> Result<(usize, usize, usize)> {
    match *shape {
        [b, n, d] => Ok((b, n, d)),
        _ => Err(Error::shape(
            op,
            format!("{what} must be [B, N, D], got {shape:?}"),
        )),
    }
}

/// Checks a `[B, K, D]` modulation table against `x`'s `(B, D)` and that every `row` is one of its K rows; returns K.
fn table_rows(
    op: &'static str,
    shape: &[usize],
    (b, d): (usize, usize),
    rows: &[usize],
) -> Result<usize> {
    let &[mb, k, md] = shape else {
        return Err(Error::shape(
            op,
            format!("modulation must be [B, K, D], got {shape:?}"),
        ));
    };
    if (mb, md) != (b, d) {
        return Err(Error::shape(
            op,
            format!("modulation {shape:?} does not match [{b}, K, {d}]"),
        ));
    }
    if let Some(r) = rows.iter().find(|&&r| r >= k) {
        return Err(Error::shape(
            op,
            format!("row {r} out of a {k}-row modulation table"),
        ));
    }
    Ok(k)
}

/// Arguments of `modulation_{f32,bf16,f16}`; mirrors `ModulationParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ModulationParams {
    /// Output `[B, K, D]`.
    pub out: DevicePtr,
    /// `[K, D]`.
    pub table: DevicePtr,
    /// `[B, K·D]` or `[B, D]`.
    pub emb: DevicePtr,
    pub batch: u32,
    pub k: u32,
    pub d: u32,
    /// 1: `emb` is `[B, K·D]`; 0: `[B, D]` broadcast over the rows.
    pub per_row: u32,
}

const _: () = assert!(std::mem::size_of::<ModulationParams>() == 40);

/// Buffers of one `modulation` launch.
#[derive(Clone, Copy, Debug)]
pub struct ModulationBuffers {
    pub out: DevicePtr,
    pub table: DevicePtr,
    pub emb: DevicePtr,
}

/// Plans `table[None] + emb.reshape(B, K, D)` (or `emb` `[B, D]` broadcast); the output is `[B, K, D]`.
pub fn modulation(
    table_shape: &[usize],
    emb_shape: &[usize],
    buffers: ModulationBuffers,
) -> Result<Plan<ModulationParams>> {
    const OP: &str = "modulation";
    let &[k, d] = table_shape else {
        return Err(Error::shape(
            OP,
            format!("table must be [K, D], got {table_shape:?}"),
        ));
    };
    let &[b, width] = emb_shape else {
        return Err(Error::shape(
            OP,
            format!("emb must be [B, K·D] or [B, D], got {emb_shape:?}"),
        ));
    };
    let per_row = if width == k * d {
        true
    } else if width == d {
        false
    } else {
        return Err(Error::shape(
            OP,
            format!("emb width {width} is neither K·D = {} nor D = {d}", k * d),
        ));
    };
    let len = b
        .checked_mul(k * d)
        .filter(|&l| l <= u32::MAX as usize)
        .ok_or_else(|| Error::shape(OP, format!("B·K·D = {b}·{k}·{d} exceeds 2^32 − 1")))?;
    Ok(Plan {
        geometry: grid_1d(OP, len)?,
        params: ModulationParams {
            out: buffers.out,
            table: buffers.table,
            emb: buffers.emb,
            batch: to_u32(OP, "B", b)?,
            k: to_u32(OP, "K", k)?,
            d: to_u32(OP, "D", d)?,
            per_row: u32::from(per_row),
        },
    })
}

/// Arguments of `add_*`, `mul_*` and `activation_*`; mirrors `PointwiseParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PointwiseParams {
    pub y: DevicePtr,
    pub a: DevicePtr,
    /// Second operand of `add` and `mul`; 0 for `activation`.
    pub b: DevicePtr,
    pub len: u64,
    /// [`act_code`] of the activation; 0 for `add` and `mul`.
    pub act: u32,
    /// 1 when every buffer is 16-byte aligned (128-bit loads).
    pub aligned: u32,
}

const _: () = assert!(std::mem::size_of::<PointwiseParams>() == 40);

/// Buffers of one `add` or `mul` (or, with `b` = 0, `activation`) launch.
#[derive(Clone, Copy, Debug)]
pub struct PointwiseBuffers {
    pub y: DevicePtr,
    pub a: DevicePtr,
    pub b: DevicePtr,
}

fn pointwise(
    op: &'static str,
    len: usize,
    elem_bytes: usize,
    act: u32,
    aligned: bool,
    buffers: PointwiseBuffers,
) -> Result<Plan<PointwiseParams>> {
    let packs = len.div_ceil(pack_len(op, elem_bytes)?);
    Ok(Plan {
        geometry: grid_1d(op, packs)?,
        params: PointwiseParams {
            y: buffers.y,
            a: buffers.a,
            b: buffers.b,
            len: len as u64,
            act,
            aligned: u32::from(aligned),
        },
    })
}

/// The plan of one of the same-shape binary ops (`add`, `mul`).
pub type BinaryPlan =
    fn(&[usize], &[usize], usize, PointwiseBuffers) -> Result<Plan<PointwiseParams>>;

/// Plans `y = a + b` over same-shaped tensors of `elem_bytes`-byte elements: one 16-byte pack per thread.
pub fn add(
    a_shape: &[usize],
    b_shape: &[usize],
    elem_bytes: usize,
    buffers: PointwiseBuffers,
) -> Result<Plan<PointwiseParams>> {
    binary("add", a_shape, b_shape, elem_bytes, buffers)
}

/// Plans `y = a · b` over same-shaped tensors of `elem_bytes`-byte elements: one 16-byte pack per thread.
pub fn mul(
    a_shape: &[usize],
    b_shape: &[usize],
    elem_bytes: usize,
    buffers: PointwiseBuffers,
) -> Result<Plan<PointwiseParams>> {
    binary("mul", a_shape, b_shape, elem_bytes, buffers)
}

fn binary(
    op: &'static str,
    a_shape: &[usize],
    b_shape: &[usize],
    elem_bytes: usize,
    buffers: PointwiseBuffers,
) -> Result<Plan<PointwiseParams>> {
    if a_shape != b_shape {
        return Err(Error::shape(
            op,
            format!("shapes {a_shape:?} and {b_shape:?} differ"),
        ));
    }
    let aligned = all_aligned(&[buffers.y, buffers.a, buffers.b]);
    let len = a_shape.iter().product();
    pointwise(op, len, elem_bytes, 0, aligned, buffers)
}

/// Plans `y = act(a)` over `elem_bytes`-byte elements (`buffers.b` is ignored): one 16-byte pack per thread.
pub fn activation(
    shape: &[usize],
    act: Activation,
    elem_bytes: usize,
    buffers: PointwiseBuffers,
) -> Result<Plan<PointwiseParams>> {
    let aligned = all_aligned(&[buffers.y, buffers.a]);
    let buffers = PointwiseBuffers { b: 0, ..buffers };
    let len = shape.iter().product();
    pointwise(
        "activation",
        len,
        elem_bytes,
        act_code(act),
        aligned,
        buffers,
    )
}

/// Arguments of `gated_residual_*`; mirrors `GatedResidualParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GatedResidualParams {
    pub y: DevicePtr,
    pub x: DevicePtr,
    pub r: DevicePtr,
    pub modulation: DevicePtr,
    pub rows: u32,
    pub n: u32,
    pub d: u32,
    pub k: u32,
    pub gate_row: u32,
    /// 1 when every buffer is 16-byte aligned and D is a multiple of the pack, so no pack straddles two rows.
    pub aligned: u32,
}

const _: () = assert!(std::mem::size_of::<GatedResidualParams>() == 56);

/// Buffers of one `gated_residual` launch: `y = x + modulation[b, gate_row] · r`.
#[derive(Clone, Copy, Debug)]
pub struct GatedResidualBuffers {
    pub y: DevicePtr,
    pub x: DevicePtr,
    pub r: DevicePtr,
    pub modulation: DevicePtr,
}

/// Plans `y = x + m[b, gate_row] · r` for `x`, `r`: [B, N, D] and `m`: [B, K, D] of `elem_bytes`-byte elements.
pub fn gated_residual(
    x_shape: &[usize],
    r_shape: &[usize],
    modulation_shape: &[usize],
    gate_row: usize,
    elem_bytes: usize,
    buffers: GatedResidualBuffers,
) -> Result<Plan<GatedResidualParams>> {
    const OP: &str = "gated_residual";
    let (b, n, d) = dims3(OP, "x", x_shape)?;
    if r_shape != x_shape {
        return Err(Error::shape(
            OP,
            format!("branch {r_shape:?} does not match x {x_shape:?}"),
        ));
    }
    let k = table_rows(OP, modulation_shape, (b, d), &[gate_row])?;
    let pack = pack_len(OP, elem_bytes)?;
    let rows = b
        .checked_mul(n)
        .ok_or_else(|| Error::shape(OP, "B·N overflows"))?;
    let len = rows
        .checked_mul(d)
        .ok_or_else(|| Error::shape(OP, "B·N·D overflows"))?;
    let aligned =
        d % pack == 0 && all_aligned(&[buffers.y, buffers.x, buffers.r, buffers.modulation]);
    Ok(Plan {
        geometry: grid_1d(OP, len.div_ceil(pack))?,
        params: GatedResidualParams {
            y: buffers.y,
            x: buffers.x,
            r: buffers.r,
            modulation: buffers.modulation,
            rows: to_u32(OP, "B·N", rows)?,
            n: to_u32(OP, "N", n)?,
            d: to_u32(OP, "D", d)?,
            k: to_u32(OP, "K", k)?,
            gate_row: to_u32(OP, "gate_row", gate_row)?,
            aligned: u32::from(aligned),
        },
    })
}

/// Arguments of `gated_residual_layer_norm_modulate_*`; mirrors `ResidualNormParams` in kernels/elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ResidualNormParams {
    /// `x + gate · r`, `[B, N, D]`.
    pub x_out: DevicePtr,
    /// The modulated norm of `x_out`, `[B, N, D]`.
    pub z: DevicePtr,
    pub x: DevicePtr,
    pub r: DevicePtr,
    /// `[B, gate_k, D]`, or 0 for no gate (`x + r`).
    pub gate_modulation: DevicePtr,
    /// `[B, k, D]`.
    pub modulation: DevicePtr,
    pub n: u32,
    pub d: u32,
    pub gate_k: u32,
    pub gate_row: u32,
    pub k: u32,
    pub shift_row: u32,
    pub scale_row: u32,
    pub eps: f32,
}

const _: () = assert!(std::mem::size_of::<ResidualNormParams>() == 80);

// SAFETY (all four impls): plain old data, passed by value as the kernel's only argument.
unsafe impl cudarc::driver::DeviceRepr for ModulationParams {}
unsafe impl cudarc::driver::DeviceRepr for PointwiseParams {}
unsafe impl cudarc::driver::DeviceRepr for GatedResidualParams {}
unsafe impl cudarc::driver::DeviceRepr for ResidualNormParams {}

/// Buffers of one fused residual + norm launch; `gate_modulation` is 0 when there is no gate.
#[derive(Clone, Copy, Debug)]
pub struct ResidualNormBuffers {
    pub x_out: DevicePtr,
    pub z: DevicePtr,
    pub x: DevicePtr,
    pub r: DevicePtr,
    pub gate_modulation: DevicePtr,
    pub modulation: DevicePtr,
}

/// The gate of a fused residual: the shape of its `[B, K_g, D]` table and the row used.
#[derive(Clone, Copy, Debug)]
pub struct Gate<'a> {
    pub modulation_shape: &'a [usize],
    pub row: usize,
}

/// Plans `x' = x + m_g[b, gate.row] · r` (`x + r` without a gate) and `z = LayerNorm(x')·(1 + m[b, scale_row]) +
/// m[b, shift_row]` in one pass: one block per row, min(256, D rounded up to 32) threads, the row of `x'` cached in
/// f32 shared memory (so D ≤ [`crate::launch::norm::LAYER_NORM_MAX_D`]).
#[allow(clippy::too_many_arguments)]
pub fn gated_residual_layer_norm_modulate(
    x_shape: &[usize],
    r_shape: &[usize],
    gate: Option<Gate<'_>>,
    modulation_shape: &[usize],
    shift_row: usize,
    scale_row: usize,
    eps: f32,
    buffers: ResidualNormBuffers,
) -> Result<Plan<ResidualNormParams>> {
    const OP: &str = "gated_residual_layer_norm_modulate";
    let (b, n, d) = dims3(OP, "x", x_shape)?;
    if r_shape != x_shape {
        return Err(Error::shape(
            OP,
            format!("branch {r_shape:?} does not match x {x_shape:?}"),
        ));
    }
    let k = table_rows(OP, modulation_shape, (b, d), &[shift_row, scale_row])?;
    let (gate_k, gate_row, gate_ptr) = match gate {
        Some(g) => (
            table_rows(OP, g.modulation_shape, (b, d), &[g.row])?,
            g.row,
            buffers.gate_modulation,
        ),
        None => (0, 0, 0),
    };
    Ok(Plan {
        geometry: cached_row_geometry(OP, b * n, d)?,
        params: ResidualNormParams {
            x_out: buffers.x_out,
            z: buffers.z,
            x: buffers.x,
            r: buffers.r,
            gate_modulation: gate_ptr,
            modulation: buffers.modulation,
            n: to_u32(OP, "N", n)?,
            d: to_u32(OP, "D", d)?,
            gate_k: to_u32(OP, "gate K", gate_k)?,
            gate_row: to_u32(OP, "gate_row", gate_row)?,
            k: to_u32(OP, "K", k)?,
            shift_row: to_u32(OP, "shift_row", shift_row)?,
            scale_row: to_u32(OP, "scale_row", scale_row)?,
            eps,
        },
    })
}
