//! kernels/conv.cu against the CPU reference `cpu::conv::dwconv3x3_glu` (and `depthwise_conv`, `grouped_linear`) on
//! inputs first rounded to the storage dtype; each check body runs on the emulation engine (f32, bf16, f16) and on
//! the CUDA engine (bf16, f16: `conv_on_cuda`).
//!
//! Tolerance, per output `out = u_v · SiLU(u_g)` with `U` = 2^-24: each pre-activation `u = bias + Σ 9 taps` is a
//! chain of 10 f32 roundings in both the kernel and the reference (the same order; the GPU may fuse them into FMAs),
//! so each is within `10U·A` of the exact value, `A = |bias| + Σ|w·x|`, i.e. the two within `20U·A`. SiLU adds its
//! evaluation error `8U·(|u_g| + |SiLU(u_g)|)` (tests/elementwise.rs) and has slope |SiLU'| ≤ 1.1; the product one
//! rounding:
//!   `|Δout| ≤ |SiLU(u_g)|·20U·A_v + |u_v|·(1.1·20U·A_g + 8U·(|u_g| + |SiLU(u_g)|)) + U·|out|`,
//! plus half an ulp of the storage dtype at the reference (0 for f32).
//!
//! `conv_tolerance_catches_wrong_kernels` shows that typical mistakes (value and gate swapped, the kernel flipped
//! or transposed, bias missing, h and w exchanged, the next channel's weights) fail this bound in bf16.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, assert_within, check_ptx, rounded, ulp, Rng, DTYPES, U};
use engine_check::{on_cuda, run_op, within};
use sana::cpu::conv as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::{Error, HostTensor};

fn dwconv3x3_glu<E: Engine>(
    e: &E,
    x: &HostTensor,
    w: &HostTensor,
    b: &HostTensor,
    h: usize,
    width: usize,
) -> sana::Result<HostTensor> {
    run_op(e, &[x, w, b], |t| {
        e.dwconv3x3_glu(&t[0], &t[1], &t[2], h, width)
    })
}

fn depthwise_conv<E: Engine>(
    e: &E,
    x: &HostTensor,
    w: &HostTensor,
    b: Option<&HostTensor>,
    h: usize,
    width: usize,
) -> sana::Result<HostTensor> {
    match b {
        Some(b) => run_op(e, &[x, w, b], |t| {
            e.depthwise_conv(&t[0], &t[1], Some(&t[2]), h, width)
        }),
        None => run_op(e, &[x, w], |t| {
            e.depthwise_conv(&t[0], &t[1], None, h, width)
        }),
    }
}

fn grouped_linear<E: Engine>(
    e: &E,
    x: &HostTensor,
    w: &HostTensor,
    groups: usize,
) -> sana::Result<HostTensor> {
    run_op(e, &[x, w], |t| e.grouped_linear(&t[0], &t[1], groups))
}

/// The conv checks on the CUDA engine (a GPU, or CI's software device).
#[test]
fn conv_on_cuda() {
    on_cuda("conv_on_cuda", |e, dtype| {
        check_dwconv3x3_glu(e, dtype);
        check_depthwise_conv(e, dtype);
        check_grouped_linear(e, dtype);
    });
}

struct Case {
    x: HostTensor,
    w: HostTensor,
    bias: HostTensor,
    h: usize,
    width: usize,
}

/// (B, h, w, F).
type Shape = (usize, usize, usize, usize);

fn random_case(rng: &mut Rng, (b, h, width, f): Shape, dtype: StorageDtype) -> Case {
    Case {
        x: rounded(&rng.tensor(&[b, h * width, 2 * f], -2.0, 2.0), dtype),
        w: rounded(&rng.tensor(&[2 * f, 9], -0.5, 0.5), dtype),
        bias: rounded(&rng.tensor(&[2 * f], -0.5, 0.5), dtype),
        h,
        width,
    }
}

/// Pre-activations `(u, A)` (value and |value| sums, f64) of channel `c` at pixel (i, j) of batch item `bi`.
fn pre_activation(case: &Case, bi: usize, i: usize, j: usize, c: usize) -> (f64, f64) {
    let c2 = case.x.shape()[2];
    let n = case.h * case.width;
    let bias = f64::from(case.bias.data()[c]);
    let (mut u, mut a) = (bias, bias.abs());
    for di in 0..3 {
        for dj in 0..3 {
            let (ii, jj) = ((i + di).wrapping_sub(1), (j + dj).wrapping_sub(1));
            if ii < case.h && jj < case.width {
                let t = f64::from(case.w.data()[c * 9 + di * 3 + dj])
                    * f64::from(case.x.data()[(bi * n + ii * case.width + jj) * c2 + c]);
                u += t;
                a += t.abs();
            }
        }
    }
    (u, a)
}

/// The per-element tolerance described in the file header.
fn tolerance(case: &Case, dtype: StorageDtype, want: &[f32]) -> Vec<f32> {
    let (b, n, c2) = emu_check::dims3(&case.x);
    let f = c2 / 2;
    let u = f64::from(U);
    let silu = |x: f64| x / (1.0 + (-x).exp());
    let mut tol = vec![0.0f32; b * n * f];
    for bi in 0..b {
        for p in 0..n {
            let (i, j) = (p / case.width, p % case.width);
            for c in 0..f {
                let (uv, av) = pre_activation(case, bi, i, j, c);
                let (ug, ag) = pre_activation(case, bi, i, j, c + f);
                let at = (bi * n + p) * f + c;
                let out = f64::from(want[at]);
                let err = silu(ug).abs() * 20.0 * u * av
                    + uv.abs() * (1.1 * 20.0 * u * ag + 8.0 * u * (ug.abs() + silu(ug).abs()))
                    + u * out.abs();
                tol[at] = 0.5 * ulp(dtype, want[at]) + err as f32;
            }
        }
    }
    tol
}

/// A 1×1 grid (every tap is padding but the centre); a non-square 3×5 grid; 5 rows (a partial strip of 4) with two
/// channel tiles (F = 130, 128 threads per block); 7×4 with F = 9; Sana-0.6B's F = 2880 and the 1.6B's 5600.
const SHAPES: [Shape; 6] = [
    (1, 1, 1, 3),
    (2, 3, 5, 40),
    (1, 5, 3, 130),
    (2, 7, 4, 9),
    (1, 4, 4, 2880),
    (1, 2, 3, 5600),
];

fn check_dwconv3x3_glu<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(41);
    let mut worst = 0.0f32;
    for shape in SHAPES {
        let c = random_case(&mut rng, shape, dtype);
        let got = dwconv3x3_glu(e, &c.x, &c.w, &c.bias, c.h, c.width).expect("engine");
        let want = cpu::dwconv3x3_glu(&c.x, &c.w, &c.bias, c.h, c.width).expect("cpu");
        let tol = tolerance(&c, dtype, want.data());
        worst = worst.max(within(e, dtype, shape, &got, &want, |i| tol[i]));
    }
    eprintln!(
        "{} conv {dtype:?}: worst error {worst:.3} of the tolerance",
        e.name()
    );
}

#[test]
fn conv_emu_matches_cpu() {
    for dtype in DTYPES {
        check_dwconv3x3_glu(&EmuEngine::new(dtype), dtype);
    }
}

/// Each wrong variant is what a kernel with that mistake computes, expressed through the reference on modified
/// inputs; the real kernel's bf16 output must be outside the tolerance around it.
#[test]
fn conv_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let (b, h, width, f) = (2, 3, 5, 24);
    let c = random_case(&mut Rng(42), (b, h, width, f), dtype);
    let got = dwconv3x3_glu(&EmuEngine::new(dtype), &c.x, &c.w, &c.bias, h, width).expect("emu");
    let want = cpu::dwconv3x3_glu(&c.x, &c.w, &c.bias, h, width).expect("cpu");
    let tol = tolerance(&c, dtype, want.data());

    let map_w = |tap: &dyn Fn(usize) -> usize| {
        let mut w = c.w.clone();
        for (row, orig) in w.data_mut().chunks_mut(9).zip(c.w.data().chunks(9)) {
            for (t, v) in row.iter_mut().enumerate() {
                *v = orig[tap(t)];
            }
        }
        w
    };
    // The two channel halves exchanged in x, w and bias: the gate becomes the value and vice versa.
    let swap_halves = |t: &HostTensor, row: usize| {
        let mut t = t.clone();
        for chunk in t.data_mut().chunks_mut(row) {
            chunk.rotate_left(row / 2);
        }
        t
    };
    let swapped = (
        swap_halves(&c.x, 2 * f),
        swap_halves(&c.w, 2 * f * 9),
        swap_halves(&c.bias, 2 * f),
    );
    let wrong = [
        (
            "value and gate swapped (SiLU on the value)",
            cpu::dwconv3x3_glu(&swapped.0, &swapped.1, &swapped.2, h, width),
        ),
        (
            "kernel flipped (convolution, not correlation)",
            cpu::dwconv3x3_glu(&c.x, &map_w(&|t| 8 - t), &c.bias, h, width),
        ),
        (
            "kernel transposed",
            cpu::dwconv3x3_glu(&c.x, &map_w(&|t| t % 3 * 3 + t / 3), &c.bias, h, width),
        ),
        (
            "bias missing",
            cpu::dwconv3x3_glu(&c.x, &c.w, &HostTensor::zeros(vec![2 * f]), h, width),
        ),
        (
            "h and w exchanged",
            cpu::dwconv3x3_glu(&c.x, &c.w, &c.bias, width, h),
        ),
    ];
    for (what, wrong) in wrong {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), |i| tol[i]);
    }
    // Each channel reading the next channel's taps (a stride error in the weight index).
    let mut shifted = c.w.clone();
    shifted.data_mut().rotate_left(9);
    let wrong = cpu::dwconv3x3_glu(&c.x, &shifted, &c.bias, h, width).expect("cpu");
    assert_caught(
        "weights of the next channel",
        got.data(),
        wrong.data(),
        |i| tol[i],
    );
}

#[test]
fn conv_shape_errors() {
    let mut rng = Rng(43);
    let e = EmuEngine::new(StorageDtype::F16);
    let x = rng.tensor(&[1, 6, 8], -1.0, 1.0);
    let w = rng.tensor(&[8, 9], -1.0, 1.0);
    let bias = rng.tensor(&[8], -1.0, 1.0);
    let odd = rng.tensor(&[1, 6, 7], -1.0, 1.0);
    let cases = [
        (
            "grid of another size",
            dwconv3x3_glu(&e, &x, &w, &bias, 2, 2).err(),
        ),
        (
            "odd channel count",
            dwconv3x3_glu(
                &e,
                &odd,
                &rng.tensor(&[7, 9], -1.0, 1.0),
                &rng.tensor(&[7], -1.0, 1.0),
                2,
                3,
            )
            .err(),
        ),
        (
            "weight of another shape",
            dwconv3x3_glu(&e, &x, &rng.tensor(&[8, 3, 3], -1.0, 1.0), &bias, 2, 3).err(),
        ),
        (
            "bias of another length",
            dwconv3x3_glu(&e, &x, &w, &rng.tensor(&[4], -1.0, 1.0), 2, 3).err(),
        ),
    ];
    for (what, err) in cases {
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: expected a shape error, got {err:?}"
        );
    }
}

#[test]
fn conv_ptx_has_entries() {
    check_ptx(
        Family::Conv,
        &[
            "dwconv3x3_glu_f32",
            "dwconv3x3_glu_bf16",
            "dwconv3x3_glu_f16",
        ],
    );
}

// ---------------------------------------------------------------------------------------------------------------
// depthwise_conv and grouped_linear (the DC-AE's multi-scale branch).
//
// Tolerance, per output: both the kernel and the reference (`cpu::conv::depthwise_conv`,
// `cpu::linear::grouped_linear`) sum `T` products in f32 (T = k² + 1 with the bias for the depthwise conv, in the
// same order; T = Cin/G for the grouped conv, sequential in the kernel, 8 lanes in the reference), each within
// `T·U·A` of the exact value, `A = |bias| + Σ|w·x|`; the GPU may fuse products into FMAs, which only tightens this.
// So `|Δ| ≤ 2T·U·A`, plus half an ulp of the storage dtype at the reference (0 for f32).

/// `(A, T)` terms of the tolerance for each output of a depthwise conv.
fn depthwise_bound(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    (h, width): (usize, usize),
) -> Vec<f64> {
    let (b, n, c) = emu_check::dims3(x);
    let k = w.shape()[1];
    let r = k / 2;
    let mut a = vec![0.0f64; b * n * c];
    for bi in 0..b {
        for p in 0..n {
            let (i, j) = (p / width, p % width);
            for ch in 0..c {
                let mut s = bias.map_or(0.0, |t| f64::from(t.data()[ch]).abs());
                for di in 0..k {
                    for dj in 0..k {
                        let (ii, jj) = ((i + di).wrapping_sub(r), (j + dj).wrapping_sub(r));
                        if ii < h && jj < width {
                            s += (f64::from(w.data()[(ch * k + di) * k + dj])
                                * f64::from(x.data()[(bi * n + ii * width + jj) * c + ch]))
                            .abs();
                        }
                    }
                }
                a[(bi * n + p) * c + ch] = 2.0 * (k * k + 1) as f64 * f64::from(U) * s;
            }
        }
    }
    a
}

/// (B, h, w, C, k, bias): a 1×1 grid (all taps but the centre are padding); 5×5 over a non-square 3×7 grid, wider
/// than the window; C = 130 across two channel tiles with 6 rows (a partial strip of 4); 3×3 and 7×7 with bias;
/// the DC-AE's 5×5 on 3·32·4 = 384 channels and on its deepest stage's 3·512 = 1536.
const DEPTHWISE_SHAPES: [(usize, usize, usize, usize, usize, bool); 7] = [
    (1, 1, 1, 3, 5, false),
    (2, 3, 7, 9, 5, false),
    (1, 6, 5, 130, 5, false),
    (1, 4, 3, 5, 3, true),
    (2, 5, 8, 4, 7, true),
    (1, 4, 4, 384, 5, false),
    (1, 3, 3, 1536, 5, false),
];

fn depthwise_case(
    rng: &mut Rng,
    (b, h, width, c, k, with_bias): (usize, usize, usize, usize, usize, bool),
    dtype: StorageDtype,
) -> (HostTensor, HostTensor, Option<HostTensor>) {
    (
        rounded(&rng.tensor(&[b, h * width, c], -2.0, 2.0), dtype),
        rounded(&rng.tensor(&[c, k, k], -0.5, 0.5), dtype),
        with_bias.then(|| rounded(&rng.tensor(&[c], -0.5, 0.5), dtype)),
    )
}

fn check_depthwise_conv<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(44);
    let (mut worst, mut max_abs) = (0.0f32, 0.0f32);
    for shape in DEPTHWISE_SHAPES {
        let (x, w, bias) = depthwise_case(&mut rng, shape, dtype);
        let (h, width) = (shape.1, shape.2);
        let got = depthwise_conv(e, &x, &w, bias.as_ref(), h, width).expect("engine");
        let want = cpu::depthwise_conv(&x, &w, bias.as_ref(), h, width).expect("cpu");
        let bound = depthwise_bound(&x, &w, bias.as_ref(), (h, width));
        max_abs = got
            .data()
            .iter()
            .zip(want.data())
            .fold(max_abs, |m, (g, w)| m.max((g - w).abs()));
        worst = worst.max(within(e, dtype, shape, &got, &want, |i| {
            0.5 * ulp(dtype, want.data()[i]) + bound[i] as f32
        }));
    }
    eprintln!(
        "{} depthwise_conv {dtype:?}: worst error {worst:.3} of the tolerance, max |Δ| {max_abs:e}",
        e.name()
    );
}

#[test]
fn depthwise_conv_emu_matches_cpu() {
    for dtype in DTYPES {
        check_depthwise_conv(&EmuEngine::new(dtype), dtype);
    }
}

/// Mistakes expressed through the reference on modified inputs; the real kernel's bf16 output must fail each.
#[test]
fn depthwise_conv_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let shape = (2, 5, 6, 7, 5, true);
    let (h, width) = (shape.1, shape.2);
    let (x, w, bias) = depthwise_case(&mut Rng(45), shape, dtype);
    let bias = bias.expect("with bias");
    let got = depthwise_conv(&EmuEngine::new(dtype), &x, &w, Some(&bias), h, width).expect("emu");
    let want = cpu::depthwise_conv(&x, &w, Some(&bias), h, width).expect("cpu");
    let bound = depthwise_bound(&x, &w, Some(&bias), (h, width));
    let tol = |i: usize| 0.5 * ulp(dtype, want.data()[i]) + bound[i] as f32;
    let (c, k) = (7, 5);
    let mut flipped = w.clone();
    for (row, orig) in flipped
        .data_mut()
        .chunks_mut(k * k)
        .zip(w.data().chunks(k * k))
    {
        for (t, v) in row.iter_mut().enumerate() {
            *v = orig[k * k - 1 - t];
        }
    }
    // Padding k/2 − 1: the window starts one pixel late, i.e. the 5×5 taps in the top-left of a 7×7 kernel
    // centred as the reference centres it.
    let mut late = HostTensor::zeros(vec![c, k + 2, k + 2]);
    for ch in 0..c {
        for di in 0..k {
            for dj in 0..k {
                late.data_mut()[(ch * (k + 2) + di + 2) * (k + 2) + dj + 2] =
                    w.data()[(ch * k + di) * k + dj];
            }
        }
    }
    let mut next = w.clone();
    next.data_mut().rotate_left(k * k);
    let wrong = [
        (
            "kernel flipped",
            cpu::depthwise_conv(&x, &flipped, Some(&bias), h, width),
        ),
        (
            "padding off by one",
            cpu::depthwise_conv(&x, &late, Some(&bias), h, width),
        ),
        ("bias missing", cpu::depthwise_conv(&x, &w, None, h, width)),
        (
            "weights of the next channel",
            cpu::depthwise_conv(&x, &next, Some(&bias), h, width),
        ),
        (
            "h and w exchanged",
            cpu::depthwise_conv(&x, &w, Some(&bias), width, h),
        ),
    ];
    for (what, wrong) in wrong {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), tol);
    }
}

/// `2·(Cin/G)·U·Σ|x·w|` per output of a grouped 1×1 conv.
fn grouped_bound(x: &HostTensor, w: &HostTensor, groups: usize) -> Vec<f64> {
    let (cout, gi) = (w.shape()[0], w.shape()[1]);
    let go = cout / groups;
    let cin = x.last_dim();
    let mut a = Vec::with_capacity(x.rows() * cout);
    for row in x.data().chunks(cin) {
        for o in 0..cout {
            let xs = &row[o / go * gi..][..gi];
            let s: f64 = xs
                .iter()
                .zip(&w.data()[o * gi..][..gi])
                .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                .sum();
            a.push(2.0 * gi as f64 * f64::from(U) * s);
        }
    }
    a
}

/// (rows, groups, Ci, Co): one row, one group of one channel; Ci ≠ Co both ways; the tiny VAE's 3·n_h groups of
/// 8; the DC-AE's 3·4 groups of 32 over 37 rows (a partial strip of 16) with two channel tiles; its deepest stage's
/// 3·16 groups of 32 (512 channels) over 9 rows.
const GROUPED_SHAPES: [(usize, usize, usize, usize); 6] = [
    (1, 1, 1, 1),
    (5, 3, 4, 2),
    (7, 2, 3, 5),
    (20, 6, 8, 8),
    (37, 12, 32, 32),
    (9, 48, 32, 32),
];

fn check_grouped_linear<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(46);
    let (mut worst, mut max_abs) = (0.0f32, 0.0f32);
    for (rows, g, gi, go) in GROUPED_SHAPES {
        let x = rounded(&rng.tensor(&[1, rows, g * gi], -2.0, 2.0), dtype);
        let w = rounded(&rng.tensor(&[g * go, gi], -0.5, 0.5), dtype);
        let got = grouped_linear(e, &x, &w, g).expect("engine");
        let want = sana::cpu::linear::grouped_linear(&x, &w, g).expect("cpu");
        assert_eq!(got.shape(), want.shape());
        let bound = grouped_bound(&x, &w, g);
        max_abs = got
            .data()
            .iter()
            .zip(want.data())
            .fold(max_abs, |m, (g, w)| m.max((g - w).abs()));
        worst = worst.max(assert_within(
            &format!("{} {dtype:?} {:?}", e.name(), (rows, g, gi, go)),
            got.data(),
            want.data(),
            |i| 0.5 * ulp(dtype, want.data()[i]) + bound[i] as f32,
        ));
    }
    eprintln!(
        "{} grouped_linear {dtype:?}: worst error {worst:.3} of the tolerance, max |Δ| {max_abs:e}",
        e.name()
    );
}

#[test]
fn grouped_linear_emu_matches_cpu() {
    for dtype in DTYPES {
        check_grouped_linear(&EmuEngine::new(dtype), dtype);
    }
}

#[test]
fn grouped_linear_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let (rows, g, gi, go) = (9, 3, 4, 6);
    let mut rng = Rng(47);
    let x = rounded(&rng.tensor(&[rows, g * gi], -2.0, 2.0), dtype);
    let w = rounded(&rng.tensor(&[g * go, gi], -0.5, 0.5), dtype);
    let got = grouped_linear(&EmuEngine::new(dtype), &x, &w, g).expect("emu");
    let want = sana::cpu::linear::grouped_linear(&x, &w, g).expect("cpu");
    let bound = grouped_bound(&x, &w, g);
    let tol = |i: usize| 0.5 * ulp(dtype, want.data()[i]) + bound[i] as f32;
    // Every group reading the first group's inputs (the group offset missing).
    let mut first = x.clone();
    for row in first.data_mut().chunks_mut(g * gi) {
        let head = row[..gi].to_vec();
        for chunk in row.chunks_mut(gi) {
            chunk.copy_from_slice(&head);
        }
    }
    // Group of output o taken as o / Ci instead of o / Co: computed directly.
    let mut by_ci = vec![0.0f32; rows * g * go];
    for (r, row) in x.data().chunks(g * gi).enumerate() {
        for o in 0..g * go {
            let grp = (o / gi).min(g - 1);
            by_ci[r * g * go + o] = (0..gi)
                .map(|j| row[grp * gi + j] * w.data()[o * gi + j])
                .sum();
        }
    }
    let mut next = w.clone();
    next.data_mut().rotate_left(gi);
    assert_caught(
        "group offset missing",
        got.data(),
        sana::cpu::linear::grouped_linear(&first, &w, g)
            .expect("cpu")
            .data(),
        tol,
    );
    assert_caught("group of o taken as o / Ci", got.data(), &by_ci, tol);
    assert_caught(
        "weights of the next output channel",
        got.data(),
        sana::cpu::linear::grouped_linear(&x, &next, g)
            .expect("cpu")
            .data(),
        tol,
    );
}

#[test]
fn dcae_conv_shape_errors() {
    let e = EmuEngine::new(StorageDtype::F32);
    let x = HostTensor::zeros(vec![1, 6, 4]);
    let cases = [
        (
            "even kernel",
            depthwise_conv(&e, &x, &HostTensor::zeros(vec![4, 4, 4]), None, 2, 3).err(),
        ),
        (
            "grid of another size",
            depthwise_conv(&e, &x, &HostTensor::zeros(vec![4, 5, 5]), None, 2, 2).err(),
        ),
        (
            "bias of another length",
            depthwise_conv(
                &e,
                &x,
                &HostTensor::zeros(vec![4, 3, 3]),
                Some(&HostTensor::zeros(vec![3])),
                2,
                3,
            )
            .err(),
        ),
        (
            "groups do not divide Cin",
            grouped_linear(&e, &x, &HostTensor::zeros(vec![6, 2]), 3).err(),
        ),
        (
            "groups do not divide Cout",
            grouped_linear(&e, &x, &HostTensor::zeros(vec![3, 2]), 2).err(),
        ),
        (
            "no groups",
            grouped_linear(&e, &x, &HostTensor::zeros(vec![4, 4]), 0).err(),
        ),
    ];
    for (what, err) in cases {
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: expected a shape error, got {err:?}"
        );
    }
}

#[test]
fn dcae_conv_ptx_has_entries() {
    check_ptx(
        Family::Conv,
        &[
            "depthwise_conv_f32",
            "depthwise_conv_bf16",
            "depthwise_conv_f16",
            "grouped_linear_f32",
            "grouped_linear_bf16",
            "grouped_linear_f16",
        ],
    );
}
