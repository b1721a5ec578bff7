//! kernels/embed.cu against the CPU references (src/cpu/embed.rs, src/cpu/rotary.rs) on inputs first rounded to the
//! storage dtype; each check body runs on the emulation engine (f32, bf16, f16) and on the CUDA engine (bf16, f16:
//! `embed_on_cuda`).
//!
//! Tolerances, per element, with `U` = 2^-24 (f32 unit roundoff) and `ulp` the spacing of the storage dtype at the
//! reference value (0 for f32 storage):
//! - `embedding`: the kernel forms the reference's single f32 product `table·s` (s = the scale rounded to the
//!   storage dtype, which the reference is given) and rounds it once: `0.5·ulp`, i.e. bit-exact in f32.
//! - `rotary`: the reference rounds both products and their sum in f32; the kernel rounds them the same way or, where
//!   nvcc contracts a product and the sum into one FMA, skips one product rounding: `0.5·ulp + 2U·(|x_a·cos| +
//!   |x_b·sin|)`, the two products of the element.
//!
//! `embed_tolerance_catches_wrong_kernels` shows that typical mistakes (an id off by one row, the scale unrounded
//! or ignored, sin's sign flipped, the tables of the next position, cos and sin swapped) fail these bounds.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{assert_caught, assert_within, check_ptx, rounded, ulp, Rng, DTYPES, U};
use engine_check::{on_cuda, run_op};
use sana::cpu::{embed as cpu_embed, rotary as cpu_rotary};
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, Storage, StorageDtype};
use sana::{Error, HostTensor};

fn embedding<E: Engine>(
    e: &E,
    table: &HostTensor,
    ids: &[u32],
    scale: f32,
) -> sana::Result<HostTensor> {
    run_op(e, &[table], |t| e.embedding(&t[0], ids, scale))
}

fn rotary<E: Engine>(
    e: &E,
    x: &HostTensor,
    cos: &HostTensor,
    sin: &HostTensor,
    heads: usize,
) -> sana::Result<HostTensor> {
    run_op(e, &[x, cos, sin], |t| e.rotary(&t[0], &t[1], &t[2], heads))
}

/// The checks on the CUDA engine (a GPU, or CI's software device).
#[test]
fn embed_on_cuda() {
    on_cuda("embed_on_cuda", |e, dtype| {
        check_embedding(e, dtype);
        check_rotary(e, dtype);
    });
}

fn half_ulp(dtype: StorageDtype, want: &[f32]) -> impl Fn(usize) -> f32 + '_ {
    move |i| 0.5 * ulp(dtype, want[i])
}

fn round_scalar(v: f32, dtype: StorageDtype) -> f32 {
    Storage::from_f32(dtype, &[v]).to_f32()[0]
}

/// `n` ids in [0, vocab) with the first and last rows and a repeat always among them.
fn random_ids(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| match i {
            0 => 0,
            1 => vocab as u32 - 1,
            2 => 0,
            _ => (rng.next_u64() % vocab as u64) as u32,
        })
        .take(n)
        .collect()
}

/// (V, D, ids, scale): one row of width 1; the tiny model's table with √64 = 8; an odd width (no 16-byte packs)
/// with an inexact scale; Gemma-2-2B's width 2304 with √2304 = 48.
const EMBEDDING_CASES: [(usize, usize, usize, f32); 4] = [
    (3, 1, 1, 1.0),
    (664, 64, 37, 8.0),
    (50, 77, 9, 25.298_22),
    (40, 2304, 5, 48.0),
];

fn check_embedding<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(41);
    for (vocab, d, n, scale) in EMBEDDING_CASES {
        let table = rng.tensor(&[vocab, d], -2.0, 2.0);
        let ids = random_ids(&mut rng, n, vocab);
        let got = embedding(e, &table, &ids, scale).expect("engine");
        let want = cpu_embed::embedding(&rounded(&table, dtype), &ids, round_scalar(scale, dtype))
            .expect("cpu");
        assert_eq!(got.shape(), &[n, d]);
        assert_within(
            &format!("{} {dtype:?} embedding V={vocab} D={d}", e.name()),
            got.data(),
            want.data(),
            half_ulp(dtype, want.data()),
        );
    }
}

#[test]
fn embed_embedding_matches_cpu() {
    for dtype in DTYPES {
        check_embedding(&EmuEngine::new(dtype), dtype);
    }
}

/// `0.5·ulp + 2U·(|x_a·cos| + |x_b·sin|)`, the header's rotary bound.
fn rotary_tol<'a>(
    dtype: StorageDtype,
    (x, cos, sin): (&'a HostTensor, &'a HostTensor, &'a HostTensor),
    heads: usize,
    want: &'a [f32],
) -> impl Fn(usize) -> f32 + 'a {
    let (l, width) = (x.shape()[1], x.shape()[2]);
    let d = width / heads;
    move |i| {
        let (row, col) = (i / width, i % width);
        let (head_start, c) = (col - col % d, col % d);
        let partner = head_start + (c + d / 2) % d;
        let t = (row % l) * d + c;
        let (xa, xb) = (x.data()[i], x.data()[row * width + partner]);
        let bound = (xa * cos.data()[t]).abs() + (xb * sin.data()[t]).abs();
        0.5 * ulp(dtype, want[i]) + 2.0 * U * bound
    }
}

/// (B, L, heads, d): the smallest head; the tiny model's 4 heads of 16 at an odd length; Gemma-2-2B's head of 256
/// at L = 299, and its 8 query heads of 256 at a few tokens.
const ROTARY_SHAPES: [(usize, usize, usize, usize); 4] = [
    (1, 1, 1, 2),
    (2, 37, 4, 16),
    (1, 299, 2, 256),
    (2, 5, 8, 256),
];

fn check_rotary<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(42);
    for (b, l, heads, d) in ROTARY_SHAPES {
        let x = rounded(&rng.tensor(&[b, l, heads * d], -3.0, 3.0), dtype);
        let cos = rounded(&rng.tensor(&[l, d], -1.0, 1.0), dtype);
        let sin = rounded(&rng.tensor(&[l, d], -1.0, 1.0), dtype);
        let got = rotary(e, &x, &cos, &sin, heads).expect("engine");
        let want = cpu_rotary::rotary(&x, &cos, &sin, heads).expect("cpu");
        assert_within(
            &format!("{} {dtype:?} rotary {:?}", e.name(), (b, l, heads, d)),
            got.data(),
            want.data(),
            rotary_tol(dtype, (&x, &cos, &sin), heads, want.data()),
        );
    }
}

#[test]
fn embed_rotary_matches_cpu() {
    for dtype in DTYPES {
        check_rotary(&EmuEngine::new(dtype), dtype);
    }
}

/// Each wrong variant is what a kernel with that mistake computes, through the reference on modified inputs; the
/// real kernel's bf16 output must be outside the tolerance around it.
#[test]
fn embed_tolerance_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let e = EmuEngine::new(dtype);
    let mut rng = Rng(43);

    let (vocab, d) = (50, 77);
    let table = rounded(&rng.tensor(&[vocab, d], -2.0, 2.0), dtype);
    let ids = random_ids(&mut rng, 9, vocab);
    // 8.03 rounds to 8 in bf16: a kernel multiplying by the unrounded scale is 0.4 % off.
    let scale = 8.03;
    let got = embedding(&e, &table, &ids, scale).expect("emu");
    let want = cpu_embed::embedding(&table, &ids, round_scalar(scale, dtype)).expect("cpu");
    let next_row: Vec<u32> = ids.iter().map(|&i| (i + 1) % vocab as u32).collect();
    for (what, wrong) in [
        (
            "id off by one row",
            cpu_embed::embedding(&table, &next_row, round_scalar(scale, dtype)),
        ),
        (
            "scale not rounded to the storage dtype",
            cpu_embed::embedding(&table, &ids, scale),
        ),
        ("scale ignored", cpu_embed::embedding(&table, &ids, 1.0)),
    ] {
        assert_caught(
            what,
            got.data(),
            wrong.expect("cpu").data(),
            half_ulp(dtype, want.data()),
        );
    }

    let (b, l, heads, d) = (2, 37, 4, 16);
    let x = rounded(&rng.tensor(&[b, l, heads * d], -3.0, 3.0), dtype);
    let cos = rounded(&rng.tensor(&[l, d], -1.0, 1.0), dtype);
    let sin = rounded(&rng.tensor(&[l, d], -1.0, 1.0), dtype);
    let got = rotary(&e, &x, &cos, &sin, heads).expect("emu");
    let want = cpu_rotary::rotary(&x, &cos, &sin, heads).expect("cpu");
    let tol = rotary_tol(dtype, (&x, &cos, &sin), heads, want.data());
    let negated = |t: &HostTensor| {
        HostTensor::new(t.shape().to_vec(), t.data().iter().map(|v| -v).collect()).expect("shape")
    };
    let next_position = |t: &HostTensor| {
        let mut t = t.clone();
        t.data_mut().rotate_left(d);
        t
    };
    for (what, wrong) in [
        (
            "sin's sign flipped",
            cpu_rotary::rotary(&x, &cos, &negated(&sin), heads),
        ),
        (
            "tables of the next position",
            cpu_rotary::rotary(&x, &next_position(&cos), &next_position(&sin), heads),
        ),
        (
            "cos and sin swapped",
            cpu_rotary::rotary(&x, &sin, &cos, heads),
        ),
    ] {
        assert_caught(what, got.data(), wrong.expect("cpu").data(), &tol);
    }
}

#[test]
fn embed_errors() {
    let mut rng = Rng(44);
    let e = EmuEngine::new(StorageDtype::Bf16);
    let table = rng.tensor(&[10, 8], -1.0, 1.0);
    let err = embedding(&e, &table, &[3, 10, 2], 1.0).err();
    match err {
        Some(Error::InvalidInput(msg)) => assert!(
            msg.contains("10") && msg.contains("position 1"),
            "message names the id and its position: {msg}"
        ),
        other => panic!("an id ≥ V must be an InvalidInput error, got {other:?}"),
    }
    let flat = rng.tensor(&[80], -1.0, 1.0);
    assert!(matches!(
        embedding(&e, &flat, &[0], 1.0),
        Err(Error::Shape { .. })
    ));
    let none = embedding(&e, &table, &[], 1.0).expect("no ids");
    assert_eq!(none.shape(), &[0, 8]);

    let x = rng.tensor(&[1, 3, 12], -1.0, 1.0);
    let cos = rng.tensor(&[3, 4], -1.0, 1.0);
    let cases = [
        (
            "odd head dimension",
            rotary(
                &e,
                &x,
                &rng.tensor(&[3, 3], -1.0, 1.0),
                &rng.tensor(&[3, 3], -1.0, 1.0),
                4,
            )
            .err(),
        ),
        (
            "width not divisible by heads",
            rotary(&e, &x, &cos, &cos, 5).err(),
        ),
        (
            "tables of another length",
            rotary(&e, &x, &rng.tensor(&[2, 4], -1.0, 1.0), &cos, 3).err(),
        ),
        (
            "tables of another width",
            rotary(&e, &x, &cos, &rng.tensor(&[3, 6], -1.0, 1.0), 3).err(),
        ),
    ];
    for (what, err) in cases {
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: expected a shape error, got {err:?}"
        );
    }
    let empty = rotary(
        &e,
        &HostTensor::zeros(vec![2, 0, 12]),
        &HostTensor::zeros(vec![0, 4]),
        &HostTensor::zeros(vec![0, 4]),
        3,
    )
    .expect("empty launch");
    assert_eq!(empty.shape(), &[2, 0, 12]);
}

#[test]
fn embed_ptx_has_entries() {
    let mut entries = Vec::new();
    for op in ["embedding", "rotary"] {
        for dtype in ["f32", "bf16", "f16"] {
            entries.push(format!("{op}_{dtype}"));
        }
    }
    check_ptx(
        Family::Embed,
        &entries.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}
