//! Reference ReLU linear attention (docs/numerics/transformer.md §8). Per batch element and head: `KV = Σ_n v_n k_nᵀ`,
//! `ks = Σ_n k_n`, then `out_n = KV q_n / (ks·q_n + eps)`. Sums in f64, so the reference is never the less precise
//! side of a comparison; eps is added after both contractions, as upstream does.

use crate::cpu::norm::dims3;
use crate::cpu::parallel::for_each_row;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

pub fn linear_attention(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    heads: usize,
    eps: f32,
) -> Result<HostTensor> {
    let (b, n, dim) = dims3(q, "linear_attention (q)")?;
    k.expect_shape("linear_attention (k)", &[Some(b), Some(n), Some(dim)])?;
    v.expect_shape("linear_attention (v)", &[Some(b), Some(n), Some(dim)])?;
    if heads == 0 || dim % heads != 0 {
        return Err(Error::shape(
            "linear_attention",
            format!("width {dim} is not divisible into {heads} heads"),
        ));
    }
    let d = dim / heads;
    let relu = |x: f32| f64::from(x.max(0.0));
    // Per (batch, head): KV (d × d, row i = value feature) followed by ks (d).
    let mut state = vec![0.0f64; b * heads * (d * d + d)];
    for bi in 0..b {
        for h in 0..heads {
            let s = &mut state[(bi * heads + h) * (d * d + d)..][..d * d + d];
            for ni in 0..n {
                let base = (bi * n + ni) * dim + h * d;
                let kr = &k.data()[base..base + d];
                let vr = &v.data()[base..base + d];
                for i in 0..d {
                    let vi = f64::from(vr[i]);
                    for j in 0..d {
                        s[i * d + j] += vi * relu(kr[j]);
                    }
                }
                for j in 0..d {
                    s[d * d + j] += relu(kr[j]);
                }
            }
        }
    }
    let mut out = vec![0.0f32; b * n * dim];
    for_each_row(&mut out, dim, |row, o| {
        let bi = row / n;
        let qr = &q.data()[row * dim..(row + 1) * dim];
        for h in 0..heads {
            let s = &state[(bi * heads + h) * (d * d + d)..][..d * d + d];
            let qh = &qr[h * d..(h + 1) * d];
            let den: f64 = (0..d).map(|j| s[d * d + j] * relu(qh[j])).sum();
            for i in 0..d {
                let num: f64 = (0..d).map(|j| s[i * d + j] * relu(qh[j])).sum();
                o[h * d + i] = (num / (den + f64::from(eps))) as f32;
            }
        }
    });
    HostTensor::new(vec![b, n, dim], out)
}
