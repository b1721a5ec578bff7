//! Reference norms: LayerNorm with AdaLN modulation (Sana blocks and final layer) and the diffusers RMSNorm
//! (caption norm, q/k norms). Statistics are accumulated in f64 so the reference is never the less precise side;
//! rows are spread over the cores.

use rayon::prelude::*;

use crate::cpu::parallel::for_each_row;
use crate::error::Result;
use crate::tensor::HostTensor;

/// `LayerNorm(x) · (1 + modulation[b, scale_row]) + modulation[b, shift_row]` over the last dimension, without affine
/// parameters, with the biased variance (docs/numerics/transformer.md §7).
/// `x`: [B, N, D]; `modulation`: [B, K, D] (the scale-shift table plus the timestep modulation, one row per chunk).
pub fn layer_norm_modulate(
    x: &HostTensor,
    modulation: &HostTensor,
    shift_row: usize,
    scale_row: usize,
    eps: f32,
) -> Result<HostTensor> {
    let (b, n, d) = dims3(x, "layer_norm_modulate")?;
    modulation.expect_shape(
        "layer_norm_modulate (modulation)",
        &[Some(b), None, Some(d)],
    )?;
    let k = modulation.shape()[1];
    if shift_row >= k || scale_row >= k {
        return Err(crate::Error::shape(
            "layer_norm_modulate",
            format!("rows {shift_row}/{scale_row} out of a {k}-row modulation table"),
        ));
    }
    let mut out = vec![0.0f32; x.len()];
    let (shift, scale) = (
        Rows::of(modulation, shift_row),
        Rows::of(modulation, scale_row),
    );
    for_each_row(&mut out, d, |row, o| {
        let bi = row / n.max(1);
        normalize_modulate(
            &x.data()[row * d..][..d],
            o,
            (shift.at(bi), scale.at(bi)),
            eps,
        );
    });
    HostTensor::new(x.shape().to_vec(), out)
}

/// `x' = x + modulation[b, gate_row] · r` (`x + r` without a gate), then [`layer_norm_modulate`] of `x'`, row by row
/// in one pass (each row normalised while it is still in L1): the Sana block's residual fused with the next norm.
/// The same arithmetic as the two ops one after the other, so the same bits.
pub fn residual_layer_norm_modulate(
    x: &HostTensor,
    r: &HostTensor,
    gate: Option<(&HostTensor, usize)>,
    modulation: &HostTensor,
    (shift_row, scale_row): (usize, usize),
    eps: f32,
) -> Result<(HostTensor, HostTensor)> {
    let (b, n, d) = dims3(x, "residual_layer_norm_modulate")?;
    r.expect_shape(
        "residual_layer_norm_modulate (r)",
        &[Some(b), Some(n), Some(d)],
    )?;
    modulation.expect_shape(
        "residual_layer_norm_modulate (modulation)",
        &[Some(b), None, Some(d)],
    )?;
    let k = modulation.shape()[1];
    if let Some((g, row)) = gate {
        g.expect_shape(
            "residual_layer_norm_modulate (gate)",
            &[Some(b), None, Some(d)],
        )?;
        if row >= g.shape()[1] {
            return Err(crate::Error::shape(
                "residual_layer_norm_modulate",
                format!("gate row {row} out of a {}-row table", g.shape()[1]),
            ));
        }
    }
    if shift_row >= k || scale_row >= k {
        return Err(crate::Error::shape(
            "residual_layer_norm_modulate",
            format!("rows {shift_row}/{scale_row} out of a {k}-row modulation table"),
        ));
    }
    let (shift, scale) = (
        Rows::of(modulation, shift_row),
        Rows::of(modulation, scale_row),
    );
    let gate = gate.map(|(g, row)| Rows::of(g, row));
    let (mut sum, mut z) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
    if d > 0 {
        sum.par_chunks_mut(d)
            .zip(z.par_chunks_mut(d))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, (s, z))| {
                let bi = row / n.max(1);
                let (xs, rs) = (&x.data()[row * d..][..d], &r.data()[row * d..][..d]);
                match &gate {
                    Some(g) => {
                        for (((s, &x), &r), &g) in s.iter_mut().zip(xs).zip(rs).zip(g.at(bi)) {
                            *s = x + g * r;
                        }
                    }
                    None => {
                        for ((s, &x), &r) in s.iter_mut().zip(xs).zip(rs) {
                            *s = x + r;
                        }
                    }
                }
                normalize_modulate(s, z, (shift.at(bi), scale.at(bi)), eps);
            });
    }
    Ok((
        HostTensor::new(x.shape().to_vec(), sum)?,
        HostTensor::new(x.shape().to_vec(), z)?,
    ))
}

/// Rows per task of a row-parallel loop: enough that scheduling stays a small part of a row's work.
const ROWS_PER_TASK: usize = 16;

/// One row of a `[B, K, D]` table per batch element.
struct Rows<'a> {
    data: &'a [f32],
    k: usize,
    d: usize,
    row: usize,
}

impl<'a> Rows<'a> {
    fn of(table: &'a HostTensor, row: usize) -> Self {
        let (k, d) = (table.shape()[1], table.shape()[2]);
        Self {
            data: table.data(),
            k,
            d,
            row,
        }
    }

    fn at(&self, bi: usize) -> &'a [f32] {
        &self.data[(bi * self.k + self.row) * self.d..][..self.d]
    }
}

/// `LayerNorm(xs) · (1 + scale) + shift` into `out`.
fn normalize_modulate(xs: &[f32], out: &mut [f32], (shift, scale): (&[f32], &[f32]), eps: f32) {
    let (mean, rstd) = mean_rstd(xs, eps);
    for (((o, &x), &sc), &sh) in out.iter_mut().zip(xs).zip(scale).zip(shift) {
        let z = (x - mean) * rstd;
        *o = z * (1.0 + sc) + sh;
    }
}

/// The diffusers `RMSNorm` over the last dimension: `x · rsqrt(mean(x²) + eps) · weight + bias` (no `1 + w`, unlike
/// Gemma; the bias only where the module has one, as the DC-AE's channel norms).
pub fn rms_norm(
    x: &HostTensor,
    weight: &HostTensor,
    bias: Option<&HostTensor>,
    eps: f32,
) -> Result<HostTensor> {
    let d = x.last_dim();
    weight.expect_shape("rms_norm (weight)", &[Some(d)])?;
    if let Some(b) = bias {
        b.expect_shape("rms_norm (bias)", &[Some(d)])?;
    }
    let mut out = vec![0.0f32; x.len()];
    for_each_row(&mut out, d, |row, os| {
        let xs = &x.data()[row * d..][..d];
        let ms = xs.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / d as f64;
        let r = (1.0 / (ms + f64::from(eps)).sqrt()) as f32;
        for ((o, &v), &w) in os.iter_mut().zip(xs).zip(weight.data()) {
            *o = v * r * w;
        }
        if let Some(b) = bias {
            for (o, &bj) in os.iter_mut().zip(b.data()) {
                *o += bj;
            }
        }
    });
    HostTensor::new(x.shape().to_vec(), out)
}

/// Gemma's RMSNorm (docs/numerics/text-encoder.md §9.2): `x · rsqrt(mean(x²) + eps) · (1 + weight)`, the weight stored
/// as an offset from 1. In f32 this is `rms_norm` with the weight `1 + w` (transformers also forms `1 + w` in f32
/// first).
pub fn rms_norm_plus_one(x: &HostTensor, weight: &HostTensor, eps: f32) -> Result<HostTensor> {
    let one_plus = weight.data().iter().map(|&w| 1.0 + w).collect();
    rms_norm(
        x,
        &HostTensor::new(weight.shape().to_vec(), one_plus)?,
        None,
        eps,
    )
}

fn mean_rstd(xs: &[f32], eps: f32) -> (f32, f32) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = xs
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (var + f64::from(eps)).sqrt()) as f32)
}

pub(crate) fn dims3(x: &HostTensor, op: &'static str) -> Result<(usize, usize, usize)> {
    x.expect_shape(op, &[None, None, None])?;
    Ok((x.shape()[0], x.shape()[1], x.shape()[2]))
}
