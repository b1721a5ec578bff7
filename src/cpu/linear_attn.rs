//! ReLU linear attention (docs/numerics/transformer.md §8). Per batch element and head: `KV = Σ_n v_n k_nᵀ`,
//! `ks = Σ_n k_n`, then `out_n = KV q_n / (ks·q_n + eps)`; eps is added after both contractions, as upstream does.
//! Both contractions are GEMMs over tiles of tokens (f32 accumulation, as diffusers' f32 path): the states with one
//! (batch, head) per core, the outputs with one block of tokens per core.

use crate::cpu::gemm::{gemm_serial, MatrixLayout};
use crate::cpu::norm::dims3;
use crate::cpu::parallel::{for_each_block, for_each_row, sequence_tiles};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Tokens per tile: a tile of ReLU'd keys or queries stays in cache.
const TOKEN_TILE: usize = 256;

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
    let relu = |x: &f32| x.max(0.0);
    // Per (batch, head): KV (d × d, row i = value feature) followed by ks (d), accumulated over tiles of tokens.
    let mut state = vec![0.0f32; b * heads * (d * d + d)];
    for_each_row(&mut state, d * d + d, |pair, s| {
        let (bi, h) = (pair / heads, pair % heads);
        let mut keys = vec![0.0f32; TOKEN_TILE * d];
        for n0 in (0..n).step_by(TOKEN_TILE) {
            let t = TOKEN_TILE.min(n - n0);
            let base = (bi * n + n0) * dim + h * d;
            for (row, kr) in keys.chunks_exact_mut(d).take(t).enumerate() {
                for (y, x) in kr.iter_mut().zip(&k.data()[base + row * dim..][..d]) {
                    *y = relu(x);
                }
            }
            let (kv, ks) = s.split_at_mut(d * d);
            gemm_serial(
                1.0,
                (&v.data()[base..], MatrixLayout::row_major(t, d, dim).t()),
                (&keys, MatrixLayout::row_major(t, d, d)),
                1.0,
                (kv, MatrixLayout::row_major(d, d, d)),
            );
            for kr in keys.chunks_exact(d).take(t) {
                for (a, &x) in ks.iter_mut().zip(kr) {
                    *a += x;
                }
            }
        }
    });
    let mut out = vec![0.0f32; b * n * dim];
    for_each_block(&mut out, dim, |first, block| {
        let rows = block.len() / dim;
        let mut queries = vec![0.0f32; TOKEN_TILE.min(rows) * d];
        for (r, t) in sequence_tiles(first, rows, n, TOKEN_TILE) {
            let row = first + r;
            let bi = row / n;
            for h in 0..heads {
                let s = &state[(bi * heads + h) * (d * d + d)..][..d * d + d];
                let (kv, ks) = s.split_at(d * d);
                for (i, qr) in queries.chunks_exact_mut(d).take(t).enumerate() {
                    for (y, x) in qr.iter_mut().zip(&q.data()[(row + i) * dim + h * d..][..d]) {
                        *y = relu(x);
                    }
                }
                let o = &mut block[r * dim + h * d..];
                gemm_serial(
                    1.0,
                    (&queries, MatrixLayout::row_major(t, d, d)),
                    (kv, MatrixLayout::row_major(d, d, d).t()),
                    0.0,
                    (o, MatrixLayout::row_major(t, d, dim)),
                );
                for (i, qr) in queries.chunks_exact(d).take(t).enumerate() {
                    let den: f32 = qr.iter().zip(ks).map(|(a, b)| a * b).sum();
                    for y in &mut o[i * dim..][..d] {
                        *y /= den + eps;
                    }
                }
            }
        }
    });
    HostTensor::new(vec![b, n, dim], out)
}
