//! The CPU engine's attention ops (GEMMs on tiles of queries, f32 accumulation) against f64 loops written here, at
//! shapes that span several tiles, with three batch items so that a core's block of rows starts or ends inside one
//! (on 2 or 4 cores), on random inputs.
//!
//! Tolerances (U = 2⁻²⁴, f32 rounding), first order in U, doubled for second-order terms:
//! - cross-attention, output element `i` of a query with exact weights `p_m` and scores `s_m`: a score is a
//!   `d`-term f32 dot product, scaled, plus the bias: `ε_m = (d + 2)·U·(scale·Σ_c|q_c·k_mc| + |bias_m|)`; the
//!   max-subtraction and `exp` add `U·(|s_m| + |ŝ|) + 4U` relative to `p_m`; the normalisation 2U; so
//!   `|Δout_i| ≤ 2·(Σ_m p_m·(ε_m + U·(|s_m| + |ŝ|) + 6U)·|v_mi − out_i| + (L + 2)·U·Σ_m p_m·|v_mi|)`;
//! - linear attention, `out_i = num_i / (den + eps)` with `num_i = Σ_j KV_ij·q'_j`, `KV_ij = Σ_n v_ni·k'_nj`,
//!   `den = Σ_j ks_j·q'_j`: f32 sums of `N` then `d` terms, so `|Δnum_i| ≤ (N + d)·U·Σ_j Σ_n |v_ni|·k'_nj·q'_j`,
//!   `|Δden| ≤ (N + d)·U·den`, and `|Δout_i| ≤ 2·(|Δnum_i| + |out_i|·|Δden|) / den + U·|out_i|`.

mod common;

use common::Rng;
use sana::cpu;
use sana::HostTensor;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn at(t: &HostTensor, i: usize) -> f64 {
    f64::from(t.data()[i])
}

#[test]
fn cross_attention_matches_f64_loops_across_tiles_and_batch_items() {
    let (b, n, l, heads, d) = (3, 300, 37, 3, 16);
    let dim = heads * d;
    let mut rng = Rng::new(11);
    let (q, k, v) = (
        rng.tensor(&[b, n, dim]),
        rng.tensor(&[b, l, dim]),
        rng.tensor(&[b, l, dim]),
    );
    let mut bias = rng.tensor(&[b, l]);
    // A masked key per batch item, as diffusers' padding mask makes them.
    let mut data = bias.data().to_vec();
    data[5] = -10000.0;
    data[l + 30] = -10000.0;
    bias = HostTensor::new(vec![b, l], data).unwrap();
    let got = cpu::attention::attention(&q, &k, &v, &bias, heads).unwrap();
    let scale = 1.0 / (d as f64).sqrt();
    let mut worst = 0.0f64;
    for bi in 0..b {
        for ni in 0..n {
            for h in 0..heads {
                let row = (bi * n + ni) * dim + h * d;
                let (mut s, mut eps) = (vec![0.0; l], vec![0.0; l]);
                for m in 0..l {
                    let key = (bi * l + m) * dim + h * d;
                    let (mut dot, mut abs) = (0.0, 0.0);
                    for c in 0..d {
                        dot += at(&q, row + c) * at(&k, key + c);
                        abs += (at(&q, row + c) * at(&k, key + c)).abs();
                    }
                    let bm = at(&bias, bi * l + m);
                    s[m] = dot * scale + bm;
                    eps[m] = (d + 2) as f64 * U * (scale * abs + bm.abs());
                }
                let top = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = s.iter().map(|x| (x - top).exp()).sum();
                let p: Vec<f64> = s.iter().map(|x| (x - top).exp() / total).collect();
                for i in 0..d {
                    let value = |m: usize| at(&v, (bi * l + m) * dim + h * d + i);
                    let want: f64 = (0..l).map(|m| p[m] * value(m)).sum();
                    let bound = 2.0
                        * (0..l)
                            .map(|m| {
                                p[m] * (eps[m] + U * (s[m].abs() + top.abs()) + 6.0 * U)
                                    * (value(m) - want).abs()
                                    + (l + 2) as f64 * U * p[m] * value(m).abs()
                            })
                            .sum::<f64>();
                    let err = (at(&got, row + i) - want).abs();
                    assert!(
                        err <= bound,
                        "batch {bi} query {ni} head {h} [{i}]: |{} − {want}| = {err:e} > {bound:e}",
                        got.data()[row + i]
                    );
                    worst = worst.max(err / bound);
                }
            }
        }
    }
    assert!(worst > 0.0, "the f32 path rounds somewhere");
}

#[test]
fn linear_attention_matches_f64_loops_across_tiles_and_batch_items() {
    let (b, n, heads, d) = (3, 300, 2, 8);
    let dim = heads * d;
    let eps = 1e-15;
    let mut rng = Rng::new(12);
    let (q, k, v) = (
        rng.tensor(&[b, n, dim]),
        rng.tensor(&[b, n, dim]),
        rng.tensor(&[b, n, dim]),
    );
    let got = cpu::linear_attn::linear_attention(&q, &k, &v, heads, eps).unwrap();
    let relu = |x: f64| x.max(0.0);
    for bi in 0..b {
        for h in 0..heads {
            let idx = |ni: usize, c: usize| (bi * n + ni) * dim + h * d + c;
            let (mut kv, mut kv_abs, mut ks) = (vec![0.0; d * d], vec![0.0; d * d], vec![0.0; d]);
            for ni in 0..n {
                for i in 0..d {
                    for j in 0..d {
                        let term = at(&v, idx(ni, i)) * relu(at(&k, idx(ni, j)));
                        kv[i * d + j] += term;
                        kv_abs[i * d + j] += term.abs();
                    }
                }
                for (j, s) in ks.iter_mut().enumerate() {
                    *s += relu(at(&k, idx(ni, j)));
                }
            }
            for ni in 0..n {
                let qr: Vec<f64> = (0..d).map(|j| relu(at(&q, idx(ni, j)))).collect();
                let den: f64 = (0..d).map(|j| ks[j] * qr[j]).sum::<f64>() + f64::from(eps);
                let den_err = (n + d) as f64 * U * den;
                for i in 0..d {
                    let num: f64 = (0..d).map(|j| kv[i * d + j] * qr[j]).sum();
                    let num_err =
                        (n + d) as f64 * U * (0..d).map(|j| kv_abs[i * d + j] * qr[j]).sum::<f64>();
                    let want = num / den;
                    let bound = 2.0 * (num_err + want.abs() * den_err) / den + U * want.abs();
                    let err = (at(&got, idx(ni, i)) - want).abs();
                    assert!(
                        err <= bound,
                        "batch {bi} token {ni} head {h} [{i}]: |{} − {want}| = {err:e} > {bound:e}",
                        got.data()[idx(ni, i)]
                    );
                }
            }
        }
    }
}
