//! The CPU engine's GEMM (`sana::cpu::gemm`) against f64 loops, on fresh random values, at sizes around the edges of
//! packed GEMM blocking (micro-tiles of 8–16 rows and columns, depth blocks of ~200, row blocks split over the cores,
//! column blocks when the output is wider than tall)
//! and with the strided views its callers pass: row-major, transposed (a linear layer's `Wᵀ`), and an output with a
//! row stride wider than its columns.
//!
//! Bound: an f32 dot product of length k, accumulated in any order, is within γ_k·Σ|aᵢ·bᵢ| of the exact value,
//! γ_k = k·u / (1 − k·u), u = 2⁻²⁴ (Higham, *Accuracy and Stability*, §3.1); α (applied to A or to the sum) and the
//! β·c update add one rounding each, 2u of their magnitudes.

mod emu_check;

use emu_check::Rng;
use sana::cpu::gemm::{gemm, MatrixLayout};

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
}

/// A matrix of `rows × cols` random values in [-1, 1), row-major or stored transposed.
fn matrix(rng: &mut Rng, rows: usize, cols: usize, transposed: bool) -> (Vec<f32>, MatrixLayout) {
    let data = values(rng, rows * cols);
    let layout = if transposed {
        MatrixLayout::row_major(cols, rows, rows).t()
    } else {
        MatrixLayout::row_major(rows, cols, cols)
    };
    (data, layout)
}

fn at(data: &[f32], l: &MatrixLayout, i: usize, j: usize) -> f64 {
    f64::from(data[i * l.row_stride + j * l.col_stride])
}

fn check(m: usize, k: usize, n: usize, (ta, tb): (bool, bool), alpha: f32, beta: f32, seed: u64) {
    let mut rng = Rng(seed);
    let (a, la) = matrix(&mut rng, m, k, ta);
    let (b, lb) = matrix(&mut rng, k, n, tb);
    // C's rows 3 wider than its columns: the gap must stay as it was.
    let lc = MatrixLayout::row_major(m, n, n + 3);
    let mut c = values(&mut rng, m * (n + 3));
    if beta == 0.0 {
        // Never read with β = 0: stale NaNs must not leak into the result.
        c.iter_mut().for_each(|v| *v = f32::NAN);
    }
    let before = c.clone();
    gemm(alpha, (&a, la), (&b, lb), beta, (&mut c, lc));
    let gamma = k as f64 * U / (1.0 - k as f64 * U);
    for i in 0..m {
        for j in 0..n + 3 {
            let got = f64::from(c[i * (n + 3) + j]);
            let old = f64::from(before[i * (n + 3) + j]);
            if j >= n {
                assert!(
                    got.to_bits() == old.to_bits(),
                    "{m}×{k}×{n}: gap ({i}, {j}) was written"
                );
                continue;
            }
            let (mut exact, mut magnitude) = (0.0, 0.0);
            for p in 0..k {
                let t = at(&a, &la, i, p) * at(&b, &lb, p, j);
                exact += t;
                magnitude += t.abs();
            }
            let alpha = f64::from(alpha);
            let beta = f64::from(beta);
            let prior = if beta == 0.0 { 0.0 } else { beta * old };
            let want = alpha * exact + prior;
            let bound = alpha.abs() * magnitude * (gamma + 2.0 * U) + prior.abs() * 2.0 * U + 1e-30;
            assert!(
                (got - want).abs() <= bound,
                "{m}×{k}×{n} (a transposed {ta}, b transposed {tb}, α {alpha}, β {beta}): ({i}, {j}) = {got}, \
                 want {want} ± {bound:e}"
            );
        }
    }
}

#[test]
fn gemm_matches_f64_loops_around_every_block_edge() {
    let mut seed = 1;
    for (m, k, n) in [
        (1, 1, 1),
        (12, 192, 32),
        (13, 193, 33),
        (11, 191, 31),
        (145, 7, 65),
        (300, 450, 1100),
        (2, 1000, 3),
    ] {
        for transposes in [(false, false), (false, true), (true, false)] {
            for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (0.7, 0.5)] {
                check(m, k, n, transposes, alpha, beta, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn an_empty_depth_scales_c_by_beta() {
    check(5, 0, 7, (false, false), 1.0, 0.5, 99);
    check(5, 0, 7, (false, false), 1.0, 0.0, 100);
}
