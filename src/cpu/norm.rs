//! Reference norms: LayerNorm with AdaLN modulation (Sana blocks and final layer) and the diffusers RMSNorm
//! (caption norm, q/k norms). Statistics are accumulated in f64 so the reference is never the less precise side.

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
    for bi in 0..b {
        let m = &modulation.data()[bi * k * d..(bi + 1) * k * d];
        let shift = &m[shift_row * d..(shift_row + 1) * d];
        let scale = &m[scale_row * d..(scale_row + 1) * d];
        for ni in 0..n {
            let row = (bi * n + ni) * d;
            let xs = &x.data()[row..row + d];
            let (mean, rstd) = mean_rstd(xs, eps);
            for (j, o) in out[row..row + d].iter_mut().enumerate() {
                let z = (xs[j] - mean) * rstd;
                *o = z * (1.0 + scale[j]) + shift[j];
            }
        }
    }
    HostTensor::new(x.shape().to_vec(), out)
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
    for (xs, os) in x.data().chunks_exact(d).zip(out.chunks_exact_mut(d)) {
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
    }
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
