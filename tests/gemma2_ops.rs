//! The ops Gemma-2 added to the `Engine` (embedding, rotary, causal attention, mul, RMSNorm with `1 + w`), checked
//! on the CPU engine against direct transcriptions of transformers' formulas on small random inputs.

mod common;

use common::{assert_close, Rng};
use sana::engine::{cpu::CpuEngine, CausalAttention, Engine};
use sana::model::gemma2::rope_tables;
use sana::HostTensor;

fn t(shape: &[usize], data: Vec<f32>) -> HostTensor {
    HostTensor::new(shape.to_vec(), data).unwrap()
}

#[test]
fn gemma2_embedding_gathers_scaled_rows_and_rejects_bad_ids() {
    let e = CpuEngine;
    let table = t(&[3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let out = e.embedding(&table, &[2, 0, 2], 0.5).unwrap();
    assert_eq!(out.shape(), &[3, 2]);
    assert_eq!(out.data(), &[2.5, 3.0, 0.5, 1.0, 2.5, 3.0]);
    let err = e.embedding(&table, &[1, 3], 1.0).unwrap_err().to_string();
    assert!(
        err.contains("token id 3") && err.contains("3 rows"),
        "{err}"
    );
}

#[test]
fn gemma2_rms_norm_plus_one_uses_one_plus_weight() {
    let e = CpuEngine;
    let x = t(&[1, 2], vec![3.0, 4.0]);
    let w = t(&[2], vec![0.0, 1.0]);
    let y = e.rms_norm_plus_one(&x, &w, 0.0).unwrap();
    let r = (12.5f64).sqrt() as f32;
    assert_close(
        "rms_norm_plus_one",
        &y,
        &t(&[1, 2], vec![3.0 / r, 8.0 / r]),
        1e-6,
    );
}

#[test]
fn gemma2_rotary_rotates_half_pairs() {
    let e = CpuEngine;
    let (d, l, heads) = (8, 5, 2);
    let (cos, sin) = rope_tables(d, 10000.0, l).unwrap();
    let x = Rng::new(1).tensor(&[1, l, heads * d]);
    let y = e.rotary(&x, &cos, &sin, heads).unwrap();
    for p in 0..l {
        for h in 0..heads {
            for i in 0..d / 2 {
                let theta = p as f64 / 10000f64.powf(2.0 * i as f64 / d as f64);
                let (c, s) = (theta.cos(), theta.sin());
                let u = |j: usize| f64::from(x.data()[p * heads * d + h * d + j]);
                let got = |j: usize| f64::from(y.data()[p * heads * d + h * d + j]);
                let lo = u(i) * c - u(i + d / 2) * s;
                let hi = u(i + d / 2) * c + u(i) * s;
                assert!((got(i) - lo).abs() < 1e-5, "p {p} h {h} i {i}");
                assert!((got(i + d / 2) - hi).abs() < 1e-5, "p {p} h {h} i {i}+d/2");
            }
        }
    }
    // Position 0 is the identity.
    assert_eq!(&y.data()[..heads * d], &x.data()[..heads * d]);
}

/// transformers' eager attention, transcribed: scores for every (query, key), soft-cap, additive `finfo.min` mask,
/// softmax over all keys.
fn eager(
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    mask: &[f32],
    p: &CausalAttention,
) -> HostTensor {
    let (b, l) = (q.shape()[0], q.shape()[1]);
    let d = q.shape()[2] / p.heads;
    let (qw, kw) = (p.heads * d, p.kv_heads * d);
    let mut out = vec![0.0f32; b * l * qw];
    for bi in 0..b {
        for h in 0..p.heads {
            let g = h / (p.heads / p.kv_heads);
            for i in 0..l {
                let mut s: Vec<f32> = (0..l)
                    .map(|j| {
                        let dot: f32 = (0..d)
                            .map(|c| {
                                q.data()[(bi * l + i) * qw + h * d + c]
                                    * k.data()[(bi * l + j) * kw + g * d + c]
                            })
                            .sum();
                        let mut x = dot * p.scale;
                        if let Some(cap) = p.softcap {
                            x = (x / cap).tanh() * cap;
                        }
                        let allowed =
                            j <= i && mask[bi * l + j] != 0.0 && p.window.is_none_or(|w| i - j < w);
                        x + if allowed { 0.0 } else { f32::MIN }
                    })
                    .collect();
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                s.iter_mut().for_each(|x| *x = (*x - max).exp());
                let total: f32 = s.iter().sum();
                for c in 0..d {
                    out[(bi * l + i) * qw + h * d + c] = (0..l)
                        .map(|j| s[j] / total * v.data()[(bi * l + j) * kw + g * d + c])
                        .sum();
                }
            }
        }
    }
    t(&[b, l, qw], out)
}

#[test]
fn gemma2_causal_attention_matches_eager_transcription() {
    let e = CpuEngine;
    let mut rng = Rng::new(7);
    let (b, l, d) = (2, 7, 4);
    // Row 0 right-padded after 4 tokens; row 1 left-padded by 2 (queries 0 and 1 see no key at all).
    let mask: Vec<f32> = [[1, 1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1]]
        .iter()
        .flatten()
        .map(|&m| m as f32)
        .collect();
    let key_mask = t(&[b, l], mask.clone());
    for (heads, kv_heads, softcap, window) in [
        (4, 2, Some(1.5), None),
        (4, 4, None, Some(3)),
        (2, 1, Some(50.0), Some(2)),
    ] {
        let q = rng.tensor(&[b, l, heads * d]);
        let k = rng.tensor(&[b, l, kv_heads * d]);
        let v = rng.tensor(&[b, l, kv_heads * d]);
        let p = CausalAttention {
            heads,
            kv_heads,
            scale: 0.7,
            softcap,
            window,
        };
        let got = e.causal_attention(&q, &k, &v, &key_mask, &p).unwrap();
        assert_close(&format!("{p:?}"), &got, &eager(&q, &k, &v, &mask, &p), 1e-5);
    }
}

#[test]
fn gemma2_causal_attention_soft_cap_and_window_matter() {
    let e = CpuEngine;
    let mut rng = Rng::new(3);
    let (l, d) = (6, 4);
    let q = t(
        &[1, l, d],
        rng.tensor(&[1, l, d])
            .data()
            .iter()
            .map(|x| x * 20.0)
            .collect(),
    );
    let k = rng.tensor(&[1, l, d]);
    let v = rng.tensor(&[1, l, d]);
    let mask = t(&[1, l], vec![1.0; l]);
    let p = CausalAttention {
        heads: 1,
        kv_heads: 1,
        scale: 1.0,
        softcap: None,
        window: None,
    };
    let base = e.causal_attention(&q, &k, &v, &mask, &p).unwrap();
    for changed in [
        CausalAttention {
            softcap: Some(2.0),
            ..p
        },
        CausalAttention {
            window: Some(2),
            ..p
        },
    ] {
        let other = e.causal_attention(&q, &k, &v, &mask, &changed).unwrap();
        assert!(
            common::relative_error(other.data(), base.data()) > 1e-2,
            "{changed:?} changed nothing"
        );
    }
}

#[test]
fn gemma2_mul_is_elementwise() {
    let e = CpuEngine;
    let a = t(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2], vec![0.5, -1.0, 2.0, 0.0]);
    assert_eq!(e.mul(&a, &b).unwrap().data(), &[0.5, -2.0, 6.0, 0.0]);
    assert!(e.mul(&a, &t(&[4], vec![1.0; 4])).is_err());
}
