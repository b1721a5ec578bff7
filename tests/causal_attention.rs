//! kernels/causal_attention.cu against the CPU reference `cpu::causal_attention::causal_attention` (f32 GEMMs,
//! softmax sums in f64) on inputs first rounded to the storage dtype; one check body runs on the emulation engine
//! (f32, bf16, f16) and on the CUDA engine (bf16, f16: `causal_attention_on_cuda`).
//!
//! Tolerance, per output element `out[i, c]` of a head, with `U` = 2^-24, `p_m` the exact softmax weights (f64) over
//! the keys query `i` sees and `ŝ` their largest score; the bound of tests/attention.rs with the soft-cap added. The
//! kernel's f32 score is off by at most `ε_m = (d+2)·U·scale·Σ_c|q_c·k_mc|` (a d-term dot product and the scale);
//! the cap `c·tanh(s/c)` has slope ≤ 1, so it passes that error on and adds the division's rounding `U·|s|`, tanhf's
//! 2 ulp and the product's rounding, `5U·|s'|` for the capped score `s'`. Then, as for the bias attention: `s_m −
//! max` adds `U·(|s_m| + |ŝ|)` and expf 2 ulp (`4U`), a relative error δ_m of `p_m` moves the output by
//! `p_m·δ_m·|v_mc − out_c|`, the rescaling adds a rounding per key tile, and P·V and the row sums are chains of at
//! most L + 2T (resp. L/8 + T + 3) f32 additions of positive terms, T the key tiles visited:
//!   `|Δout_c| ≤ Σ_m p_m·(ε_m + U·(|s_m| + |ŝ|) + 6U)·|v_mc − out_c| + (L + 2T + 4)·U·Σ_m p_m·|v_mc|
//!               + (L/8 + T + 8)·U·|out_c|`,
//! doubled for second-order terms; the reference (f32 GEMMs on query tiles, sums in f64) is off from the exact value by
//! a bound of the same form with shorter chains (no key tiles), at most this one, so the tolerance is twice it,
//! plus half an ulp of the storage dtype at the reference (0 for f32). A query that
//! sees no key averages all L values (p_m = 1/L, no score error): only the summation terms remain.
//!
//! `causal_attention_tolerance_catches_wrong_kernels` shows that typical mistakes (the window off by one either way,
//! the GQA head mapping `h % kv_heads` instead of `h / group`, the soft-cap dropped, the padding mask ignored, the
//! queries that see no key left at zero instead of the mean, the window ending one key early) fail this bound in
//! bf16.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, check_ptx, rounded, ulp, Rng, DTYPES, U};
use engine_check::{on_cuda, run_op, within};
use sana::cpu::causal_attention as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{CausalAttention, Engine, StorageDtype};
use sana::launch::causal_attention::HeadDimClass;
use sana::{Error, HostTensor};

/// `causal_attention` on `e` through the `Engine` API.
fn causal_attention<E: Engine>(
    e: &E,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    mask: &HostTensor,
    p: &CausalAttention,
) -> sana::Result<HostTensor> {
    run_op(e, &[q, k, v, mask], |t| {
        e.causal_attention(&t[0], &t[1], &t[2], &t[3], p)
    })
}

/// How the key mask of a case is made.
#[derive(Clone, Copy, Debug)]
enum Mask {
    /// Keys `[valid[b], L)` of batch item b are padding: queries past them see no key once the window has moved on.
    Right(&'static [usize]),
    /// Keys `[0, L − valid[b])` are padding: the first queries see no key.
    Left(&'static [usize]),
    /// Each key padding with probability 1/4 (never key 0, so that no query is left empty by chance alone).
    Holes,
}

struct Case {
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    mask: HostTensor,
    p: CausalAttention,
}

/// (B, L, heads, kv_heads, d, window, softcap, mask).
type Shape = (
    usize,
    usize,
    usize,
    usize,
    usize,
    Option<usize>,
    Option<f32>,
    Mask,
);

fn random_case(
    rng: &mut Rng,
    (b, l, heads, kv_heads, d, window, softcap, mask): Shape,
    dtype: StorageDtype,
) -> Case {
    let mut data = vec![1.0f32; b * l];
    for (bi, row) in data.chunks_mut(l.max(1)).enumerate() {
        for (j, m) in row.iter_mut().enumerate() {
            *m = match mask {
                Mask::Right(valid) => f32::from(u8::from(j < valid[bi])),
                Mask::Left(valid) => f32::from(u8::from(j >= l - valid[bi])),
                Mask::Holes => f32::from(u8::from(j == 0 || !rng.next_u64().is_multiple_of(4))),
            };
        }
    }
    Case {
        // Scores of order ±3 after the 1/√d scale, so the softmax is neither flat nor one-hot (and a cap of 2 bites).
        q: rounded(&rng.tensor(&[b, l, heads * d], -1.5, 1.5), dtype),
        k: rounded(&rng.tensor(&[b, l, kv_heads * d], -1.5, 1.5), dtype),
        v: rounded(&rng.tensor(&[b, l, kv_heads * d], -1.0, 1.0), dtype),
        mask: HostTensor::new(vec![b, l], data).expect("shape"),
        p: CausalAttention {
            heads,
            kv_heads,
            scale: (1.0 / (d as f64).sqrt()) as f32,
            softcap,
            window,
        },
    }
}

/// The keys query `i` of batch item `bi` sees (the reference's rule); empty when it sees none.
fn visible(c: &Case, bi: usize, i: usize) -> Vec<usize> {
    let l = c.mask.shape()[1];
    let w = c.p.window.unwrap_or(usize::MAX);
    (0..=i)
        .filter(|&j| c.mask.data()[bi * l + j] != 0.0 && i - j < w)
        .collect()
}

/// The per-element tolerance described in the file header.
fn tolerance(c: &Case, dtype: StorageDtype, want: &[f32]) -> Vec<f32> {
    let (b, l, width) = emu_check::dims3(&c.q);
    let d = width / c.p.heads;
    let (kv_width, group) = (c.p.kv_heads * d, c.p.heads / c.p.kv_heads);
    let class = HeadDimClass::for_head_dim(d).expect("class");
    let tiles = (l.div_ceil(class.key_tile()) + 1) as f64;
    let (u, scale) = (f64::from(U), f64::from(c.p.scale));
    let lf = l as f64;
    let mut tol = vec![0.0f32; want.len()];
    for bi in 0..b {
        for i in 0..l {
            let keys = visible(c, bi, i);
            for h in 0..c.p.heads {
                let kvh = h / group;
                let qh = &c.q.data()[(bi * l + i) * width + h * d..][..d];
                let value = |m: usize, x: usize| {
                    f64::from(c.v.data()[(bi * l + m) * kv_width + kvh * d + x])
                };
                // (key, score, score error) over the keys that get weight; all keys, score 0, when none is seen.
                let scored: Vec<(usize, f64, f64)> = if keys.is_empty() {
                    (0..l).map(|m| (m, 0.0, 0.0)).collect()
                } else {
                    keys.iter()
                        .map(|&m| {
                            let km = &c.k.data()[(bi * l + m) * kv_width + kvh * d..][..d];
                            let (mut dot, mut abs) = (0.0f64, 0.0f64);
                            for (&a, &kk) in qh.iter().zip(km) {
                                dot += f64::from(a) * f64::from(kk);
                                abs += (f64::from(a) * f64::from(kk)).abs();
                            }
                            let raw = dot * scale;
                            let mut eps = (d as f64 + 2.0) * u * abs * scale;
                            let s = match c.p.softcap {
                                Some(cap) => {
                                    let cap = f64::from(cap);
                                    let s = (raw / cap).tanh() * cap;
                                    eps += u * raw.abs() + 5.0 * u * s.abs();
                                    s
                                }
                                None => raw,
                            };
                            (m, s, eps)
                        })
                        .collect()
                };
                let smax = scored.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                let mut p: Vec<f64> = scored.iter().map(|x| (x.1 - smax).exp()).collect();
                let total: f64 = p.iter().sum();
                p.iter_mut().for_each(|x| *x /= total);
                let row = (bi * l + i) * width + h * d;
                for x in 0..d {
                    let out = f64::from(want[row + x]);
                    let (mut weights, mut sums) = (0.0f64, 0.0f64);
                    for (&(m, s, eps), &pm) in scored.iter().zip(&p) {
                        let delta = eps + u * (s.abs() + smax.abs()) + 6.0 * u;
                        weights += pm * delta * (value(m, x) - out).abs();
                        sums += pm * value(m, x).abs();
                    }
                    let f32_err = weights
                        + (lf + 2.0 * tiles + 4.0) * u * sums
                        + (lf / 8.0 + tiles + 8.0) * u * out.abs();
                    tol[row + x] = 0.5 * ulp(dtype, want[row + x]) + (4.0 * f32_err) as f32;
                }
            }
        }
    }
    tol
}

/// L = 1; the tiny model's head size 16 and window 4 at L = 299 with GQA ratio 2, a biting cap and left padding (49
/// queries of batch item 1 see no key); d = 64 at L = 300 (D64 tiles of 32 keys: 9 full and 12) with a window of 37
/// and right padding (queries ≥ 297 see no key); L = 554 with no window, GQA ratio 1, holes in the mask; d = 100
/// (D128 class, not a multiple of 8) with GQA ratio 3; Gemma-2-2B's heads (8 of 256 over 4) with its cap 50 and
/// right padding; d = 256 at L = 300 with a window of 20 over right padding (queries ≥ 280 see no key). Head counts
/// are small where L is long: the emulator runs every thread of a block as a host thread (a few seconds a dtype).
const SHAPES: [Shape; 7] = [
    (1, 1, 1, 1, 16, None, None, Mask::Right(&[1])),
    (
        2,
        299,
        2,
        1,
        16,
        Some(4),
        Some(2.0),
        Mask::Left(&[299, 250]),
    ),
    (1, 300, 2, 2, 64, Some(37), None, Mask::Right(&[260])),
    (1, 554, 1, 1, 16, None, Some(2.0), Mask::Holes),
    (1, 77, 3, 1, 100, Some(30), None, Mask::Holes),
    (1, 40, 8, 4, 256, None, Some(50.0), Mask::Right(&[33])),
    (1, 300, 2, 1, 256, Some(20), Some(2.0), Mask::Right(&[260])),
];

fn check_causal_attention<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(51);
    let mut worst = 0.0f32;
    for shape in SHAPES {
        let c = random_case(&mut rng, shape, dtype);
        let got = causal_attention(e, &c.q, &c.k, &c.v, &c.mask, &c.p).expect("engine");
        let want = cpu::causal_attention(&c.q, &c.k, &c.v, &c.mask, &c.p).expect("cpu");
        let tol = tolerance(&c, dtype, want.data());
        worst = worst.max(within(e, dtype, shape, &got, &want, |i| tol[i]));
    }
    eprintln!(
        "{} causal_attention {dtype:?}: worst error {worst:.3} of the tolerance",
        e.name()
    );
}

#[test]
fn causal_attention_emu_matches_cpu() {
    for dtype in DTYPES {
        check_causal_attention(&EmuEngine::new(dtype), dtype);
    }
}

/// The check on the CUDA engine (a GPU, or CI's software device).
#[test]
fn causal_attention_on_cuda() {
    on_cuda("causal_attention_on_cuda", check_causal_attention);
}

/// `t` [B, L, kv_heads·d] spread to [B, L, heads·d] with query head h reading kv head `map(h)`.
fn spread(t: &HostTensor, heads: usize, d: usize, map: impl Fn(usize) -> usize) -> HostTensor {
    let (b, l, kv_width) = emu_check::dims3(t);
    let mut out = Vec::with_capacity(b * l * heads * d);
    for token in t.data().chunks(kv_width) {
        for h in 0..heads {
            out.extend_from_slice(&token[map(h) * d..][..d]);
        }
    }
    HostTensor::new(vec![b, l, heads * d], out).expect("shape")
}

/// Each wrong variant is what a kernel with that mistake computes, through the reference on modified inputs or
/// parameters; the real kernel's bf16 output must be outside the tolerance around it.
#[test]
fn causal_attention_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let (b, l, heads, kv_heads, d, w) = (1, 299, 4, 2, 16, 7);
    let c = random_case(
        &mut Rng(52),
        (
            b,
            l,
            heads,
            kv_heads,
            d,
            Some(w),
            Some(2.0),
            Mask::Left(&[250]),
        ),
        dtype,
    );
    let got =
        causal_attention(&EmuEngine::new(dtype), &c.q, &c.k, &c.v, &c.mask, &c.p).expect("emu");
    let want = cpu::causal_attention(&c.q, &c.k, &c.v, &c.mask, &c.p).expect("cpu");
    let tol = tolerance(&c, dtype, want.data());
    let with = |p: CausalAttention| cpu::causal_attention(&c.q, &c.k, &c.v, &c.mask, &p);

    let no_gqa = CausalAttention {
        kv_heads: heads,
        ..c.p
    };
    let modulo = |h: usize| h % kv_heads;
    let wrong_gqa = cpu::causal_attention(
        &c.q,
        &spread(&c.k, heads, d, modulo),
        &spread(&c.v, heads, d, modulo),
        &c.mask,
        &no_gqa,
    );
    // Sanity of the spread: the right mapping through it is the reference itself.
    let group = heads / kv_heads;
    let right_gqa = cpu::causal_attention(
        &c.q,
        &spread(&c.k, heads, d, |h| h / group),
        &spread(&c.v, heads, d, |h| h / group),
        &c.mask,
        &no_gqa,
    )
    .expect("cpu");
    assert_eq!(right_gqa.data(), want.data());

    let mut empty_rows_zero = want.clone();
    let width = heads * d;
    for bi in 0..b {
        for i in 0..l {
            if visible(&c, bi, i).is_empty() {
                empty_rows_zero.data_mut()[(bi * l + i) * width..][..width].fill(0.0);
            }
        }
    }
    // The window ending one key early (`j < i`, `i − j ≤ w`: the diagonal key dropped) is the reference on keys
    // shifted right by one (key j of the shifted input is key j − 1), with a fresh key 0 that is padding.
    let shift = |t: &HostTensor, fill: f32| {
        let (tb, tl) = (t.shape()[0], t.shape()[1]);
        let row = t.len() / (tb * tl);
        let mut t = t.clone();
        for item in t.data_mut().chunks_mut(tl * row) {
            item.rotate_right(row);
            item[..row].fill(fill);
        }
        t
    };
    let diagonal_dropped = cpu::causal_attention(
        &c.q,
        &shift(&c.k, 1.0),
        &shift(&c.v, 1.0),
        &shift(&c.mask, 0.0),
        &c.p,
    );

    let wrong = [
        (
            "window off by one (i − j ≤ w)",
            with(CausalAttention {
                window: Some(w + 1),
                ..c.p
            }),
        ),
        (
            "window off by one (i − j < w − 1)",
            with(CausalAttention {
                window: Some(w - 1),
                ..c.p
            }),
        ),
        ("GQA head h reads kv head h % kv_heads", wrong_gqa),
        (
            "soft-cap dropped",
            with(CausalAttention {
                softcap: None,
                ..c.p
            }),
        ),
        (
            "padding mask ignored",
            cpu::causal_attention(
                &c.q,
                &c.k,
                &c.v,
                &HostTensor::new(vec![b, l], vec![1.0; b * l]).expect("shape"),
                &c.p,
            ),
        ),
        ("queries that see no key left at zero", Ok(empty_rows_zero)),
        ("window one key early (diagonal dropped)", diagonal_dropped),
    ];
    for (what, wrong) in wrong {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), |i| tol[i]);
    }
}

#[test]
fn causal_attention_shape_errors() {
    let mut rng = Rng(53);
    let e = EmuEngine::new(StorageDtype::Bf16);
    let p = CausalAttention {
        heads: 4,
        kv_heads: 2,
        scale: 0.25,
        softcap: None,
        window: None,
    };
    let q = rng.tensor(&[2, 5, 64], -1.0, 1.0);
    let kv = rng.tensor(&[2, 5, 32], -1.0, 1.0);
    let mask = HostTensor::new(vec![2, 5], vec![1.0; 10]).expect("shape");
    let wide = rng.tensor(&[1, 2, 264], -1.0, 1.0);
    let wide_mask = HostTensor::new(vec![1, 2], vec![1.0; 2]).expect("shape");
    let cases = [
        (
            "head dimension 264",
            causal_attention(
                &e,
                &wide,
                &wide,
                &wide,
                &wide_mask,
                &CausalAttention {
                    heads: 1,
                    kv_heads: 1,
                    ..p
                },
            )
            .err(),
        ),
        (
            "heads not a multiple of kv_heads",
            causal_attention(
                &e,
                &q,
                &kv,
                &kv,
                &mask,
                &CausalAttention { kv_heads: 3, ..p },
            )
            .err(),
        ),
        (
            "k of the query width",
            causal_attention(&e, &q, &q, &kv, &mask, &p).err(),
        ),
        (
            "mask of another length",
            causal_attention(&e, &q, &kv, &kv, &rng.tensor(&[2, 4], 0.5, 1.0), &p).err(),
        ),
        (
            "soft-cap 0",
            causal_attention(
                &e,
                &q,
                &kv,
                &kv,
                &mask,
                &CausalAttention {
                    softcap: Some(0.0),
                    ..p
                },
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
    let got = causal_attention(
        &e,
        &empty,
        &HostTensor::zeros(vec![2, 0, 32]),
        &HostTensor::zeros(vec![2, 0, 32]),
        &HostTensor::zeros(vec![2, 0]),
        &p,
    )
    .expect("empty launch");
    assert_eq!(got.shape(), &[2, 0, 64]);
}

#[test]
fn causal_attention_ptx_has_entries() {
    let mut entries = Vec::new();
    for class in ["d64", "d128", "d256"] {
        for dtype in ["f32", "bf16", "f16"] {
            entries.push(format!("causal_attention_{class}_{dtype}"));
        }
    }
    check_ptx(
        Family::CausalAttention,
        &entries.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}
