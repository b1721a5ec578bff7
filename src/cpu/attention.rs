//! Reference softmax attention with an additive per-key bias (Sana's cross-attention, docs/numerics/transformer.md §9):
//! `softmax(q kᵀ/√d + bias) v` per head, max-subtracted, sums in f64.

use crate::cpu::norm::dims3;
use crate::cpu::parallel::for_each_row;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

pub fn attention(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    key_bias: &HostTensor,
    heads: usize,
) -> Result<HostTensor> {
    let (b, n, dim) = dims3(q, "attention (q)")?;
    let l = k.shape().get(1).copied().unwrap_or(0);
    k.expect_shape("attention (k)", &[Some(b), Some(l), Some(dim)])?;
    v.expect_shape("attention (v)", &[Some(b), Some(l), Some(dim)])?;
    key_bias.expect_shape("attention (key_bias)", &[Some(b), Some(l)])?;
    if heads == 0 || dim % heads != 0 {
        return Err(Error::shape(
            "attention",
            format!("width {dim} is not divisible into {heads} heads"),
        ));
    }
    let d = dim / heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0f32; b * n * dim];
    for_each_row(&mut out, dim, |row, o| {
        let bi = row / n;
        let bias = &key_bias.data()[bi * l..(bi + 1) * l];
        let mut scores = vec![0.0f64; l];
        for h in 0..heads {
            let qh = &q.data()[row * dim + h * d..][..d];
            for (m, s) in scores.iter_mut().enumerate() {
                let kh = &k.data()[(bi * l + m) * dim + h * d..][..d];
                let dot: f64 = qh
                    .iter()
                    .zip(kh)
                    .map(|(&a, &c)| f64::from(a) * f64::from(c))
                    .sum();
                *s = dot * scale + f64::from(bias[m]);
            }
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            // Value rows are contiguous: accumulate p·v row by row rather than column by column.
            let mut acc = vec![0.0f64; d];
            for (m, &p) in scores.iter().enumerate() {
                let vh = &v.data()[(bi * l + m) * dim + h * d..][..d];
                for (a, &x) in acc.iter_mut().zip(vh) {
                    *a += p * f64::from(x);
                }
            }
            for (y, a) in o[h * d..(h + 1) * d].iter_mut().zip(&acc) {
                *y = (a / total) as f32;
            }
        }
    });
    HostTensor::new(vec![b, n, dim], out)
}
