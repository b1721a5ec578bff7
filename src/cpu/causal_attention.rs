//! Reference causal softmax self-attention as transformers' eager Gemma-2 path computes it
//! (docs/numerics/text-encoder.md §9.4, §10): grouped-query heads, `scale · q·k`, optional soft-cap `c·tanh(s/c)`, then
//! causal, key-padding and sliding-window masks, softmax over the keys left. Dot products and softmax sums in f64; the
//! scale and soft-cap steps in f32, as PyTorch rounds them.
//!
//! A query with no key left (only possible when key 0 is padding) gets the mean of all values: eager adds
//! `finfo(f32).min` to masked scores, which absorbs every score, so softmax is uniform over all keys.

use crate::cpu::norm::dims3;
use crate::cpu::parallel::for_each_row;
use crate::engine::CausalAttention;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// `q`: [B, L, heads·d]; `k`, `v`: [B, L, kv_heads·d]; `key_mask`: [B, L], non-zero = attend. Out [B, L, heads·d].
pub fn causal_attention(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    key_mask: &HostTensor,
    p: &CausalAttention,
) -> Result<HostTensor> {
    let (b, l, qdim) = dims3(q, "causal_attention (q)")?;
    let (heads, kv_heads) = (p.heads, p.kv_heads);
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || qdim % heads != 0 {
        return Err(Error::shape(
            "causal_attention",
            format!(
                "width {qdim} cannot hold {heads} query heads sharing {kv_heads} key/value heads"
            ),
        ));
    }
    let d = qdim / heads;
    let kvdim = kv_heads * d;
    k.expect_shape("causal_attention (k)", &[Some(b), Some(l), Some(kvdim)])?;
    v.expect_shape("causal_attention (v)", &[Some(b), Some(l), Some(kvdim)])?;
    key_mask.expect_shape("causal_attention (key_mask)", &[Some(b), Some(l)])?;
    let group = heads / kv_heads;
    let window = p.window.unwrap_or(usize::MAX);
    let mut out = vec![0.0f32; b * l * qdim];
    for_each_row(&mut out, qdim, |row, o| {
        let (bi, i) = (row / l, row % l);
        let mask = &key_mask.data()[bi * l..][..l];
        let mut keys: Vec<usize> = (0..=i)
            .filter(|&j| mask[j] != 0.0 && i - j < window)
            .collect();
        let uniform = keys.is_empty();
        if uniform {
            keys = (0..l).collect();
        }
        for h in 0..heads {
            let kvh = h / group;
            let mut weights = vec![0.0f64; l];
            let qh = &q.data()[row * qdim + h * d..][..d];
            let mut max = 0.0f64;
            if !uniform {
                max = f64::NEG_INFINITY;
                for &j in &keys {
                    let kh = &k.data()[(bi * l + j) * kvdim + kvh * d..][..d];
                    let dot: f64 = qh
                        .iter()
                        .zip(kh)
                        .map(|(&a, &c)| f64::from(a) * f64::from(c))
                        .sum();
                    let mut s = dot as f32 * p.scale;
                    if let Some(cap) = p.softcap {
                        s = (s / cap).tanh() * cap;
                    }
                    weights[j] = f64::from(s);
                    max = max.max(weights[j]);
                }
            }
            let mut total = 0.0;
            for &j in &keys {
                weights[j] = (weights[j] - max).exp();
                total += weights[j];
            }
            let mut acc = vec![0.0f64; d];
            for &j in &keys {
                let value = &v.data()[(bi * l + j) * kvdim + kvh * d..][..d];
                for (a, &x) in acc.iter_mut().zip(value) {
                    *a += weights[j] * f64::from(x);
                }
            }
            for (y, a) in o[h * d..][..d].iter_mut().zip(acc) {
                *y = (a / total) as f32;
            }
        }
    });
    HostTensor::new(vec![b, l, qdim], out)
}
