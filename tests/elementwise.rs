//! kernels/elementwise.cu against the CPU reference (src/cpu/elementwise.rs, src/cpu/norm.rs) on inputs first rounded
//! to the storage dtype; each check body runs on the emulation engine (f32, bf16, f16) and on the CUDA engine (bf16,
//! f16: `elementwise_on_cuda`).
//!
//! Tolerances, per element, with `U` = 2^-24 (f32 unit roundoff) and `ulp` the spacing of the storage dtype at the
//! reference value (0 for f32 storage):
//! - `modulation`, `add`, `mul`, ReLU, identity: the kernel forms the same single f32 operation as the reference and rounds
//!   it once to storage, so `0.5·ulp` (round to nearest), i.e. bit-exact in f32.
//! - `gated_residual`: `x + g·r` is two f32 roundings in the reference, one (an FMA) or two on the GPU: `0.5·ulp +
//!   2U·(|x| + |g·r|)`.
//! - SiLU, GELU-tanh: expf/tanhf are within 2 ulp on the GPU (exact-rounded libm on the host), plus ≤ 4 f32 roundings
//!   in the formula, each of a term no larger than |x| or |act(x)|: `0.5·ulp + 8U·(|x| + |act(x)|)`.
//! - the fused residual + norm: `x'` as `gated_residual` (or `add`); `z` is checked against the reference norm of
//!   the kernel's own `x'` with kernels/norm.cu's tolerance (tests/norm.rs): `0.5·ulp + 1e-5·(|1+s|·(1+|ẑ|) +
//!   |shift|)` where ẑ is the unmodulated norm (f32 statistics over D ≤ 13 001 carry a few ulps). The fused kernel
//!   must also equal `gated_residual` followed by `layer_norm_modulate` on the same engine bit for bit.
//!
//! `elementwise_tolerance_catches_wrong_kernels` shows that typical mistakes fail these bounds.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{
    assert_caught, assert_within, check_ptx, rounded, ulp, worst_ratio, Rng, DTYPES, U,
};
use engine_check::{on_cuda, run_op, run_op2};
use sana::cpu::{elementwise as cpu, norm as cpu_norm};
use sana::engine::cpu::CpuEngine;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Activation, Engine, StorageDtype};
use sana::launch::elementwise::{self as plan, PointwiseBuffers};
use sana::{Error, HostTensor};

fn half_ulp(dtype: StorageDtype, want: &[f32]) -> impl Fn(usize) -> f32 + '_ {
    move |i| 0.5 * ulp(dtype, want[i])
}

/// `op` on `e` through the `Engine` API, for the ops of one or two tensors below.
fn modulation<E: Engine>(e: &E, table: &HostTensor, emb: &HostTensor) -> sana::Result<HostTensor> {
    run_op(e, &[table, emb], |t| e.modulation(&t[0], &t[1]))
}

fn add<E: Engine>(e: &E, a: &HostTensor, b: &HostTensor) -> sana::Result<HostTensor> {
    run_op(e, &[a, b], |t| e.add(&t[0], &t[1]))
}

fn mul<E: Engine>(e: &E, a: &HostTensor, b: &HostTensor) -> sana::Result<HostTensor> {
    run_op(e, &[a, b], |t| e.mul(&t[0], &t[1]))
}

fn activation<E: Engine>(e: &E, x: &HostTensor, act: Activation) -> sana::Result<HostTensor> {
    run_op(e, &[x], |t| e.activation(&t[0], act))
}

fn gated_residual<E: Engine>(
    e: &E,
    x: &HostTensor,
    r: &HostTensor,
    m: &HostTensor,
    row: usize,
) -> sana::Result<HostTensor> {
    run_op(e, &[x, r, m], |t| {
        e.gated_residual(&t[0], &t[1], &t[2], row)
    })
}

fn layer_norm_modulate<E: Engine>(
    e: &E,
    x: &HostTensor,
    m: &HostTensor,
    (shift_row, scale_row): (usize, usize),
    eps: f32,
) -> sana::Result<HostTensor> {
    run_op(e, &[x, m], |t| {
        e.layer_norm_modulate(&t[0], &t[1], shift_row, scale_row, eps)
    })
}

/// `residual_layer_norm_modulate` on `e`: `(x', z)`.
fn residual_norm<E: Engine>(
    e: &E,
    x: &HostTensor,
    r: &HostTensor,
    gate: Option<(&HostTensor, usize)>,
    m: &HostTensor,
    rows: (usize, usize),
    eps: f32,
) -> sana::Result<(HostTensor, HostTensor)> {
    match gate {
        Some((g, row)) => run_op2(e, &[x, r, m, g], |t| {
            e.residual_layer_norm_modulate(&t[0], &t[1], Some((&t[3], row)), &t[2], rows, eps)
        }),
        None => run_op2(e, &[x, r, m], |t| {
            e.residual_layer_norm_modulate(&t[0], &t[1], None, &t[2], rows, eps)
        }),
    }
}

/// Every elementwise check on `e`, storing `dtype`.
fn check_all<E: Engine>(e: &E, dtype: StorageDtype) {
    check_modulation(e, dtype);
    check_add_mul(e, dtype);
    check_activation(e, dtype);
    check_gated_residual(e, dtype);
    check_fused_residual_norm(e, dtype);
}

/// The checks on the CUDA engine (a GPU, or CI's software device).
#[test]
fn elementwise_on_cuda() {
    on_cuda("elementwise_on_cuda", check_all);
}

fn check_modulation<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(11);
    // (B, K, D, per_row): Sana's six rows, the final layer's broadcast [B, D] emb, odd widths, the 0.6B's and the
    // 1.6B's widths.
    let cases = [
        (1, 1, 1, true),
        (2, 6, 37, true),
        (3, 2, 45, false),
        (2, 6, 1152, true),
        (2, 6, 2240, true),
        (2, 2, 2240, false),
    ];
    for &(b, k, d, per_row) in &cases {
        let table = rng.tensor(&[k, d], -1.0, 1.0);
        let emb = rng.tensor(&[b, if per_row { k * d } else { d }], -3.0, 3.0);
        let got = modulation(e, &table, &emb).expect("engine");
        let want = cpu::modulation(&rounded(&table, dtype), &rounded(&emb, dtype)).expect("cpu");
        assert_eq!(got.shape(), want.shape());
        assert_within(
            &format!("{} {dtype:?} modulation {:?}", e.name(), (b, k, d, per_row)),
            got.data(),
            want.data(),
            half_ulp(dtype, want.data()),
        );
    }
}

#[test]
fn elementwise_modulation_matches_cpu() {
    for dtype in DTYPES {
        check_modulation(&EmuEngine::new(dtype), dtype);
    }
}

/// Shapes of the 1-D kernels: a single element, lengths that leave a partial pack (f32 packs hold 4, 16-bit ones 8)
/// and a partial block, the 0.6B's width, Gemma-2's MLP width (9216), and an odd length above the CPU reference's
/// threshold for splitting an op over the cores (74 787 elements).
const POINTWISE_SHAPES: [&[usize]; 6] = [
    &[1],
    &[2, 3, 37],
    &[5, 77],
    &[2, 5, 1152],
    &[2, 9216],
    &[3, 257, 97],
];

/// `add` and `mul` (Gemma-2's gated MLP product).
fn check_add_mul<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(12);
    for (name, op, reference) in [
        (
            "add",
            add::<E> as fn(&E, &HostTensor, &HostTensor) -> _,
            cpu::add as fn(&_, &_) -> _,
        ),
        ("mul", mul::<E>, cpu::mul),
    ] {
        for shape in POINTWISE_SHAPES {
            let a = rng.tensor(shape, -4.0, 4.0);
            let b = rng.tensor(shape, -4.0, 4.0);
            let got = op(e, &a, &b).expect("engine");
            let want = reference(&rounded(&a, dtype), &rounded(&b, dtype)).expect("cpu");
            assert_within(
                &format!("{} {dtype:?} {name} {shape:?}", e.name()),
                got.data(),
                want.data(),
                half_ulp(dtype, want.data()),
            );
        }
    }
}

#[test]
fn elementwise_add_and_mul_match_cpu() {
    for dtype in DTYPES {
        check_add_mul(&EmuEngine::new(dtype), dtype);
    }
}

/// `mul` with the operands of a neighbouring element (a pack or tail indexed off by one) or added instead of
/// multiplied fails the half-ulp bound, in bf16 and across the partial pack of [5, 77].
#[test]
fn elementwise_mul_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let mut rng = Rng(18);
    let a = rounded(&rng.tensor(&[5, 77], -4.0, 4.0), dtype);
    let b = rounded(&rng.tensor(&[5, 77], -4.0, 4.0), dtype);
    let got = mul(&EmuEngine::new(dtype), &a, &b).expect("emu");
    let want = cpu::mul(&a, &b).expect("cpu");
    let mut shifted = b.clone();
    shifted.data_mut().rotate_left(1);
    for (what, wrong) in [
        ("a + b", cpu::add(&a, &b)),
        ("b of the next element", cpu::mul(&a, &shifted)),
    ] {
        assert_caught(
            what,
            got.data(),
            wrong.expect("cpu").data(),
            half_ulp(dtype, want.data()),
        );
    }
}

/// `0.5·ulp + c·U·(|x| + |act(x)|)` with c = 8 for the transcendental activations, 0 for ReLU and identity.
fn activation_tol<'a>(
    dtype: StorageDtype,
    act: Activation,
    x: &'a [f32],
    want: &'a [f32],
) -> impl Fn(usize) -> f32 + 'a {
    let c = match act {
        Activation::Silu | Activation::GeluTanh => 8.0,
        Activation::Relu | Activation::Identity => 0.0,
    };
    move |i| 0.5 * ulp(dtype, want[i]) + c * U * (x[i].abs() + want[i].abs())
}

const ACTIVATIONS: [Activation; 4] = [
    Activation::Identity,
    Activation::Silu,
    Activation::GeluTanh,
    Activation::Relu,
];

fn check_activation<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(13);
    let mut worst = 0.0f32;
    for act in ACTIVATIONS {
        for shape in POINTWISE_SHAPES {
            // Wide enough for SiLU's and GELU's saturated tails and the cancellation in 1 + tanh.
            let x = rounded(&rng.tensor(shape, -12.0, 12.0), dtype);
            let got = activation(e, &x, act).expect("engine");
            let want = cpu::activation(&x, act).expect("cpu");
            worst = worst.max(assert_within(
                &format!("{} {dtype:?} {act:?} {shape:?}", e.name()),
                got.data(),
                want.data(),
                activation_tol(dtype, act, x.data(), want.data()),
            ));
        }
    }
    eprintln!(
        "{} {dtype:?} activation: worst error {worst:.3} of the tolerance",
        e.name()
    );
}

#[test]
fn elementwise_activation_matches_cpu() {
    for dtype in DTYPES {
        check_activation(&EmuEngine::new(dtype), dtype);
    }
}

/// `0.5·ulp + 2U·(|x| + |g·r|)` for `x + g·r` (g = 1 without a gate).
fn residual_tol<'a>(
    dtype: StorageDtype,
    x: &'a HostTensor,
    r: &'a HostTensor,
    gate: Option<(&'a HostTensor, usize)>,
    want: &'a [f32],
) -> impl Fn(usize) -> f32 + 'a {
    let (_, n, d) = emu_check::dims3(x);
    move |i| {
        let g = gate.map_or(1.0, |(m, row)| {
            let k = m.shape()[1];
            m.data()[(i / (n * d) * k + row) * d + i % d]
        });
        0.5 * ulp(dtype, want[i]) + 2.0 * U * (x.data()[i].abs() + (g * r.data()[i]).abs())
    }
}

/// (B, N, D, K): D below, at and above a 16-byte pack, not a multiple of it (the element-by-element path), Sana's
/// widths (0.6B: 1152, 1.6B: 2240), and a row of 13 001 (the fused norm's 52 KiB of shared memory on a GPU).
const RESIDUAL_SHAPES: [(usize, usize, usize, usize); 6] = [
    (1, 1, 7, 6),
    (2, 3, 33, 6),
    (2, 7, 64, 6),
    (2, 2, 1152, 6),
    (1, 3, 2240, 6),
    (1, 2, 13_001, 6),
];

fn check_gated_residual<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(14);
    for (i, &(b, n, d, k)) in RESIDUAL_SHAPES.iter().enumerate() {
        let x = rounded(&rng.tensor(&[b, n, d], -3.0, 3.0), dtype);
        let r = rounded(&rng.tensor(&[b, n, d], -3.0, 3.0), dtype);
        let m = rounded(&rng.tensor(&[b, k, d], -1.5, 1.5), dtype);
        let row = if i % 2 == 0 { 2 } else { 5 };
        let got = gated_residual(e, &x, &r, &m, row).expect("engine");
        let want = cpu::gated_residual(&x, &r, &m, row).expect("cpu");
        assert_within(
            &format!("{} {dtype:?} gated_residual {:?}", e.name(), (b, n, d, k)),
            got.data(),
            want.data(),
            residual_tol(dtype, &x, &r, Some((&m, row)), want.data()),
        );
    }
}

#[test]
fn elementwise_gated_residual_matches_cpu() {
    for dtype in DTYPES {
        check_gated_residual(&EmuEngine::new(dtype), dtype);
    }
}

/// kernels/norm.cu's tolerance (tests/norm.rs) for `z = LayerNorm(x)·(1 + m[scale_row]) + m[shift_row]`.
fn norm_tol<'a>(
    dtype: StorageDtype,
    x: &HostTensor,
    m: &'a HostTensor,
    (shift_row, scale_row): (usize, usize),
    eps: f32,
    want: &'a [f32],
) -> impl Fn(usize) -> f32 + 'a {
    let (b, n, d) = emu_check::dims3(x);
    let z = cpu_norm::layer_norm_modulate(x, &HostTensor::zeros(vec![b, 1, d]), 0, 0, eps)
        .expect("reference z")
        .into_data();
    let k = m.shape()[1];
    move |i| {
        let (bi, j) = (i / (n * d), i % d);
        let shift = m.data()[(bi * k + shift_row) * d + j];
        let one_plus_scale = 1.0 + m.data()[(bi * k + scale_row) * d + j];
        0.5 * ulp(dtype, want[i]) + 1e-5 * (one_plus_scale.abs() * (1.0 + z[i].abs()) + shift.abs())
    }
}

fn check_fused_residual_norm<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(15);
    let eps = 1e-6;
    for (i, &(b, n, d, k)) in RESIDUAL_SHAPES.iter().enumerate() {
        let x = rounded(&rng.tensor(&[b, n, d], -3.0, 3.0), dtype);
        let r = rounded(&rng.tensor(&[b, n, d], -3.0, 3.0), dtype);
        // Gate of block i (row 5, gate_mlp) with norm1 of block i+1 (rows 0, 1): two different tables; or the
        // cross-attention add (no gate) with norm2 of the same block (rows 3, 4).
        let gate_table = rounded(&rng.tensor(&[b, k, d], -1.5, 1.5), dtype);
        let m = rounded(&rng.tensor(&[b, k, d], -1.5, 1.5), dtype);
        let (gate, rows) = if i % 2 == 0 {
            (Some((&gate_table, 5)), (0, 1))
        } else {
            (None, (3, 4))
        };
        let what = format!(
            "{} {dtype:?} {:?} gate {}",
            e.name(),
            (b, n, d, k),
            gate.is_some()
        );
        let (x_out, z) = residual_norm(e, &x, &r, gate, &m, rows, eps).expect("engine");

        let x_want = match gate {
            Some((g, row)) => cpu::gated_residual(&x, &r, g, row),
            None => cpu::add(&x, &r),
        }
        .expect("cpu residual");
        assert_within(
            &format!("{what}: x'"),
            x_out.data(),
            x_want.data(),
            residual_tol(dtype, &x, &r, gate, x_want.data()),
        );
        let z_want = cpu_norm::layer_norm_modulate(&x_out, &m, rows.0, rows.1, eps).expect("cpu");
        assert_within(
            &format!("{what}: z"),
            z.data(),
            z_want.data(),
            norm_tol(dtype, &x_out, &m, rows, eps, z_want.data()),
        );

        let x_unfused = match gate {
            Some((g, row)) => gated_residual(e, &x, &r, g, row),
            None => add(e, &x, &r),
        }
        .expect("unfused residual");
        let z_unfused = layer_norm_modulate(e, &x_unfused, &m, rows, eps).expect("unfused norm");
        assert_eq!(
            x_out, x_unfused,
            "{what}: x' differs from the unfused kernels"
        );
        assert_eq!(z, z_unfused, "{what}: z differs from the unfused kernels");
    }
}

#[test]
fn elementwise_fused_residual_norm_matches_composition() {
    for dtype in DTYPES {
        check_fused_residual_norm(&EmuEngine::new(dtype), dtype);
    }
}

/// Each wrong variant is what a kernel with that mistake computes, expressed through the reference; the real
/// kernel's output must be outside the tolerance around it.
#[test]
fn elementwise_tolerance_catches_wrong_kernels() {
    let mut rng = Rng(16);

    // Activations, f32 storage (the tightest tolerance; these mistakes are below a bf16 ulp for most inputs).
    let dtype = StorageDtype::F32;
    let x = rng.tensor(&[3, 50], -4.0, 4.0);
    let sigmoid = |v: f32| 1.0 / (1.0 + (-v).exp());
    for (act, what, wrong) in [
        (
            Activation::GeluTanh,
            "GELU as x·σ(1.702x)",
            &(|v: f32| v * sigmoid(1.702 * v)) as &dyn Fn(f32) -> f32,
        ),
        (
            Activation::GeluTanh,
            "GELU-tanh without the cubic term",
            &|v: f32| 0.5 * v * (1.0 + (0.797_884_6 * v).tanh()),
        ),
        (Activation::Silu, "SiLU as σ(x)", &sigmoid),
        (Activation::Relu, "ReLU as |x|", &|v: f32| v.abs()),
    ] {
        let got = activation(&EmuEngine::new(dtype), &x, act).expect("emu");
        let want = cpu::activation(&x, act).expect("cpu");
        let wrong: Vec<f32> = x.data().iter().map(|&v| wrong(v)).collect();
        assert_caught(
            what,
            got.data(),
            &wrong,
            activation_tol(dtype, act, x.data(), want.data()),
        );
    }

    // Structure, bf16 storage (the loosest tolerance).
    let dtype = StorageDtype::Bf16;
    let (b, n, d, k) = (2, 3, 40, 6);
    let x = rounded(&rng.tensor(&[b, n, d], -3.0, 3.0), dtype);
    let r = rounded(&rng.tensor(&[b, n, d], -3.0, 3.0), dtype);
    let m = rounded(&rng.tensor(&[b, k, d], -1.5, 1.5), dtype);
    let e = EmuEngine::new(dtype);
    let got = gated_residual(&e, &x, &r, &m, 2).expect("emu");
    let want = cpu::gated_residual(&x, &r, &m, 2).expect("cpu");
    let tol = residual_tol(dtype, &x, &r, Some((&m, 2)), want.data());
    let mut other_batch = m.clone();
    other_batch.data_mut().rotate_left(k * d);
    let wrong_residuals = [
        ("gate row off by one", cpu::gated_residual(&x, &r, &m, 3)),
        (
            "gate of the other batch item",
            cpu::gated_residual(&x, &r, &other_batch, 2),
        ),
        ("gate ignored", cpu::add(&x, &r)),
    ];
    for (what, wrong) in wrong_residuals {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), &tol);
    }

    let table = rng.tensor(&[k, d], -1.0, 1.0);
    let emb = rng.tensor(&[b, k * d], -3.0, 3.0);
    let got = modulation(&e, &table, &emb).expect("emu");
    let (table, emb) = (rounded(&table, dtype), rounded(&emb, dtype));
    let want = cpu::modulation(&table, &emb).expect("cpu");
    let first_chunk: Vec<f32> = (0..b)
        .flat_map(|bi| emb.data()[bi * k * d..bi * k * d + d].to_vec())
        .collect();
    let broadcast = HostTensor::new(vec![b, d], first_chunk).expect("shape");
    let mut shifted = table.clone();
    shifted.data_mut().rotate_left(d);
    for (what, wrong) in [
        (
            "emb's first chunk broadcast to every row",
            cpu::modulation(&table, &broadcast),
        ),
        ("table rows shifted", cpu::modulation(&shifted, &emb)),
    ] {
        assert_caught(
            what,
            got.data(),
            wrong.expect("cpu").data(),
            half_ulp(dtype, want.data()),
        );
    }

    // The fused kernel: normalising the residual stream from before the update.
    let eps = 1e-6;
    let (_, z) = residual_norm(&e, &x, &r, Some((&m, 5)), &m, (0, 1), eps).expect("emu");
    let x_new = cpu::gated_residual(&x, &r, &m, 5).expect("cpu");
    let z_want = cpu_norm::layer_norm_modulate(&x_new, &m, 0, 1, eps).expect("cpu");
    let tol = norm_tol(dtype, &x_new, &m, (0, 1), eps, z_want.data());
    let stale = cpu_norm::layer_norm_modulate(&x, &m, 0, 1, eps).expect("cpu");
    assert_caught("norm of x instead of x'", z.data(), stale.data(), &tol);
    let ungated =
        cpu_norm::layer_norm_modulate(&cpu::add(&x, &r).expect("cpu"), &m, 0, 1, eps).expect("cpu");
    assert_caught(
        "gate ignored before the norm",
        z.data(),
        ungated.data(),
        &tol,
    );
}

#[test]
fn elementwise_shape_errors() {
    let mut rng = Rng(17);
    let e = EmuEngine::new(StorageDtype::Bf16);
    let x = rng.tensor(&[2, 3, 8], -1.0, 1.0);
    let m = rng.tensor(&[2, 4, 8], -1.0, 1.0);
    let x2 = x.clone().reshape(vec![6, 8]).expect("reshape");
    let other = rng.tensor(&[2, 3, 9], -1.0, 1.0);
    let table = rng.tensor(&[4, 8], -1.0, 1.0);
    let cases = [
        ("add of different shapes", add(&e, &x, &other).err()),
        ("mul of different shapes", mul(&e, &x, &other).err()),
        (
            "gated residual row out of range",
            gated_residual(&e, &x, &x, &m, 4).err(),
        ),
        (
            "gated residual of rank 2",
            gated_residual(&e, &x2, &x2, &m, 0).err(),
        ),
        (
            "gate table of another width",
            gated_residual(&e, &other, &other, &m, 0).err(),
        ),
        (
            "modulation emb width",
            modulation(&e, &table, &rng.tensor(&[2, 9], -1.0, 1.0)).err(),
        ),
        (
            "fused norm row out of range",
            residual_norm(&e, &x, &x, None, &m, (0, 4), 1e-6).err(),
        ),
        (
            "fused gate row out of range",
            residual_norm(&e, &x, &x, Some((&m, 9)), &m, (0, 1), 1e-6).err(),
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
fn elementwise_plans_vectorise_only_aligned_buffers() {
    let buffers = |a| PointwiseBuffers {
        y: 4096,
        a,
        b: 8192,
    };
    let aligned = plan::add(&[2, 37], &[2, 37], 2, buffers(1024)).expect("plan");
    assert_eq!(aligned.params.aligned, 1);
    assert_eq!(aligned.geometry.grid, [1, 1, 1]); // 74 bf16 = 10 packs of 8
    let unaligned = plan::add(&[2, 37], &[2, 37], 2, buffers(1026)).expect("plan");
    assert_eq!(unaligned.params.aligned, 0);
    let empty = plan::add(&[0, 5], &[0, 5], 4, buffers(0)).expect("plan");
    assert!(empty.geometry.is_empty());
    let empty = HostTensor::zeros(vec![0, 5]);
    let got = add(&EmuEngine::new(StorageDtype::F16), &empty, &empty).expect("empty launch");
    assert_eq!(got.shape(), &[0, 5]);
}

#[test]
fn elementwise_ptx_has_entries() {
    let mut entries = Vec::new();
    for op in Family::Elementwise.ops() {
        for dtype in ["f32", "bf16", "f16"] {
            entries.push(format!("{op}_{dtype}"));
        }
    }
    check_ptx(
        Family::Elementwise,
        &entries.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

/// An element the kernel leaves unwritten keeps the emu engine's NaN poison and must fail every comparison.
#[test]
fn elementwise_worst_ratio_flags_poison() {
    let (ratio, at) = worst_ratio(&[1.0, f32::NAN], &[1.0, 2.0], |_| 1.0);
    assert!(ratio.is_nan() && at == 1);
}

/// The CPU engine's fused residual + norm (each row normalised in the same pass, rows over the cores) gives the same
/// bits as its two ops one after the other, with and without a gate, including more rows than one core's share.
#[test]
fn cpu_fused_residual_norm_is_its_two_ops_bit_for_bit() {
    let e = CpuEngine;
    let mut rng = Rng(16);
    for (i, &(b, n, d, k)) in RESIDUAL_SHAPES
        .iter()
        .chain(&[(2, 300, 1152, 6)])
        .enumerate()
    {
        let x = rng.tensor(&[b, n, d], -3.0, 3.0);
        let r = rng.tensor(&[b, n, d], -3.0, 3.0);
        let gate_table = rng.tensor(&[b, k, d], -1.5, 1.5);
        let m = rng.tensor(&[b, k, d], -1.5, 1.5);
        let (gate, rows) = if i % 2 == 0 {
            (Some((&gate_table, 5)), (0, 1))
        } else {
            (None, (3, 4))
        };
        let (x_out, z) = e
            .residual_layer_norm_modulate(&x, &r, gate, &m, rows, 1e-6)
            .expect("fused");
        let x_want = match gate {
            Some((g, row)) => cpu::gated_residual(&x, &r, g, row),
            None => cpu::add(&x, &r),
        }
        .expect("residual");
        let z_want =
            cpu_norm::layer_norm_modulate(&x_want, &m, rows.0, rows.1, 1e-6).expect("norm");
        assert!(
            x_out == x_want,
            "{:?} gate {}: x' differs",
            (b, n, d),
            gate.is_some()
        );
        assert!(
            z == z_want,
            "{:?} gate {}: z differs",
            (b, n, d),
            gate.is_some()
        );
    }
}
