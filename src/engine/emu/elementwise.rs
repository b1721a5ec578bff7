//! kernels/elementwise.cu through the emulator.

use super::{launch, Entry, Storage, StorageDtype};
use crate::engine::Activation;
use crate::error::{Error, Result};
use crate::launch::elementwise::{
    self as plan, Gate, GatedResidualBuffers, GatedResidualParams, ModulationBuffers,
    ModulationParams, PointwiseBuffers, PointwiseParams, ResidualNormBuffers, ResidualNormParams,
};
use crate::launch::Plan;
use crate::tensor::HostTensor;

emu_kernel!(fn modulation_entry(ModulationParams) = [
    sana_emu_modulation_f32, sana_emu_modulation_bf16, sana_emu_modulation_f16
]);
emu_kernel!(fn add_entry(PointwiseParams) = [
    sana_emu_add_f32, sana_emu_add_bf16, sana_emu_add_f16
]);
emu_kernel!(fn mul_entry(PointwiseParams) = [
    sana_emu_mul_f32, sana_emu_mul_bf16, sana_emu_mul_f16
]);
emu_kernel!(fn activation_entry(PointwiseParams) = [
    sana_emu_activation_f32, sana_emu_activation_bf16, sana_emu_activation_f16
]);
emu_kernel!(fn gated_residual_entry(GatedResidualParams) = [
    sana_emu_gated_residual_f32, sana_emu_gated_residual_bf16, sana_emu_gated_residual_f16
]);
emu_kernel!(fn residual_norm_entry(ResidualNormParams) = [
    sana_emu_gated_residual_layer_norm_modulate_f32,
    sana_emu_gated_residual_layer_norm_modulate_bf16,
    sana_emu_gated_residual_layer_norm_modulate_f16
]);

/// `table[None] + emb.reshape(B, K, D)` (or `emb` [B, D] broadcast over the rows) → [B, K, D], as
/// [`crate::cpu::elementwise::modulation`].
pub fn modulation(table: &HostTensor, emb: &HostTensor, dtype: StorageDtype) -> Result<HostTensor> {
    let ts = Storage::from_f32(dtype, table.data());
    let es = Storage::from_f32(dtype, emb.data());
    let &[k, d] = table.shape() else {
        return Err(Error::shape(
            "modulation",
            format!("table must be [K, D], got {:?}", table.shape()),
        ));
    };
    let b = emb.shape().first().copied().unwrap_or(0);
    let mut out = Storage::poisoned(dtype, b * k * d);
    let buffers = ModulationBuffers {
        out: out.ptr_mut(),
        table: ts.ptr(),
        emb: es.ptr(),
    };
    let plan = plan::modulation(table.shape(), emb.shape(), buffers)?;
    // SAFETY: the plan checked table = [K, D] and emb = [B, K·D] or [B, D]; out holds B·K·D elements; all buffers
    // outlive the call.
    unsafe { launch("modulation", modulation_entry(dtype), &plan) }?;
    HostTensor::new(vec![b, k, d], out.to_f32())
}

/// `a + b`, same shapes, as [`crate::cpu::elementwise::add`].
pub fn add(a: &HostTensor, b: &HostTensor, dtype: StorageDtype) -> Result<HostTensor> {
    binary("add", plan::add, add_entry(dtype), a, b, dtype)
}

/// `a · b`, same shapes, as [`crate::cpu::elementwise::mul`].
pub fn mul(a: &HostTensor, b: &HostTensor, dtype: StorageDtype) -> Result<HostTensor> {
    binary("mul", plan::mul, mul_entry(dtype), a, b, dtype)
}

type BinaryPlan = fn(&[usize], &[usize], usize, PointwiseBuffers) -> Result<Plan<PointwiseParams>>;

fn binary(
    kernel: &'static str,
    make_plan: BinaryPlan,
    entry: Entry<PointwiseParams>,
    a: &HostTensor,
    b: &HostTensor,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (as_, bs) = (
        Storage::from_f32(dtype, a.data()),
        Storage::from_f32(dtype, b.data()),
    );
    let mut ys = Storage::poisoned(dtype, a.len());
    let buffers = PointwiseBuffers {
        y: ys.ptr_mut(),
        a: as_.ptr(),
        b: bs.ptr(),
    };
    let plan = make_plan(a.shape(), b.shape(), dtype.size(), buffers)?;
    // SAFETY: the plan checked that a and b have the same shape; every buffer holds that many elements and
    // outlives the call.
    unsafe { launch(kernel, entry, &plan) }?;
    HostTensor::new(a.shape().to_vec(), ys.to_f32())
}

/// `act(x)` elementwise, as [`crate::cpu::elementwise::activation`].
pub fn activation(x: &HostTensor, act: Activation, dtype: StorageDtype) -> Result<HostTensor> {
    let xs = Storage::from_f32(dtype, x.data());
    let mut ys = Storage::poisoned(dtype, x.len());
    let buffers = PointwiseBuffers {
        y: ys.ptr_mut(),
        a: xs.ptr(),
        b: 0,
    };
    let plan = plan::activation(x.shape(), act, dtype.size(), buffers)?;
    // SAFETY: x and y hold product(shape) elements and outlive the call.
    unsafe { launch("activation", activation_entry(dtype), &plan) }?;
    HostTensor::new(x.shape().to_vec(), ys.to_f32())
}

/// `x + m[b, gate_row] · r`; `x`, `r` [B, N, D], `m` [B, K, D], as [`crate::cpu::elementwise::gated_residual`].
pub fn gated_residual(
    x: &HostTensor,
    r: &HostTensor,
    m: &HostTensor,
    gate_row: usize,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let (xs, rs, ms) = (
        Storage::from_f32(dtype, x.data()),
        Storage::from_f32(dtype, r.data()),
        Storage::from_f32(dtype, m.data()),
    );
    let mut ys = Storage::poisoned(dtype, x.len());
    let buffers = GatedResidualBuffers {
        y: ys.ptr_mut(),
        x: xs.ptr(),
        r: rs.ptr(),
        modulation: ms.ptr(),
    };
    let plan = plan::gated_residual(
        x.shape(),
        r.shape(),
        m.shape(),
        gate_row,
        dtype.size(),
        buffers,
    )?;
    // SAFETY: the plan checked x = r = [B, N, D] and m = [B, K, D] with gate_row < K; the buffers hold those sizes
    // and outlive the call.
    unsafe { launch("gated_residual", gated_residual_entry(dtype), &plan) }?;
    HostTensor::new(x.shape().to_vec(), ys.to_f32())
}

/// The fused residual + norm: `x' = x + gate_m[b, gate_row] · r` (with `gate` = `Some((gate_m, gate_row))`; `x + r`
/// with `None`) and `z = LayerNorm(x')·(1 + m[b, scale_row]) + m[b, shift_row]`. Returns `(x', z)`, equal to
/// [`gated_residual`] (or [`add`]) followed by [`super::layer_norm_modulate`].
pub fn gated_residual_layer_norm_modulate(
    x: &HostTensor,
    r: &HostTensor,
    gate: Option<(&HostTensor, usize)>,
    m: &HostTensor,
    (shift_row, scale_row): (usize, usize),
    eps: f32,
    dtype: StorageDtype,
) -> Result<(HostTensor, HostTensor)> {
    let (xs, rs, ms) = (
        Storage::from_f32(dtype, x.data()),
        Storage::from_f32(dtype, r.data()),
        Storage::from_f32(dtype, m.data()),
    );
    let gs = gate.map(|(g, _)| Storage::from_f32(dtype, g.data()));
    let mut x_out = Storage::poisoned(dtype, x.len());
    let mut z = Storage::poisoned(dtype, x.len());
    let buffers = ResidualNormBuffers {
        x_out: x_out.ptr_mut(),
        z: z.ptr_mut(),
        x: xs.ptr(),
        r: rs.ptr(),
        gate_modulation: gs.as_ref().map_or(0, Storage::ptr),
        modulation: ms.ptr(),
    };
    let plan = plan::gated_residual_layer_norm_modulate(
        x.shape(),
        r.shape(),
        gate.map(|(g, row)| Gate {
            modulation_shape: g.shape(),
            row,
        }),
        m.shape(),
        shift_row,
        scale_row,
        eps,
        buffers,
    )?;
    // SAFETY: the plan checked x = r = [B, N, D], m (and the gate table, when present) = [B, K, D] with every row
    // < K; x_out and z are fresh buffers of x's size; all buffers outlive the call.
    unsafe {
        launch(
            "gated_residual_layer_norm_modulate",
            residual_norm_entry(dtype),
            &plan,
        )
    }?;
    Ok((
        HostTensor::new(x.shape().to_vec(), x_out.to_f32())?,
        HostTensor::new(x.shape().to_vec(), z.to_f32())?,
    ))
}
