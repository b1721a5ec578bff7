//! kernels/norm.cu against the CPU reference `cpu::norm::layer_norm_modulate` (and `rms_norm`), one check body run
//! on the emulation engine (f32, bf16, f16) and on the CUDA engine (bf16, f16: `norm_on_cuda`).
//!
//! Tolerances. The kernel computes in f32 and rounds once to the storage dtype; the reference computes its
//! statistics in f64. So, compared with the reference evaluated on the same storage-rounded inputs:
//! - f32 statistics: mean and rstd carry a few f32 ulps (sequential partial sums, then a tree, over D ≤ 13 001
//!   elements of size O(1)), i.e. |Δz| ≲ 1e-6·(1 + |z|), and the modulate adds ≤ 2 ulps of its terms; bounded by
//!   1e-5·(|1+s|·(1 + |z|) + |shift|) (the error scale is that of the terms, not of their possibly cancelling sum);
//! - storage rounding of the output: round-to-nearest-even is within half an ulp of the output dtype at |ref|
//!   (0 for f32). An f32 error that moves the value across a rounding boundary adds only that f32 error.
//!
//! The bound is tight enough that the mistakes in `norm_tolerance_catches_wrong_kernels` fail it.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, assert_within, check_ptx, rounded, ulp, Rng};
use engine_check::{on_cuda, run_op};
use sana::cpu::norm as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::{Error, HostTensor};

/// Inputs and parameters of one `layer_norm_modulate` call.
struct Case {
    x: HostTensor,
    m: HostTensor,
    shift_row: usize,
    scale_row: usize,
    eps: f32,
}

/// How far `got` is from the reference for `case`, as the largest |got − ref| / tolerance (≤ 1 passes), and where.
fn worst_ratio(got: &HostTensor, case: &Case, dtype: StorageDtype) -> (f32, usize) {
    let want = cpu::layer_norm_modulate(&case.x, &case.m, case.shift_row, case.scale_row, case.eps)
        .expect("reference");
    let (b, n, d) = (case.x.shape()[0], case.x.shape()[1], case.x.shape()[2]);
    let k = case.m.shape()[1];
    // z = LayerNorm(x) alone: the reference with a zero modulation row.
    let zero = HostTensor::zeros(vec![b, 1, d]);
    let z = cpu::layer_norm_modulate(&case.x, &zero, 0, 0, case.eps).expect("reference z");
    let mut worst = (0.0f32, 0);
    for i in 0..got.len() {
        let (bi, j) = (i / (n * d), i % d);
        let shift = case.m.data()[(bi * k + case.shift_row) * d + j];
        let one_plus_scale = 1.0 + case.m.data()[(bi * k + case.scale_row) * d + j];
        let r = want.data()[i];
        let f32_err = 1e-5 * (one_plus_scale.abs() * (1.0 + z.data()[i].abs()) + shift.abs());
        let tol = 0.5 * ulp(dtype, r) + f32_err;
        let ratio = (got.data()[i] - r).abs() / tol;
        if ratio.is_nan() || ratio > worst.0 {
            worst = (ratio, i);
        }
    }
    worst
}

fn random_case(
    rng: &mut Rng,
    (b, n, d, k): (usize, usize, usize, usize),
    shift_row: usize,
    scale_row: usize,
) -> Case {
    Case {
        // Offset mean and non-unit spread, so that a missing mean subtraction or rstd shows.
        x: rng.tensor(&[b, n, d], -2.0, 3.0),
        m: rng.tensor(&[b, k, d], -1.5, 1.5),
        shift_row,
        scale_row,
        eps: 1e-6,
    }
}

/// Shapes (B, N, D, K): D below, at and above one block of 256 threads, not multiples of 32 or 256, Sana's widths
/// 1152 (600M) and 2240 (1.6B), and a row of 13 001 (52 KiB of f32: the launch must opt in to more than 48 KiB of
/// shared memory on a GPU).
const SHAPES: [(usize, usize, usize, usize); 8] = [
    (1, 1, 7, 2),
    (2, 3, 32, 6),
    (2, 3, 33, 6),
    (1, 2, 257, 3),
    (2, 5, 300, 6),
    (2, 2, 1152, 6),
    (1, 3, 2240, 6),
    (1, 2, 13_001, 6),
];

/// `layer_norm_modulate` on `e` through the `Engine` API.
fn layer_norm_modulate<E: Engine>(
    e: &E,
    x: &HostTensor,
    m: &HostTensor,
    shift_row: usize,
    scale_row: usize,
    eps: f32,
) -> sana::Result<HostTensor> {
    run_op(e, &[x, m], |t| {
        e.layer_norm_modulate(&t[0], &t[1], shift_row, scale_row, eps)
    })
}

fn check_against_cpu<E: Engine>(e: &E, dtype: StorageDtype, seed: u64) {
    let mut rng = Rng(seed);
    for (i, &shape) in SHAPES.iter().enumerate() {
        let k = shape.3;
        // Alternate the rows so that both orders of shift/scale and rows past 0/1 are used.
        let (shift_row, scale_row) = if i % 2 == 0 { (0, 1) } else { (k - 2, k - 1) };
        let case = random_case(&mut rng, shape, shift_row, scale_row);
        let got = layer_norm_modulate(e, &case.x, &case.m, shift_row, scale_row, case.eps)
            .expect("engine");
        assert_eq!(got.shape(), case.x.shape());
        let case = Case {
            x: rounded(&case.x, dtype),
            m: rounded(&case.m, dtype),
            ..case
        };
        let (ratio, at) = worst_ratio(&got, &case, dtype);
        assert!(
            ratio <= 1.0,
            "{} {dtype:?} shape {shape:?}: element {at} is {ratio}× the tolerance off",
            e.name()
        );
    }
}

#[test]
fn norm_emu_matches_cpu_f32() {
    check_against_cpu(&EmuEngine::new(StorageDtype::F32), StorageDtype::F32, 1);
}

#[test]
fn norm_emu_matches_cpu_bf16() {
    check_against_cpu(&EmuEngine::new(StorageDtype::Bf16), StorageDtype::Bf16, 2);
}

#[test]
fn norm_emu_matches_cpu_f16() {
    check_against_cpu(&EmuEngine::new(StorageDtype::F16), StorageDtype::F16, 3);
}

/// The LayerNorm and RMSNorm checks on the CUDA engine (a GPU, or CI's software device).
#[test]
fn norm_on_cuda() {
    on_cuda("norm_on_cuda", |e, dtype| {
        check_against_cpu(e, dtype, 2);
        check_rms(e, dtype);
    });
}

/// The bf16 tolerance (the loosest) must reject a kernel with a typical mistake: each variant below is what such a
/// kernel computes, expressed through the CPU reference. eps is chosen comparable to the variance so that it
/// matters, as it does for near-constant rows.
#[test]
fn norm_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let mut rng = Rng(4);
    let (b, n, d, k) = (2, 3, 64, 6);
    let x = rng.tensor(&[b, n, d], 0.48, 0.52); // variance ≈ 1.3e-4
    let m = rng.tensor(&[b, k, d], -1.5, 1.5);
    let (shift_row, scale_row, eps) = (3, 4, 1e-4);
    let got = layer_norm_modulate(&EmuEngine::new(dtype), &x, &m, shift_row, scale_row, eps)
        .expect("emu");
    let (x, m) = (rounded(&x, dtype), rounded(&m, dtype));
    let case = |m: &HostTensor, shift_row, scale_row, eps| Case {
        x: x.clone(),
        m: m.clone(),
        shift_row,
        scale_row,
        eps,
    };
    let (ok, _) = worst_ratio(&got, &case(&m, shift_row, scale_row, eps), dtype);
    assert!(ok <= 1.0, "correct kernel fails: {ok}× the tolerance");

    // m with the scale row replaced by f(scale) (same table otherwise).
    let map_scale = |f: &dyn Fn(f32) -> f32| {
        let mut m = m.clone();
        for bi in 0..b {
            let row = (bi * k + scale_row) * d;
            for v in &mut m.data_mut()[row..row + d] {
                *v = f(*v);
            }
        }
        m
    };
    // Unbiased variance: LN_unbiased(x, eps) = c·LN(x, c²·eps) with c² = (D−1)/D.
    let c = ((d as f32 - 1.0) / d as f32).sqrt();
    let mut other_batch = m.clone();
    other_batch.data_mut().rotate_left(k * d);
    let wrong = [
        ("eps ignored", case(&m, shift_row, scale_row, 0.0)),
        ("eps off by 10x", case(&m, shift_row, scale_row, eps / 10.0)),
        (
            "scale without 1+",
            case(&map_scale(&|s| s - 1.0), shift_row, scale_row, eps),
        ),
        (
            "shift and scale swapped",
            case(&m, scale_row, shift_row, eps),
        ),
        (
            "scale row off by one",
            case(&m, shift_row, scale_row + 1, eps),
        ),
        (
            "modulation of the other batch item",
            case(&other_batch, shift_row, scale_row, eps),
        ),
        (
            "unbiased variance",
            case(
                &map_scale(&|s| c * (1.0 + s) - 1.0),
                shift_row,
                scale_row,
                c * c * eps,
            ),
        ),
    ];
    for (what, case) in &wrong {
        let (ratio, _) = worst_ratio(&got, case, dtype);
        assert!(
            ratio > 1.0,
            "a kernel with '{what}' would pass (worst {ratio}× the tolerance)"
        );
    }
}

#[test]
fn norm_shape_errors() {
    let mut rng = Rng(5);
    let x = rng.tensor(&[2, 3, 8], -1.0, 1.0);
    let m = rng.tensor(&[2, 4, 8], -1.0, 1.0);
    let e = EmuEngine::new(StorageDtype::Bf16);
    let run = |x: &HostTensor, m: &HostTensor, shift_row, scale_row| {
        layer_norm_modulate(&e, x, m, shift_row, scale_row, 1e-6)
    };
    let x2 = x.clone().reshape(vec![6, 8]).expect("reshape");
    let wrong_batch = rng.tensor(&[1, 4, 8], -1.0, 1.0);
    let wrong_d = rng.tensor(&[2, 4, 9], -1.0, 1.0);
    let too_wide = rng.tensor(&[1, 1, sana::launch::norm::LAYER_NORM_MAX_D + 1], -1.0, 1.0);
    let too_wide_m = rng.tensor(&[1, 2, sana::launch::norm::LAYER_NORM_MAX_D + 1], -1.0, 1.0);
    let cases = [
        ("x of rank 2", run(&x2, &m, 0, 1)),
        ("modulation batch", run(&x, &wrong_batch, 0, 1)),
        ("modulation width", run(&x, &wrong_d, 0, 1)),
        ("shift row out of range", run(&x, &m, 4, 1)),
        ("scale row out of range", run(&x, &m, 0, 7)),
        (
            "D beyond the shared-memory row",
            run(&too_wide, &too_wide_m, 0, 1),
        ),
    ];
    for (what, result) in cases {
        assert!(
            matches!(result, Err(Error::Shape { .. })),
            "{what}: expected a shape error, got {result:?}"
        );
    }
}

#[test]
fn norm_empty_rows() {
    let x = HostTensor::zeros(vec![2, 0, 8]);
    let m = Rng(6).tensor(&[2, 2, 8], -1.0, 1.0);
    let y = layer_norm_modulate(&EmuEngine::new(StorageDtype::F16), &x, &m, 0, 1, 1e-6)
        .expect("empty launch");
    assert_eq!(y.shape(), &[2, 0, 8]);
}

#[test]
fn norm_ptx_has_entries() {
    check_ptx(
        Family::Norm,
        &[
            "layer_norm_modulate_f32",
            "layer_norm_modulate_bf16",
            "layer_norm_modulate_f16",
        ],
    );
}

// RMSNorm (kernels/norm.cu `rms_norm_*`) against `cpu::norm::rms_norm` / `rms_norm_plus_one` on storage-rounded
// inputs. Tolerance per element, with z = x·r the normalised value, p = z·w the product before any bias and y the
// reference output:
// - f32 statistics: r carries a few f32 ulps (sum of ≤ 2304 squares), ≤ 1e-5·|p|;
// - diffusers form: z is rounded to the storage dtype before the weight multiply (as diffusers does) and the
//   product is rounded again: 0.5·ulp(|z|)·|w| + 0.5·ulp(|p|); with a bias, the sum is rounded once more:
//   + 0.5·ulp(|y|);
// - Gemma form: one rounding, 0.5·ulp(|p|).
struct RmsCase {
    got: Vec<f32>,
    want: Vec<f32>,
    z: Vec<f32>,
    w: Vec<f32>,
    biased: bool,
}

fn rms_case<E: Engine>(
    e: &E,
    dtype: StorageDtype,
    plus_one: bool,
    biased: bool,
    shape: &[usize],
    seed: u64,
) -> RmsCase {
    let mut rng = Rng(seed);
    let d = *shape.last().unwrap();
    let x = rounded(&rng.tensor(shape, -2.0, 2.0), dtype);
    let w = rounded(&rng.tensor(&[d], 0.5, 1.5), dtype);
    let b = biased.then(|| rounded(&rng.tensor(&[d], -1.0, 1.0), dtype));
    let got = match &b {
        _ if plus_one => run_op(e, &[&x, &w], |t| e.rms_norm_plus_one(&t[0], &t[1], 1e-5)),
        Some(b) => run_op(e, &[&x, &w, b], |t| {
            e.rms_norm(&t[0], &t[1], Some(&t[2]), 1e-5)
        }),
        None => run_op(e, &[&x, &w], |t| e.rms_norm(&t[0], &t[1], None, 1e-5)),
    }
    .unwrap();
    let want = if plus_one {
        cpu::rms_norm_plus_one(&x, &w, 1e-5).unwrap()
    } else {
        cpu::rms_norm(&x, &w, b.as_ref(), 1e-5).unwrap()
    };
    let z = cpu::rms_norm_plus_one(&x, &HostTensor::zeros(vec![d]), 1e-5).unwrap();
    let wide: Vec<f32> = (0..x.len()).map(|i| w.data()[i % d]).collect();
    RmsCase {
        got: got.into_data(),
        want: want.into_data(),
        z: z.into_data(),
        w: wide,
        biased,
    }
}

fn rms_tol(dtype: StorageDtype, plus_one: bool, case: &RmsCase, i: usize) -> f32 {
    let p = if plus_one {
        case.want[i].abs()
    } else {
        (case.z[i] * case.w[i]).abs()
    };
    let z_rounding = if plus_one {
        0.0
    } else {
        0.5 * ulp(dtype, case.z[i]) * case.w[i].abs()
    };
    let bias_rounding = if case.biased {
        0.5 * ulp(dtype, case.want[i].abs())
    } else {
        0.0
    };
    1e-5 * p + z_rounding + 0.5 * ulp(dtype, p) + bias_rounding
}

/// Both RMSNorm forms, with and without bias, at odd widths, the 1.6B's 2240 (q/k norm) and Gemma-2's 2304.
fn check_rms<E: Engine>(e: &E, dtype: StorageDtype) {
    for (plus_one, biased) in [(false, false), (false, true), (true, false)] {
        for (seed, shape) in [
            [2usize, 3, 64].as_slice(),
            &[5, 33],
            &[1, 2240],
            &[3, 2304],
            &[7],
        ]
        .iter()
        .enumerate()
        {
            let case = rms_case(e, dtype, plus_one, biased, shape, seed as u64 + 10);
            assert_within(
                &format!(
                    "{} rms_norm {dtype:?} plus_one={plus_one} bias={biased} {shape:?}",
                    e.name()
                ),
                &case.got,
                &case.want,
                |i| rms_tol(dtype, plus_one, &case, i),
            );
        }
    }
}

#[test]
fn norm_rms_emu_matches_cpu() {
    for dtype in [StorageDtype::F32, StorageDtype::Bf16, StorageDtype::F16] {
        check_rms(&EmuEngine::new(dtype), dtype);
    }
}

#[test]
fn norm_rms_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let e = EmuEngine::new(dtype);
    let case = rms_case(&e, dtype, false, false, &[4, 96], 21);
    let tol = |i: usize| rms_tol(dtype, false, &case, i);
    let (got, z, w) = (&case.got, &case.z, &case.w);
    assert_within("rms_norm", got, &case.want, tol);
    let d = 96;
    let with_one: Vec<f32> = (0..got.len()).map(|i| z[i] * (1.0 + w[i % d])).collect();
    assert_caught(
        "(1 + w) where diffusers multiplies by w",
        got,
        &with_one,
        tol,
    );
    assert_caught("weight ignored", got, z, tol);
    let rolled: Vec<f32> = (0..got.len()).map(|i| z[i] * w[(i + 1) % d]).collect();
    assert_caught("weight off by one", got, &rolled, tol);
    let biased = rms_case(&e, dtype, false, true, &[4, 96], 22);
    let unbiased: Vec<f32> = (0..got.len()).map(|i| biased.z[i] * biased.w[i]).collect();
    assert_caught("bias ignored", &biased.got, &unbiased, |i| {
        rms_tol(dtype, false, &biased, i)
    });
}

#[test]
fn norm_rms_shape_errors() {
    let e = EmuEngine::new(StorageDtype::Bf16);
    let x = HostTensor::zeros(vec![2, 8]);
    for w in [HostTensor::zeros(vec![7]), HostTensor::zeros(vec![2, 8])] {
        let err = run_op(&e, &[&x, &w], |t| e.rms_norm(&t[0], &t[1], None, 1e-5))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Shape { op: "rms_norm", .. }), "{err}");
    }
}
