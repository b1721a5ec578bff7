//! Softmax attention with an additive per-key bias (Sana's cross-attention, docs/numerics/transformer.md §9):
//! `softmax(q kᵀ/√d + bias) v` per head, max-subtracted. Tiles of queries per core, each head's two products as
//! GEMMs on the tile ([`gemm_serial`]), so the scores are never `[N, L]` at once; f32 accumulation as PyTorch's.

use crate::cpu::exp::exp;
use crate::cpu::gemm::{gemm_serial, MatrixLayout};
use crate::cpu::norm::dims3;
use crate::cpu::parallel::{for_each_block, sequence_tiles};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// A tile's scores (`tile × L` floats) stay within this many bytes, in a core's L2 with the packed keys.
const SCORES_BYTES: usize = 256 << 10;

/// Query rows per tile: as many as keep the scores in [`SCORES_BYTES`], between 64 and 256. Each tile packs every
/// head's keys and values afresh, so taller tiles pack them less often (at 64 rows over 300 keys the packing cost about
/// as much as the products).
fn query_tile(keys: usize) -> usize {
    (SCORES_BYTES / (4 * keys.max(1))).clamp(64, 256)
}

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
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; b * n * dim];
    if l == 0 {
        return HostTensor::new(vec![b, n, dim], out);
    }
    for_each_block(&mut out, dim, |first, block| {
        let rows = block.len() / dim;
        let tile = query_tile(l);
        let mut scores = vec![0.0f32; tile.min(rows) * l];
        for (r, t) in sequence_tiles(first, rows, n, tile) {
            let row = first + r;
            let bi = row / n;
            let bias = &key_bias.data()[bi * l..][..l];
            let keys = bi * l * dim;
            let s = &mut scores[..t * l];
            for h in 0..heads {
                gemm_serial(
                    scale,
                    (
                        &q.data()[row * dim + h * d..],
                        MatrixLayout::row_major(t, d, dim),
                    ),
                    (
                        &k.data()[keys + h * d..],
                        MatrixLayout::row_major(l, d, dim).t(),
                    ),
                    0.0,
                    (s, MatrixLayout::row_major(t, l, l)),
                );
                for scores in s.chunks_exact_mut(l) {
                    for (x, &bias) in scores.iter_mut().zip(bias) {
                        *x += bias;
                    }
                    softmax(scores);
                }
                gemm_serial(
                    1.0,
                    (s, MatrixLayout::row_major(t, l, l)),
                    (
                        &v.data()[keys + h * d..],
                        MatrixLayout::row_major(l, d, dim),
                    ),
                    0.0,
                    (
                        &mut block[r * dim + h * d..],
                        MatrixLayout::row_major(t, d, dim),
                    ),
                );
            }
        }
    });
    HostTensor::new(vec![b, n, dim], out)
}

/// Replaces a row of scores by its softmax, max-subtracted; the sum in f64 (rows can be thousands of keys long). The
/// max and the sum run in independent lanes and the exponentials in their own pass, so each loop vectorises (one
/// serial chain of f64 adds held the exponentials back); the lanes' order changes the f64 sum by ~1e-16 at most.
pub fn softmax(scores: &mut [f32]) {
    const LANES: usize = 8;
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let chunks = scores.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in maxes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    let max = rest
        .iter()
        .chain(&maxes)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for x in scores.iter_mut() {
        *x = exp(*x - max);
    }
    let mut sums = [0.0f64; LANES];
    let chunks = scores.chunks_exact(LANES);
    let rest: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    for chunk in chunks {
        for (s, &x) in sums.iter_mut().zip(chunk) {
            *s += f64::from(x);
        }
    }
    let inv = (1.0 / (sums.iter().sum::<f64>() + rest)) as f32;
    for x in scores.iter_mut() {
        *x *= inv;
    }
}
