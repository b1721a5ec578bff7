//! kernels/layout.cu, run through the emulation engine, against the CPU reference (src/cpu/layout.rs) on inputs
//! first rounded to the storage dtype.
//!
//! Tolerance: none. The kernels move storage values without arithmetic, so the result must equal the reference
//! bit for bit in every dtype (a poisoned, unwritten element is NaN and fails). `layout_exactness_catches_wrong_kernels`
//! shows that typical mistakes differ.

mod emu_check;

use emu_check::{check_ptx, rounded, Rng, DTYPES};
use sana::cpu::layout as cpu;
use sana::engine::emu;
use sana::gpu::kernels::Family;
use sana::{Error, HostTensor};

/// (B, C, h, w): one pixel of one channel; a non-square 3×5 grid; Sana's 32 latent channels on 5×3; more than one
/// 32×32 tile each way with partial tiles (C = 37, h·w = 63); Sana-0.6B's width on a 2×3 grid (tokens_to_nchw's
/// C = 1152 spans 36 tiles).
const SHAPES: [(usize, usize, usize, usize); 5] = [
    (1, 1, 1, 1),
    (2, 3, 3, 5),
    (1, 32, 5, 3),
    (2, 37, 7, 9),
    (1, 1152, 2, 3),
];

#[test]
fn layout_emu_matches_cpu_exactly() {
    let mut rng = Rng(51);
    for dtype in DTYPES {
        for (b, c, h, w) in SHAPES {
            let x = rounded(&rng.tensor(&[b, c, h, w], -3.0, 3.0), dtype);
            let tokens = emu::nchw_to_tokens(&x, dtype).expect("emu");
            assert_eq!(
                tokens,
                cpu::nchw_to_tokens(&x).expect("cpu"),
                "{dtype:?} nchw_to_tokens {:?}",
                (b, c, h, w)
            );
            let t = rounded(&rng.tensor(&[b, h * w, c], -3.0, 3.0), dtype);
            let image = emu::tokens_to_nchw(&t, h, w, dtype).expect("emu");
            assert_eq!(
                image,
                cpu::tokens_to_nchw(&t, h, w).expect("cpu"),
                "{dtype:?} tokens_to_nchw {:?}",
                (b, c, h, w)
            );
            assert_eq!(
                emu::nchw_to_tokens(&image, dtype).expect("emu"),
                t,
                "round trip"
            );
        }
    }
}

/// What kernels with typical mistakes compute differs from the reference (here exactness is the tolerance).
#[test]
fn layout_exactness_catches_wrong_kernels() {
    let dtype = sana::engine::emu::StorageDtype::Bf16;
    let (b, c, h, w) = (2, 4, 3, 5);
    let x = rounded(&Rng(52).tensor(&[b, c, h, w], -3.0, 3.0), dtype);
    let got = emu::nchw_to_tokens(&x, dtype).expect("emu");
    // A reshape without the transpose.
    let reshaped = x.clone().reshape(vec![b, h * w, c]).expect("reshape");
    // Tokens in column-major order (n = j·h + i): the reference on the spatially transposed image.
    let mut xt = vec![0.0f32; x.len()];
    for (bc, plane) in x.data().chunks(h * w).enumerate() {
        for i in 0..h {
            for j in 0..w {
                xt[bc * h * w + j * h + i] = plane[i * w + j];
            }
        }
    }
    let column_major = cpu::nchw_to_tokens(&HostTensor::new(vec![b, c, w, h], xt).expect("shape"))
        .expect("cpu")
        .reshape(vec![b, h * w, c])
        .expect("reshape");
    // One transpose over the whole [B·C, h·w] matrix, ignoring the batch.
    let whole = cpu::nchw_to_tokens(&x.clone().reshape(vec![1, b * c, h, w]).expect("reshape"))
        .expect("cpu");
    let whole = HostTensor::new(vec![b, h * w, c], whole.into_data()).expect("shape");
    for (what, wrong) in [
        ("reshape without transpose", reshaped),
        ("tokens in column-major order", column_major),
        ("batch ignored", whole),
    ] {
        assert_ne!(got, wrong, "a kernel with '{what}' would pass");
    }
}

#[test]
fn layout_shape_errors() {
    let dtype = sana::engine::emu::StorageDtype::F32;
    let t = HostTensor::zeros(vec![1, 6, 4]);
    let cases = [
        ("nchw of rank 3", emu::nchw_to_tokens(&t, dtype).err()),
        (
            "grid of another size",
            emu::tokens_to_nchw(&t, 2, 2, dtype).err(),
        ),
        (
            "empty grid",
            emu::tokens_to_nchw(&HostTensor::zeros(vec![1, 0, 4]), 0, 3, dtype).err(),
        ),
    ];
    for (what, err) in cases {
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: expected a shape error, got {err:?}"
        );
    }
    let empty =
        emu::nchw_to_tokens(&HostTensor::zeros(vec![2, 0, 3, 3]), dtype).expect("empty launch");
    assert_eq!(empty.shape(), &[2, 9, 0]);
}

#[test]
fn layout_ptx_has_entries() {
    check_ptx(
        Family::Layout,
        &["transpose_f32", "transpose_bf16", "transpose_f16"],
    );
}
