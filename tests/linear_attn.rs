//! kernels/linear_attn.cu against the CPU reference `cpu::linear_attn::linear_attention` (f32 GEMMs over token
//! tiles) on inputs first rounded to the storage dtype; one check body runs on the emulation engine (f32, bf16, f16)
//! and on the CUDA engine (bf16, f16: `linear_attn_on_cuda`).
//!
//! Tolerance, per output element `out_n[i]` of a head, with `U` = 2^-24 and all of relu(q), relu(k) ≥ 0:
//! - every f32 sum in the kernels is a chain of at most `m = ⌈chunk_tokens/2⌉` (a thread's tokens) `+ 1` (the two
//!   thread groups) `+ chunks` (the reduction) `+ 32 + 8` (the contraction with q, the products) roundings, so the
//!   numerator has an error ≤ `m·U·A_i` with `A_i = Σ_j (Σ_n |v_n[i]|·relu(k_n[j]))·relu(q[j])`, and the (cancellation-
//!   free) denominator `den = ks·relu(q) + eps` a relative error ≤ `m·U`; the quotient adds one rounding:
//!   `|Δout| ≤ m·U·(A_i/den + 2·|out|)`;
//! - plus the reference's own error: its sums are chains of at most `N + d` roundings (the tokens, the contraction
//!   with q), so `|Δout_ref| ≤ (N + d + 1)·U·(A_i/den + |out|)` (tests/cpu_attention_oracle.rs checks this bound
//!   against f64 loops);
//! - plus half an ulp of the storage dtype at the reference (round to nearest; 0 for f32).
//!
//! `chunk_tokens` and `chunks` are read from the launch plan for each shape.
//!
//! `linear_attn_tolerance_catches_wrong_kernels` shows that typical mistakes (a token dropped at a chunk or tile
//! boundary, the wrong batch item's or head's state, swapped operands, ReLU on v) fail this bound in bf16.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, assert_within, check_ptx, rounded, ulp, Rng, DTYPES, U};
use engine_check::{on_cuda, run_op, within};
use sana::cpu::linear_attn as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::launch::linear_attn::{self as plan, LinearAttentionBuffers, HEAD_DIM};
use sana::{Error, HostTensor};

const EPS: f32 = 1e-15;

/// `linear_attention` on `e` through the `Engine` API.
fn linear_attention<E: Engine>(
    e: &E,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    heads: usize,
    eps: f32,
) -> sana::Result<HostTensor> {
    run_op(e, &[q, k, v], |t| {
        e.linear_attention(&t[0], &t[1], &t[2], heads, eps)
    })
}

/// The per-element tolerance described in the file header, for inputs already rounded to storage.
fn tolerance(c: &Case, eps: f32, dtype: StorageDtype, want: &[f32]) -> Vec<f32> {
    let (q, k, v, heads) = (&c.q, &c.k, &c.v, c.heads);
    let (b, n, width) = emu_check::dims3(q);
    let d = HEAD_DIM;
    let buffers = LinearAttentionBuffers {
        out: 0,
        q: 0,
        k: 0,
        v: 0,
        partials: 0,
        state: 0,
    };
    let p = plan::linear_attention(q.shape(), k.shape(), v.shape(), heads, eps, buffers)
        .expect("plan")
        .state
        .params;
    let m = (p.chunk_tokens.div_ceil(2) + 1 + p.chunks + 40) as f64;
    let relu = |x: f32| f64::from(x.max(0.0));
    let mut tol = vec![0.0f32; want.len()];
    for bi in 0..b {
        for h in 0..heads {
            // |V|ᵀ·relu(K) and ks for this head.
            let mut abs_kv = vec![0.0f64; d * d];
            let mut ks = vec![0.0f64; d];
            for ni in 0..n {
                let base = (bi * n + ni) * width + h * d;
                for j in 0..d {
                    let kj = relu(k.data()[base + j]);
                    ks[j] += kj;
                    for i in 0..d {
                        abs_kv[i * d + j] += f64::from(v.data()[base + i].abs()) * kj;
                    }
                }
            }
            for ni in 0..n {
                let base = (bi * n + ni) * width + h * d;
                let qr: Vec<f64> = (0..d).map(|j| relu(q.data()[base + j])).collect();
                let den: f64 = (0..d).map(|j| ks[j] * qr[j]).sum::<f64>() + f64::from(eps);
                for i in 0..d {
                    let a: f64 = (0..d).map(|j| abs_kv[i * d + j] * qr[j]).sum();
                    let out = f64::from(want[base + i]);
                    let f32_err = m * f64::from(U) * (a / den + 2.0 * out.abs())
                        + (n + d + 1) as f64 * f64::from(U) * (a / den + out.abs());
                    tol[base + i] = 0.5 * ulp(dtype, want[base + i]) + f32_err as f32;
                }
            }
        }
    }
    tol
}

struct Case {
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    heads: usize,
}

fn random_case(rng: &mut Rng, (b, n, heads): (usize, usize, usize), dtype: StorageDtype) -> Case {
    let shape = [b, n, heads * HEAD_DIM];
    let mut q = rng.tensor(&shape, -1.0, 1.0);
    let mut k = rng.tensor(&shape, -1.0, 1.0);
    // A token whose query is all negative (denominator 0: out = 0/eps = 0) and, with two heads or more, a head
    // whose keys are all negative (an all-zero state).
    for x in &mut q.data_mut()[..HEAD_DIM] {
        *x = -x.abs();
    }
    if heads > 1 {
        for row in k.data_mut().chunks_mut(heads * HEAD_DIM) {
            for x in &mut row[HEAD_DIM..2 * HEAD_DIM] {
                *x = -x.abs();
            }
        }
    }
    Case {
        q: rounded(&q, dtype),
        k: rounded(&k, dtype),
        v: rounded(&rng.tensor(&shape, -1.0, 1.0), dtype),
        heads,
    }
}

/// (B, N, heads): one token; a 3×5 grid; exactly two chunks of 64; five chunks ending in a partial tile of 12 (N =
/// 300); sixteen chunks (N = 1000); Sana-1.6B's 70 heads (D = 2240) and Sana-0.6B's 36 (D = 1152).
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (2, 15, 2),
    (1, 128, 1),
    (2, 300, 2),
    (1, 1000, 1),
    (1, 9, 70),
    (2, 20, 36),
];

fn check_linear_attention<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(21);
    let mut worst = 0.0f32;
    for shape in SHAPES {
        let c = random_case(&mut rng, shape, dtype);
        let got = linear_attention(e, &c.q, &c.k, &c.v, c.heads, EPS).expect("engine");
        let want = cpu::linear_attention(&c.q, &c.k, &c.v, c.heads, EPS).expect("cpu");
        let tol = tolerance(&c, EPS, dtype, want.data());
        worst = worst.max(within(e, dtype, shape, &got, &want, |i| tol[i]));
        assert!(
            got.data()[..HEAD_DIM].iter().all(|&x| x == 0.0),
            "{} {dtype:?} {shape:?}: a query with no positive feature must give 0",
            e.name()
        );
    }
    eprintln!(
        "{} linear_attn {dtype:?}: worst error {worst:.3} of the tolerance",
        e.name()
    );
}

#[test]
fn linear_attn_emu_matches_cpu() {
    for dtype in DTYPES {
        check_linear_attention(&EmuEngine::new(dtype), dtype);
    }
}

/// The checks on the CUDA engine (a GPU, or CI's software device).
#[test]
fn linear_attn_on_cuda() {
    on_cuda("linear_attn_on_cuda", |e, dtype| {
        check_linear_attention(e, dtype);
        check_eps(e, dtype);
    });
}

/// Each wrong variant is what a kernel with that mistake computes, expressed through the reference on modified
/// inputs; the real kernel's bf16 output must be outside the tolerance around it.
#[test]
fn linear_attn_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let (b, n, heads) = (2, 300, 2);
    let c = random_case(&mut Rng(22), (b, n, heads), dtype);
    let got = linear_attention(&EmuEngine::new(dtype), &c.q, &c.k, &c.v, heads, EPS).expect("emu");
    let want = cpu::linear_attention(&c.q, &c.k, &c.v, heads, EPS).expect("cpu");
    let tol = tolerance(&c, EPS, dtype, want.data());
    let width = heads * HEAD_DIM;

    // A token missing from the state: its key zeroed (relu(0) adds nothing), its query still answered.
    let drop_token = |t: usize| {
        let mut k = c.k.clone();
        for bi in 0..b {
            k.data_mut()[(bi * n + t) * width..][..width].fill(0.0);
        }
        k
    };
    let mut other_batch = (c.k.clone(), c.v.clone());
    other_batch.0.data_mut().rotate_left(n * width);
    other_batch.1.data_mut().rotate_left(n * width);
    let swap_heads = |t: &HostTensor| {
        let mut t = t.clone();
        for row in t.data_mut().chunks_mut(width) {
            row.rotate_left(HEAD_DIM);
        }
        t
    };
    let relu_v = HostTensor::new(
        c.v.shape().to_vec(),
        c.v.data().iter().map(|x| x.max(0.0)).collect(),
    )
    .expect("shape");
    let wrong = [
        (
            "first token of the second chunk dropped",
            cpu::linear_attention(&c.q, &drop_token(64), &c.v, heads, EPS),
        ),
        (
            "last token (partial tile) dropped",
            cpu::linear_attention(&c.q, &drop_token(n - 1), &c.v, heads, EPS),
        ),
        (
            "state of the other batch item",
            cpu::linear_attention(&c.q, &other_batch.0, &other_batch.1, heads, EPS),
        ),
        (
            "state of the next head",
            cpu::linear_attention(&c.q, &swap_heads(&c.k), &swap_heads(&c.v), heads, EPS),
        ),
        (
            "q and k swapped",
            cpu::linear_attention(&c.k, &c.q, &c.v, heads, EPS),
        ),
        (
            "ReLU applied to v",
            cpu::linear_attention(&c.q, &c.k, &relu_v, heads, EPS),
        ),
    ];
    for (what, wrong) in wrong {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), |i| tol[i]);
    }
}

/// eps enters after both contractions: with small queries (denominators of order 1) and eps = 1 it halves the
/// output, so the parameter must reach the kernel and be added where upstream adds it.
fn check_eps<E: Engine>(e: &E, dtype: StorageDtype) {
    let eps = 1.0;
    let mut c = random_case(&mut Rng(24), (2, 15, 2), dtype);
    c.q = rounded(
        &HostTensor::new(
            c.q.shape().to_vec(),
            c.q.data().iter().map(|x| x * 0.02).collect(),
        )
        .expect("shape"),
        dtype,
    );
    let got = linear_attention(e, &c.q, &c.k, &c.v, c.heads, eps).expect("engine");
    let want = cpu::linear_attention(&c.q, &c.k, &c.v, c.heads, eps).expect("cpu");
    let tol = tolerance(&c, eps, dtype, want.data());
    assert_within(
        &format!("{} {dtype:?} eps = 1", e.name()),
        got.data(),
        want.data(),
        |i| tol[i],
    );
    let no_eps = cpu::linear_attention(&c.q, &c.k, &c.v, c.heads, EPS).expect("cpu");
    assert_caught("eps = 1 ignored", got.data(), no_eps.data(), |i| tol[i]);
}

#[test]
fn linear_attn_eps_is_added_to_the_denominator() {
    for dtype in DTYPES {
        check_eps(&EmuEngine::new(dtype), dtype);
    }
}

#[test]
fn linear_attn_shape_errors() {
    let mut rng = Rng(23);
    let dtype = StorageDtype::F16;
    let e = EmuEngine::new(dtype);
    let q = rng.tensor(&[2, 5, 64], -1.0, 1.0);
    let other = rng.tensor(&[2, 6, 64], -1.0, 1.0);
    // The kernels take head dimension 32 only; the engine runs other widths (the tiny test VAE's 8) on the
    // reference, rounded to storage.
    let head48 = rounded(&rng.tensor(&[1, 3, 96], -1.0, 1.0), dtype);
    assert_eq!(
        linear_attention(&e, &head48, &head48, &head48, 2, EPS).expect("reference path"),
        rounded(
            &cpu::linear_attention(&head48, &head48, &head48, 2, EPS).expect("cpu"),
            dtype
        )
    );
    let cases = [
        ("zero heads", linear_attention(&e, &q, &q, &q, 0, EPS).err()),
        (
            "k of another length",
            linear_attention(&e, &q, &other, &q, 2, EPS).err(),
        ),
        (
            "v of another length",
            linear_attention(&e, &q, &q, &other, 2, EPS).err(),
        ),
        (
            "q of rank 2",
            linear_attention(
                &e,
                &q.clone().reshape(vec![10, 64]).expect("reshape"),
                &q,
                &q,
                2,
                EPS,
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

#[test]
fn linear_attn_plan_chunks() {
    let buffers = LinearAttentionBuffers {
        out: 0,
        q: 0,
        k: 0,
        v: 0,
        partials: 0,
        state: 0,
    };
    let p = |n: usize| {
        let s = [2, n, 70 * HEAD_DIM];
        plan::linear_attention(&s, &s, &s, 70, EPS, buffers).expect("plan")
    };
    // 1024²: 1024 tokens in 16 chunks of 64; 4096²: 16384 tokens in 32 chunks of 512.
    let p1k = p(1024);
    assert_eq!(
        (p1k.state.params.chunks, p1k.state.params.chunk_tokens),
        (16, 64)
    );
    assert_eq!(p1k.state.geometry.grid, [16, 70, 2]);
    assert_eq!(p1k.apply.geometry.grid, [16, 70, 2]);
    let p4k = p(16384);
    assert_eq!(
        (p4k.state.params.chunks, p4k.state.params.chunk_tokens),
        (32, 512)
    );
    assert!(p(0).state.geometry.is_empty() && p(0).apply.geometry.is_empty());
    let misaligned = LinearAttentionBuffers {
        partials: 8,
        ..buffers
    };
    let s = [1, 4, 32];
    assert!(matches!(
        plan::linear_attention(&s, &s, &s, 1, EPS, misaligned),
        Err(Error::Shape { .. })
    ));
    let empty = HostTensor::zeros(vec![2, 0, 64]);
    let got = linear_attention(
        &EmuEngine::new(StorageDtype::Bf16),
        &empty,
        &empty,
        &empty,
        2,
        EPS,
    )
    .expect("empty launch");
    assert_eq!(got.shape(), &[2, 0, 64]);
}

#[test]
fn linear_attn_ptx_has_entries() {
    let mut entries = vec!["linear_attn_reduce_f32".to_string()];
    for op in ["linear_attn_state", "linear_attn_apply"] {
        for dtype in ["f32", "bf16", "f16"] {
            entries.push(format!("{op}_{dtype}"));
        }
    }
    check_ptx(
        Family::LinearAttn,
        &entries.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}
