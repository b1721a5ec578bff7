//! The CPU engine's GEMM (`sana::cpu::gemm`) against f64 loops, on fresh random values, at sizes around the edges of
//! packed GEMM blocking (micro-tiles of 8–16 rows and columns, depth blocks of ~200, row blocks split over the cores,
//! column blocks when the output is wider than tall)
//! and with the strided views its callers pass: row-major, transposed (a linear layer's `Wᵀ`), and an output with a
//! row stride wider than its columns.
//!
//! Bound: an f32 dot product of length k, accumulated in any order, is within γ_k·Σ|aᵢ·bᵢ| of the exact value,
//! γ_k = k·u / (1 − k·u), u = 2⁻²⁴ (Higham, *Accuracy and Stability*, §3.1); α (applied to A or to the sum) and the
//! β·c update add one rounding each, 2u of their magnitudes.
//!
//! `gemm_weight` (`c = a · wᵀ` against a weight kept as f32, bf16 or f16) is held to the same bound against the
//! weight's exact values, at sizes around its dot kernel's tiles (4 rows × 6 columns, depth in vectors of 16, depth
//! chunks of ≤ 4096, blocks of rows of w, the split over the cores by columns or by rows) and below the depth where it
//! hands over to `gemm`; and it must give the same bits for a weight in f32 as for its 16-bit values, and on one
//! core as on all.

mod emu_check;

use emu_check::Rng;
use half::{bf16, f16};
use sana::cpu::gemm::{gemm, gemm_widened_weight, MatrixLayout};
use sana::cpu::panel_gemm::{packed_index, packed_len, panel_gemm_serial};
use sana::cpu::weight_gemm::{gemm_weight, WeightRows};

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

/// A weight in the three formats it can be kept in: f32 values that bf16 and f16 hold exactly, so every format
/// multiplies the same numbers.
struct Weight {
    f32: Vec<f32>,
    bf16: Vec<bf16>,
    f16: Vec<f16>,
}

impl Weight {
    fn random(rng: &mut Rng, len: usize) -> Self {
        // bf16 keeps 8 significant bits and f16 11 with exponents down to 2⁻¹⁴: multiples of 2⁻⁷ in [-1, 1) are both.
        let f32: Vec<f32> = (0..len)
            .map(|_| (rng.uniform(-1.0, 1.0) * 128.0).round() / 128.0)
            .collect();
        let bf16 = f32.iter().map(|&v| bf16::from_f32(v)).collect();
        let f16 = f32.iter().map(|&v| f16::from_f32(v)).collect();
        Self { f32, bf16, f16 }
    }

    fn formats(&self) -> [WeightRows<'_>; 3] {
        [
            WeightRows::F32(&self.f32),
            WeightRows::Bf16(&self.bf16),
            WeightRows::F16(&self.f16),
        ]
    }
}

/// `a · wᵀ` through `gemm_weight` for `a` `m × k` with rows `k + 5` apart and `c` `m × n` with rows `n + 3` apart
/// (its gaps prefilled and checked untouched, its elements prefilled with NaN), checked against f64 loops; returns
/// `c`'s bits per format.
fn check_weight(m: usize, k: usize, n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng(seed);
    let la = MatrixLayout::row_major(m, k, k + 5);
    let a = values(&mut rng, m * (k + 5));
    let w = Weight::random(&mut rng, n * k);
    let lc = MatrixLayout::row_major(m, n, n + 3);
    let gamma = k as f64 * U / (1.0 - k as f64 * U);
    let mut bits = Vec::new();
    for format in w.formats() {
        let mut c: Vec<f32> = (0..m * (n + 3))
            .map(|i| if i % (n + 3) < n { f32::NAN } else { i as f32 })
            .collect();
        gemm_weight((&a, la), format, (&mut c, lc));
        for i in 0..m {
            for j in 0..n + 3 {
                let got = f64::from(c[i * (n + 3) + j]);
                if j >= n {
                    assert_eq!(
                        got,
                        (i * (n + 3) + j) as f64,
                        "{m}×{k}×{n}: gap ({i}, {j}) was written"
                    );
                    continue;
                }
                let (mut exact, mut magnitude) = (0.0, 0.0);
                for p in 0..k {
                    let t = f64::from(a[i * (k + 5) + p]) * f64::from(w.f32[j * k + p]);
                    exact += t;
                    magnitude += t.abs();
                }
                let bound = magnitude * gamma + 1e-30;
                assert!(
                    (got - exact).abs() <= bound,
                    "{m}×{k}×{n} ({format:?}): ({i}, {j}) = {got}, want {exact} ± {bound:e}",
                    format = std::mem::discriminant(&format)
                );
            }
        }
        bits.push(c.iter().map(|v| v.to_bits()).collect());
    }
    bits
}

#[test]
fn gemm_weight_matches_f64_loops_around_every_tile_edge() {
    for (seed, (m, k, n)) in [
        (1, 128, 1),
        (4, 128, 6),
        (5, 129, 7),
        (3, 143, 5),
        (9, 160, 13),
        (7, 300, 300),   // split by columns
        (300, 200, 13),  // split by rows
        (37, 4100, 50),  // two depth chunks, the second adding to the first
        (6, 1000, 2000), // several blocks of w's rows
        (3, 127, 4),     // below the dot kernel's depth: gemm
        (2, 17, 9),
    ]
    .into_iter()
    .enumerate()
    {
        let bits = check_weight(m, k, n, 1000 + seed as u64);
        assert!(
            bits.iter().all(|b| *b == bits[0]),
            "{m}×{k}×{n}: a weight in bf16 or f16 gave other bits than the same values in f32"
        );
    }
}

#[test]
fn gemm_weight_gives_the_same_bits_on_one_core_as_on_all() {
    let one_core = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    for (m, k, n, seed) in [(64, 256, 200, 7), (300, 200, 13, 8)] {
        let all = check_weight(m, k, n, seed);
        let one = one_core.install(|| check_weight(m, k, n, seed));
        assert!(
            all == one,
            "{m}×{k}×{n}: the split over the cores changed the result"
        );
    }
}

/// The path a 16-bit weight takes on a CPU without AVX-512 (this machine takes the dot kernel): the weight widened a
/// panel of columns at a time, each panel through `gemm`, against f64 loops; 2100 columns make several panels.
#[test]
fn gemm_widened_weight_matches_f64_loops_across_panels() {
    let (m, k, n) = (5, 200, 2100);
    let mut rng = Rng(77);
    let a = values(&mut rng, m * k);
    let w = Weight::random(&mut rng, n * k);
    let mut c = vec![f32::NAN; m * n];
    gemm_widened_weight(
        (&a, MatrixLayout::row_major(m, k, k)),
        |start, out: &mut [f32]| {
            for (o, v) in out.iter_mut().zip(&w.bf16[start..]) {
                *o = v.to_f32();
            }
        },
        (&mut c, MatrixLayout::row_major(m, n, n)),
    );
    let gamma = k as f64 * U / (1.0 - k as f64 * U);
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut magnitude) = (0.0, 0.0);
            for p in 0..k {
                let t = f64::from(a[i * k + p]) * f64::from(w.f32[j * k + p]);
                exact += t;
                magnitude += t.abs();
            }
            let got = f64::from(c[i * n + j]);
            assert!(
                (got - exact).abs() <= magnitude * gamma + 1e-30,
                "({i}, {j}) = {got}, want {exact}"
            );
        }
    }
}

/// `panel_gemm_serial` (a `b` packed in panels of 32 columns, multiplied as outer products) against f64 loops, at
/// sizes around its tiles (12 rows, a panel's two vectors of 16, a last panel of 1, 16, 17 or 31 columns) and depths
/// from 1 to past a cache line of rows, with strided `a` and `c`; the gaps of `c` stay unwritten.
#[test]
fn panel_gemm_matches_f64_loops_around_every_tile_edge() {
    for (m, k, n, seed) in [
        (1, 1, 1, 1),
        (12, 16, 32, 2),
        (13, 7, 33, 3),
        (11, 128, 48, 4),
        (25, 130, 64, 5),
        (36, 3, 17, 6),
        (5, 200, 95, 7),
    ] {
        let mut rng = Rng(seed);
        let a = values(&mut rng, m * (k + 2));
        let b = values(&mut rng, k * n);
        let mut packed = vec![0.0f32; packed_len(k, n)];
        for row in 0..k {
            for col in 0..n {
                packed[packed_index(k, row, col)] = b[row * n + col];
            }
        }
        let lc = MatrixLayout::row_major(m, n, n + 3);
        let mut c = vec![f32::NAN; m * (n + 3)];
        panel_gemm_serial(
            (&a, MatrixLayout::row_major(m, k, k + 2)),
            &packed,
            (&mut c, lc),
        );
        let gamma = k as f64 * U / (1.0 - k as f64 * U);
        for i in 0..m {
            for j in 0..n + 3 {
                let got = c[i * (n + 3) + j];
                if j >= n {
                    assert!(got.is_nan(), "{m}×{k}×{n}: gap ({i}, {j}) written");
                    continue;
                }
                let (mut exact, mut abs) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let t = f64::from(a[i * (k + 2) + p]) * f64::from(b[p * n + j]);
                    exact += t;
                    abs += t.abs();
                }
                let err = (f64::from(got) - exact).abs();
                assert!(
                    err <= gamma * abs,
                    "{m}×{k}×{n} ({i}, {j}): {got} vs {exact}, error {err:e}"
                );
            }
        }
    }
}
