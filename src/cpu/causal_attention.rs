//! Reference causal softmax self-attention as transformers' eager Gemma-2 path computes it
//! (docs/numerics/text-encoder.md §9.4, §10): grouped-query heads, `scale · q·k`, optional soft-cap `c·tanh(s/c)`, then
//! causal, key-padding and sliding-window masks, softmax over the keys left. Tiles of queries per core, each head's
//! two products as GEMMs on the tile (f32 accumulation, as PyTorch's); the scale and soft-cap steps in f32 after the
//! product, as PyTorch rounds them; softmax sums in f64.
//!
//! A query with no key left (only possible when key 0 is padding) gets the mean of all values: eager adds
//! `finfo(f32).min` to masked scores, which absorbs every score, so softmax is uniform over all keys.

use crate::cpu::attention::softmax;
use crate::cpu::gemm::{gemm_serial, MatrixLayout};
use crate::cpu::norm::dims3;
use crate::cpu::parallel::{for_each_block, sequence_tiles};
use crate::cpu::tanh::tanh;
use crate::engine::CausalAttention;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Query rows per tile: a tile's scores (`QUERY_TILE × L`) stay in cache.
const QUERY_TILE: usize = 64;

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
    for_each_block(&mut out, qdim, |first, block| {
        let rows = block.len() / qdim;
        let mut scores = vec![0.0f32; QUERY_TILE.min(rows) * l];
        for (r, t) in sequence_tiles(first, rows, l, QUERY_TILE) {
            let row = first + r;
            let (bi, i0) = (row / l, row % l);
            let mask = &key_mask.data()[bi * l..][..l];
            let keys = bi * l * kvdim;
            // Causal: the tile's last query sees keys up to its own position, so the products stop there (the rest
            // would be masked to zero weight) — unless a query has no key at all, whose uniform fallback spans all.
            let attends = |i: usize, j: usize| j <= i && mask[j] != 0.0 && i - j < window;
            let stranded: Vec<bool> = (i0..i0 + t)
                .map(|i| !(0..=i).any(|j| attends(i, j)))
                .collect();
            let n = if stranded.contains(&true) { l } else { i0 + t };
            let s = &mut scores[..t * n];
            for h in 0..heads {
                let kvh = h / group;
                gemm_serial(
                    1.0,
                    (
                        &q.data()[row * qdim + h * d..],
                        MatrixLayout::row_major(t, d, qdim),
                    ),
                    (
                        &k.data()[keys + kvh * d..],
                        MatrixLayout::row_major(n, d, kvdim).t(),
                    ),
                    0.0,
                    (&mut *s, MatrixLayout::row_major(t, n, n)),
                );
                for (ti, scores) in s.chunks_exact_mut(n).enumerate() {
                    let i = i0 + ti;
                    if stranded[ti] {
                        scores.fill(1.0 / l as f32);
                        continue;
                    }
                    // Scale and soft-cap every score in one vectorised pass, then mask.
                    match p.softcap {
                        Some(cap) => scores
                            .iter_mut()
                            .for_each(|x| *x = tanh(*x * p.scale / cap) * cap),
                        None => scores.iter_mut().for_each(|x| *x *= p.scale),
                    }
                    for (j, x) in scores.iter_mut().enumerate() {
                        if !attends(i, j) {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                    softmax(scores);
                }
                gemm_serial(
                    1.0,
                    (s, MatrixLayout::row_major(t, n, n)),
                    (
                        &v.data()[keys + kvh * d..],
                        MatrixLayout::row_major(n, d, kvdim),
                    ),
                    0.0,
                    (
                        &mut block[r * qdim + h * d..],
                        MatrixLayout::row_major(t, d, qdim),
                    ),
                );
            }
        }
    });
    HostTensor::new(vec![b, l, qdim], out)
}
