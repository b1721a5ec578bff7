//! `Engine::linear` (`act(x·wᵀ + b)`) against the CPU reference `cpu::linear::linear` on inputs first rounded to the
//! storage dtype, one check body run on the emulation engine (f32, bf16, f16: the reference, rounded once) and on the
//! CUDA engine (bf16, f16: cuBLASLt with a fused bias/GELU/ReLU epilogue, SiLU as a second kernel:
//! `linear_on_cuda`), at the models' projection widths.
//!
//! Tolerance, per output with `U` = 2^-24: both sum `T = K + 1` terms in f32 (the bias and K products of storage
//! values, exact in f32), each within `T·U·A` of the exact value whatever the order or split, `A = |b| + Σ|x·w|`; the
//! activation has slope ≤ 1.13 (GELU-tanh; SiLU 1.1) and adds its evaluation error `8U·(|z| + |act(z)|)`
//! (tests/elementwise.rs); the output is rounded once to storage (½ ulp at the reference). The CUDA engine applies
//! SiLU after the GEMM's output was rounded to storage: `1.1·½ ulp(z)` more there.
//!
//! `linear_tolerance_catches_wrong_kernels` shows that typical mistakes (the weight read as [in, out], the bias
//! missing or of the next channel, GELU's erf form for its tanh form) fail this bound.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, rounded, ulp, Rng, DTYPES, U};
use engine_check::{on_cuda, run_op, within};
use sana::cpu::linear as cpu;
use sana::engine::emu::EmuEngine;
use sana::engine::{Activation, Engine, StorageDtype};
use sana::{Error, HostTensor};

fn linear<E: Engine>(
    e: &E,
    x: &HostTensor,
    w: &HostTensor,
    b: Option<&HostTensor>,
    act: Activation,
) -> sana::Result<HostTensor> {
    match b {
        Some(b) => run_op(e, &[x, w, b], |t| e.linear(&t[0], &t[1], Some(&t[2]), act)),
        None => run_op(e, &[x, w], |t| e.linear(&t[0], &t[1], None, act)),
    }
}

struct Case {
    x: HostTensor,
    w: HostTensor,
    b: Option<HostTensor>,
    act: Activation,
}

/// (tokens, in, out, bias, activation).
type Shape = (usize, usize, usize, bool, Activation);

fn random_case(rng: &mut Rng, (m, k, n, bias, act): Shape, dtype: StorageDtype) -> Case {
    // Weights of scale 1/√K keep pre-activations O(1), where GELU and SiLU bend.
    let s = 2.0 / (k as f32).sqrt();
    Case {
        x: rounded(&rng.tensor(&[1, m, k], -1.5, 1.5), dtype),
        w: rounded(&rng.tensor(&[n, k], -s, s), dtype),
        b: bias.then(|| rounded(&rng.tensor(&[n], -0.5, 0.5), dtype)),
        act,
    }
}

/// The per-element tolerance of the file header; `rounded_before_act` for an engine that rounds the GEMM's output
/// to storage before a separate activation kernel (the CUDA engine's SiLU).
fn tolerance(c: &Case, dtype: StorageDtype, want: &[f32], rounded_before_act: bool) -> Vec<f32> {
    let k = c.w.shape()[1];
    let z = cpu::linear(&c.x, &c.w, c.b.as_ref(), Activation::Identity).expect("cpu z");
    // A = |b| + |x|·|w|ᵀ, by the reference GEMM on absolute values (its own error, K·U relative, is negligible in a
    // bound of 2(K + 1)·U·A).
    let abs = |t: &HostTensor| {
        HostTensor::new(
            t.shape().to_vec(),
            t.data().iter().map(|v| v.abs()).collect(),
        )
        .expect("shape")
    };
    let b_abs = c.b.as_ref().map(abs);
    let a =
        cpu::linear(&abs(&c.x), &abs(&c.w), b_abs.as_ref(), Activation::Identity).expect("cpu A");
    let (slope, act_err) = match c.act {
        Activation::GeluTanh => (1.13, 8.0),
        Activation::Silu => (1.1, 8.0),
        Activation::Relu | Activation::Identity => (1.0, 0.0),
    };
    let t = (k + 1) as f32;
    (0..want.len())
        .map(|i| {
            let zi = z.data()[i];
            let mut bound =
                2.0 * t * U * a.data()[i] * slope + act_err * U * (zi.abs() + want[i].abs());
            if rounded_before_act && c.act == Activation::Silu {
                bound += slope * 0.5 * ulp(dtype, zi);
            }
            0.5 * ulp(dtype, want[i]) + bound
        })
        .collect()
}

/// Odd sizes on every axis with each activation; then the models' projections at a few tokens: Sana-0.6B's fused
/// q/k/v (1152 → 3·1152), the 1.6B's attention output (2240 → 2240), the caption projection from Gemma-2 (2304 →
/// 2240, GELU-tanh), the timestep embedder (256 → 1152, SiLU), and the deepest reductions — the 1.6B's Mix-FFN
/// output (K = 5600) and Gemma-2's MLP down projection (K = 9216) — on a slice of their outputs (the weights, not
/// the arithmetic, would dominate the test's time at full width).
const SHAPES: [Shape; 11] = [
    (37, 70, 50, true, Activation::Identity),
    (37, 70, 50, true, Activation::GeluTanh),
    (37, 70, 50, true, Activation::Relu),
    (37, 70, 50, true, Activation::Silu),
    (5, 33, 17, false, Activation::Identity),
    (6, 1152, 3456, true, Activation::Identity),
    (3, 2240, 2240, true, Activation::Identity),
    (3, 2304, 2240, true, Activation::GeluTanh),
    (2, 256, 1152, true, Activation::Silu),
    (2, 5600, 448, true, Activation::Identity),
    (2, 9216, 256, false, Activation::Identity),
];

fn check_linear<E: Engine>(e: &E, dtype: StorageDtype, rounded_before_act: bool) {
    let mut rng = Rng(61);
    let mut worst = 0.0f32;
    for shape in SHAPES {
        let c = random_case(&mut rng, shape, dtype);
        let got = linear(e, &c.x, &c.w, c.b.as_ref(), c.act).expect("engine");
        let want = cpu::linear(&c.x, &c.w, c.b.as_ref(), c.act).expect("cpu");
        let tol = tolerance(&c, dtype, want.data(), rounded_before_act);
        worst = worst.max(within(e, dtype, shape, &got, &want, |i| tol[i]));
    }
    eprintln!(
        "{} linear {dtype:?}: worst error {worst:.3} of the tolerance",
        e.name()
    );
}

#[test]
fn linear_emu_matches_cpu() {
    for dtype in DTYPES {
        check_linear(&EmuEngine::new(dtype), dtype, false);
    }
}

/// The check on the CUDA engine (a GPU, or CI's software device).
#[test]
fn linear_on_cuda() {
    on_cuda("linear_on_cuda", |e, dtype| check_linear(e, dtype, true));
}

/// Each wrong variant is what a GEMM with that mistake computes, through the reference on modified inputs; the
/// real output must be outside the tolerance around it (bf16 for the structure, f32 for GELU's form).
#[test]
fn linear_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let c = random_case(&mut Rng(62), (9, 40, 40, true, Activation::Identity), dtype);
    let b = c.b.as_ref().expect("bias");
    let got = linear(&EmuEngine::new(dtype), &c.x, &c.w, Some(b), c.act).expect("emu");
    let want = cpu::linear(&c.x, &c.w, Some(b), c.act).expect("cpu");
    let tol = tolerance(&c, dtype, want.data(), false);
    let mut transposed = c.w.clone();
    for o in 0..40 {
        for i in 0..40 {
            transposed.data_mut()[o * 40 + i] = c.w.data()[i * 40 + o];
        }
    }
    let mut next = b.clone();
    next.data_mut().rotate_left(1);
    for (what, wrong) in [
        (
            "weight read as [in, out]",
            cpu::linear(&c.x, &transposed, Some(b), c.act),
        ),
        ("bias missing", cpu::linear(&c.x, &c.w, None, c.act)),
        (
            "bias of the next channel",
            cpu::linear(&c.x, &c.w, Some(&next), c.act),
        ),
    ] {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), |i| tol[i]);
    }

    let dtype = StorageDtype::F32;
    let c = random_case(&mut Rng(63), (9, 40, 30, true, Activation::GeluTanh), dtype);
    let got = linear(&EmuEngine::new(dtype), &c.x, &c.w, c.b.as_ref(), c.act).expect("emu");
    let want = cpu::linear(&c.x, &c.w, c.b.as_ref(), c.act).expect("cpu");
    let tol = tolerance(&c, dtype, want.data(), false);
    let z = cpu::linear(&c.x, &c.w, c.b.as_ref(), Activation::Identity).expect("cpu");
    // GELU's erf form, 0.5·z·(1 + erf(z/√2)), in f64.
    let erf_gelu: Vec<f32> = z
        .data()
        .iter()
        .map(|&v| {
            let v = f64::from(v);
            (0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2))) as f32
        })
        .collect();
    assert_caught("GELU's erf form", got.data(), &erf_gelu, |i| tol[i]);
}

/// erf by its Maclaurin series (std has none); at |x| ≤ 4, as here, 60 terms leave an error below 1e-9.
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..60 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn linear_shape_errors() {
    let e = EmuEngine::new(StorageDtype::Bf16);
    let x = HostTensor::zeros(vec![2, 3, 8]);
    let cases = [
        (
            "weight of another input width",
            linear(
                &e,
                &x,
                &HostTensor::zeros(vec![4, 7]),
                None,
                Activation::Identity,
            )
            .err(),
        ),
        (
            "weight of rank 3",
            linear(
                &e,
                &x,
                &HostTensor::zeros(vec![4, 8, 1]),
                None,
                Activation::Identity,
            )
            .err(),
        ),
        (
            "bias of another length",
            linear(
                &e,
                &x,
                &HostTensor::zeros(vec![4, 8]),
                Some(&HostTensor::zeros(vec![5])),
                Activation::Identity,
            )
            .err(),
        ),
    ];
    for (what, err) in cases {
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: expected a shape error, got {err:?}"
        );
    }
}
