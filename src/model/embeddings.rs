//! Host-side embeddings that are cheap and precision-sensitive: the sinusoidal timestep embedding and the 2-D
//! sin-cos position embedding of the 2K/4K models. Computed exactly as diffusers does (dtypes included), then
//! uploaded.

use crate::error::Result;
use crate::tensor::HostTensor;

/// diffusers `get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0)`
/// (docs/numerics/transformer.md §5.1): `[cos(t·f_k) …, sin(t·f_k) …]` with `f_k = exp(−ln(10000)·k / half)`, all in
/// f32 as PyTorch computes it.
pub fn timestep_sinusoid(t: &[f32], channels: usize) -> Result<HostTensor> {
    let half = channels / 2;
    let neg_log = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (neg_log * k as f32 / half as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(t.len() * channels);
    for &tv in t {
        out.extend(freqs.iter().map(|&f| (tv * f).cos()));
        out.extend(freqs.iter().map(|&f| (tv * f).sin()));
    }
    HostTensor::new(vec![t.len(), channels], out)
}

/// diffusers `get_2d_sincos_pos_embed` as `PatchEmbed` uses it for the 2K/4K models (docs/numerics/transformer.md
/// §4.2): `[P1(column) , P1(row)]` per token, coordinates `i / (h / base) / scale`, computed in f64 and rounded to f32.
pub fn sincos_position_embedding(
    dim: usize,
    h: usize,
    w: usize,
    base: usize,
    interpolation_scale: f64,
) -> Result<HostTensor> {
    let e = dim / 2;
    let omega: Vec<f64> = (0..e / 2)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / (e / 2) as f64))
        .collect();
    // diffusers builds the grid in float32 (dividing by Python floats rounded to f32) before the f64 sin/cos.
    let coord = |i: usize, n: usize| -> f64 {
        f64::from(i as f32 / (n as f64 / base as f64) as f32 / interpolation_scale as f32)
    };
    let mut out = Vec::with_capacity(h * w * dim);
    for i in 0..h {
        for j in 0..w {
            for p in [coord(j, w), coord(i, h)] {
                out.extend(omega.iter().map(|o| (p * o).sin() as f32));
                out.extend(omega.iter().map(|o| (p * o).cos() as f32));
            }
        }
    }
    HostTensor::new(vec![1, h * w, dim], out)
}
