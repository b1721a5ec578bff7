//! kernels/attention.cu against the CPU reference `cpu::attention::attention` (f32 GEMMs, softmax sums in f64) on
//! inputs first rounded to the storage dtype; one check body runs on the emulation engine (f32, bf16, f16) and on
//! the CUDA engine (bf16, f16: `attention_on_cuda`).
//!
//! Tolerance, per output element `out[n, i]` of a head, with `U` = 2^-24, exact softmax weights `p_m` (f64) and
//! `ŝ` the largest score. The kernel's f32 score `s_m` is off by at most `ε_m = (d+2)·U·(Σ_c|q_c·k_mc|/√d + |bias_m|)`
//! (a d-term dot product, the scale, the bias add); `s_m − max` adds `U·(|s_m| + |ŝ|)` and expf 2 ulp (`4U`), and
//! a relative error δ_m of the weight `p_m` moves the output by `p_m·δ_m·|v_mi − out_i|`. The running rescale
//! multiplies the sum and the accumulators by the same f32 factor, so it only adds a rounding per key tile to each.
//! The P·V and row sums are chains of at most L + tiles (resp. L/8 + tiles + 3) f32 additions of positive-weight
//! terms. So, with T = ⌈L/tile⌉:
//!   `|Δout_i| ≤ Σ_m p_m·(ε_m + U·(|s_m| + |ŝ|) + 6U)·|v_mi − out_i| + (L + 2T + 4)·U·Σ_m p_m·|v_mi|
//!               + (L/8 + T + 8)·U·|out_i|`,
//! doubled for second-order terms; the reference (f32 GEMMs on query tiles, sums in f64) is off from the exact value by
//! a bound of the same form with shorter chains (no key tiles), at most this one, so the tolerance is twice it,
//! plus half an ulp of the storage dtype at the reference (0 for f32). Masked keys
//! (bias −10000) have p_m = 0, so their large absolute score error does not count, as in the kernel.
//!
//! `attention_tolerance_catches_wrong_kernels` shows that typical mistakes (bias ignored or of the wrong batch item,
//! scale 1/d, a key dropped at a tile boundary or at the end, the next head's keys) fail this bound in bf16.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, check_ptx, rounded, ulp, Rng, DTYPES, U};
use engine_check::{on_cuda, run_op, within};
use sana::cpu::attention as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::launch::attention::HeadDimClass;
use sana::{Error, HostTensor};

/// `attention` on `e` through the `Engine` API.
fn attention<E: Engine>(
    e: &E,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    bias: &HostTensor,
    heads: usize,
) -> sana::Result<HostTensor> {
    run_op(e, &[q, k, v, bias], |t| {
        e.attention(&t[0], &t[1], &t[2], &t[3], heads)
    })
}

/// diffusers' additive bias for a masked key (docs/numerics/transformer.md §9.1).
const MASKED: f32 = -10000.0;

struct Case {
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    bias: HostTensor,
    heads: usize,
}

/// How the key bias of a case is made.
#[derive(Clone, Copy, Debug)]
enum Bias {
    /// Keys `[valid[b], L)` of batch item b are padding (−10000), the rest 0; 0 valid keys masks the whole row.
    Mask(&'static [usize]),
    /// Uniform in [−2, 2): a general additive bias.
    Random,
}

/// (B, N, L, heads, d, bias).
type Shape = (usize, usize, usize, usize, usize, Bias);

fn random_case(rng: &mut Rng, (b, n, l, heads, d, bias): Shape, dtype: StorageDtype) -> Case {
    let bias = match bias {
        Bias::Mask(valid) => {
            let data = (0..b * l)
                .map(|i| if i % l < valid[i / l] { 0.0 } else { MASKED })
                .collect();
            HostTensor::new(vec![b, l], data).expect("shape")
        }
        Bias::Random => rng.tensor(&[b, l], -2.0, 2.0),
    };
    Case {
        // Scores of order ±3 after the 1/√d scale, so the softmax is neither flat nor one-hot.
        q: rounded(&rng.tensor(&[b, n, heads * d], -1.5, 1.5), dtype),
        k: rounded(&rng.tensor(&[b, l, heads * d], -1.5, 1.5), dtype),
        v: rounded(&rng.tensor(&[b, l, heads * d], -1.0, 1.0), dtype),
        bias: rounded(&bias, dtype),
        heads,
    }
}

/// The per-element tolerance described in the file header.
fn tolerance(c: &Case, dtype: StorageDtype, want: &[f32]) -> Vec<f32> {
    let (b, n, width) = emu_check::dims3(&c.q);
    let l = c.k.shape()[1];
    let d = width / c.heads;
    let class = HeadDimClass::for_head_dim(d).expect("class");
    let tiles = l.div_ceil(class.key_tile()) as f64;
    let (u, scale) = (f64::from(U), 1.0 / (d as f64).sqrt());
    let mut tol = vec![0.0f32; want.len()];
    for bi in 0..b {
        for ni in 0..n {
            for h in 0..c.heads {
                let qh = &c.q.data()[(bi * n + ni) * width + h * d..][..d];
                let key = |m: usize| &c.k.data()[(bi * l + m) * width + h * d..][..d];
                let value =
                    |m: usize, i: usize| f64::from(c.v.data()[(bi * l + m) * width + h * d + i]);
                let bias = |m: usize| f64::from(c.bias.data()[bi * l + m]);
                let (mut s, mut eps) = (vec![0.0f64; l], vec![0.0f64; l]);
                for m in 0..l {
                    let (mut dot, mut abs) = (0.0f64, 0.0f64);
                    for (&a, &k) in qh.iter().zip(key(m)) {
                        dot += f64::from(a) * f64::from(k);
                        abs += (f64::from(a) * f64::from(k)).abs();
                    }
                    s[m] = dot * scale + bias(m);
                    eps[m] = (d as f64 + 2.0) * u * (abs * scale + bias(m).abs());
                }
                let smax = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut p: Vec<f64> = s.iter().map(|&x| (x - smax).exp()).collect();
                let total: f64 = p.iter().sum();
                p.iter_mut().for_each(|x| *x /= total);
                let row = (bi * n + ni) * width + h * d;
                for i in 0..d {
                    let out = f64::from(want[row + i]);
                    let (mut weights, mut sums) = (0.0f64, 0.0f64);
                    for m in 0..l {
                        let delta = eps[m] + u * (s[m].abs() + smax.abs()) + 6.0 * u;
                        weights += p[m] * delta * (value(m, i) - out).abs();
                        sums += p[m] * value(m, i).abs();
                    }
                    let f32_err = weights
                        + (l as f64 + 2.0 * tiles + 4.0) * u * sums
                        + (l as f64 / 8.0 + tiles + 8.0) * u * out.abs();
                    tol[row + i] = 0.5 * ulp(dtype, want[row + i]) + (4.0 * f32_err) as f32;
                }
            }
        }
    }
    tol
}

/// One query and key; N not a multiple of the 32-query tile with Sana-0.6B's d = 72 and L = 300 (9 full key tiles
/// and 12); a 3×5 grid with Sana-1.6B's d = 112, L = 299 and a general bias; d = 128 (16-key tiles, L = 17 leaves a
/// tile of one key) with a fully masked batch item; d = 50 (not a multiple of 8); the cross-attention of Sana-1.6B
/// (20 heads × 112, D = 2240) and of Sana-0.6B (16 heads × 72, D = 1152) over Gemma's 300 tokens.
const SHAPES: [Shape; 7] = [
    (1, 1, 1, 1, 32, Bias::Mask(&[1])),
    (2, 37, 300, 2, 72, Bias::Mask(&[7, 300])),
    (2, 15, 299, 2, 112, Bias::Random),
    (2, 33, 17, 1, 128, Bias::Mask(&[0, 16])),
    (1, 20, 40, 3, 50, Bias::Mask(&[33])),
    (1, 24, 300, 20, 112, Bias::Mask(&[120])),
    (1, 12, 300, 16, 72, Bias::Mask(&[77])),
];

fn check_attention<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(31);
    let mut worst = 0.0f32;
    for shape in SHAPES {
        let c = random_case(&mut rng, shape, dtype);
        let got = attention(e, &c.q, &c.k, &c.v, &c.bias, c.heads).expect("engine");
        let want = cpu::attention(&c.q, &c.k, &c.v, &c.bias, c.heads).expect("cpu");
        let tol = tolerance(&c, dtype, want.data());
        worst = worst.max(within(e, dtype, shape, &got, &want, |i| tol[i]));
    }
    eprintln!(
        "{} attention {dtype:?}: worst error {worst:.3} of the tolerance",
        e.name()
    );
}

#[test]
fn attention_emu_matches_cpu() {
    for dtype in DTYPES {
        check_attention(&EmuEngine::new(dtype), dtype);
    }
}

/// The check on the CUDA engine (a GPU, or CI's software device).
#[test]
fn attention_on_cuda() {
    on_cuda("attention_on_cuda", check_attention);
}

/// Each wrong variant is what a kernel with that mistake computes, expressed through the reference on modified
/// inputs; the real kernel's bf16 output must be outside the tolerance around it.
#[test]
fn attention_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let (b, n, l, heads, d) = (2, 37, 300, 2, 72);
    let c = random_case(
        &mut Rng(32),
        (b, n, l, heads, d, Bias::Mask(&[100, 300])),
        dtype,
    );
    let got = attention(&EmuEngine::new(dtype), &c.q, &c.k, &c.v, &c.bias, heads).expect("emu");
    let want = cpu::attention(&c.q, &c.k, &c.v, &c.bias, heads).expect("cpu");
    let tol = tolerance(&c, dtype, want.data());
    let width = heads * d;

    // A key dropped from the softmax of batch item 1 (all 300 keys valid): its bias pushed to −∞ in effect.
    let drop_key = |m: usize| {
        let mut bias = c.bias.clone();
        bias.data_mut()[l + m] = -1e30;
        bias
    };
    let mut other_batch = c.bias.clone();
    other_batch.data_mut().rotate_left(l);
    let q_over_sqrt_d = HostTensor::new(
        c.q.shape().to_vec(),
        c.q.data().iter().map(|x| x / (d as f32).sqrt()).collect(),
    )
    .expect("shape");
    let next_head = |t: &HostTensor| {
        let mut t = t.clone();
        for row in t.data_mut().chunks_mut(width) {
            row.rotate_left(d);
        }
        t
    };
    let wrong = [
        (
            "bias ignored",
            cpu::attention(&c.q, &c.k, &c.v, &HostTensor::zeros(vec![b, l]), heads),
        ),
        (
            "bias of the other batch item",
            cpu::attention(&c.q, &c.k, &c.v, &other_batch, heads),
        ),
        (
            "scale 1/d instead of 1/√d",
            cpu::attention(&q_over_sqrt_d, &c.k, &c.v, &c.bias, heads),
        ),
        (
            "first key of the second tile dropped",
            cpu::attention(&c.q, &c.k, &c.v, &drop_key(32), heads),
        ),
        (
            "last key dropped",
            cpu::attention(&c.q, &c.k, &c.v, &drop_key(l - 1), heads),
        ),
        (
            "keys and values of the next head",
            cpu::attention(&c.q, &next_head(&c.k), &next_head(&c.v), &c.bias, heads),
        ),
    ];
    for (what, wrong) in wrong {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), |i| tol[i]);
    }
}

#[test]
fn attention_shape_errors() {
    let mut rng = Rng(33);
    let e = EmuEngine::new(StorageDtype::Bf16);
    let q = rng.tensor(&[2, 5, 64], -1.0, 1.0);
    let k = rng.tensor(&[2, 7, 64], -1.0, 1.0);
    let bias = rng.tensor(&[2, 7], -1.0, 1.0);
    let wide = rng.tensor(&[1, 2, 130], -1.0, 1.0);
    let wide_k = rng.tensor(&[1, 3, 130], -1.0, 1.0);
    let wide_bias = rng.tensor(&[1, 3], -1.0, 1.0);
    let no_keys = HostTensor::zeros(vec![2, 0, 64]);
    let cases = [
        (
            "head dimension 130",
            attention(&e, &wide, &wide_k, &wide_k, &wide_bias, 1).err(),
        ),
        (
            "width not divisible by heads",
            attention(&e, &q, &k, &k, &bias, 3).err(),
        ),
        (
            "v of another length",
            attention(&e, &q, &k, &q, &bias, 2).err(),
        ),
        (
            "bias of another length",
            attention(&e, &q, &k, &k, &rng.tensor(&[2, 6], -1.0, 1.0), 2).err(),
        ),
        (
            "no keys",
            attention(
                &e,
                &q,
                &no_keys,
                &no_keys,
                &HostTensor::zeros(vec![2, 0]),
                2,
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
    let empty = HostTensor::zeros(vec![2, 0, 64]);
    let got = attention(&e, &empty, &k, &k, &bias, 2).expect("empty launch");
    assert_eq!(got.shape(), &[2, 0, 64]);
}

#[test]
fn attention_ptx_has_entries() {
    let mut entries = Vec::new();
    for class in ["d32", "d72", "d112", "d128"] {
        for dtype in ["f32", "bf16", "f16"] {
            entries.push(format!("attention_{class}_{dtype}"));
        }
    }
    check_ptx(
        Family::Attention,
        &entries.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}
