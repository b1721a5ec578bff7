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
use sana::launch::layout::ChannelSpace;
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
        &[
            "transpose_f32",
            "transpose_bf16",
            "transpose_f16",
            "channel_space_f32",
            "channel_space_bf16",
            "channel_space_f16",
        ],
    );
}

/// (B, h, w, C) for the DC-AE's channel/space shuffles: one pixel's 2×2 block; odd channel counts and a batch; a
/// non-square grid; a grid of many blocks with a partial last one. (The grid-stride loop only turns past 65535
/// blocks × 256 threads = 16.8M outputs, too many to emulate in a test.)
const SHUFFLE_SHAPES: [(usize, usize, usize, usize); 4] =
    [(1, 2, 2, 1), (2, 2, 4, 3), (1, 6, 4, 8), (1, 16, 24, 9)];

/// Each op against its CPU reference, bit for bit.
fn channel_space_case(
    dtype: sana::engine::emu::StorageDtype,
    (b, h, w, c): (usize, usize, usize, usize),
    seed: u64,
) {
    let x = rounded(&Rng(seed).tensor(&[b, h * w, c], -3.0, 3.0), dtype);
    let x4 = rounded(&Rng(seed + 1).tensor(&[b, h * w, 4 * c], -3.0, 3.0), dtype);
    let x2 = rounded(&Rng(seed + 2).tensor(&[b, h * w, 2 * c], -3.0, 3.0), dtype);
    let run = |t: &HostTensor, op| emu::channel_space(t, (h, w), op, dtype).expect("emu");
    let cases = [
        (
            "repeat 3",
            run(&x, ChannelSpace::Repeat(3)),
            cpu::repeat_channels(&x, 3),
        ),
        (
            "pixel shuffle",
            run(&x4, ChannelSpace::Shuffle(1)),
            cpu::pixel_shuffle(&x4, h, w),
        ),
        (
            "upsample",
            run(&x, ChannelSpace::Shuffle(4)),
            cpu::upsample_nearest2x(&x, h, w),
        ),
        (
            "up-block shortcut (r = 2)",
            run(&x2, ChannelSpace::Shuffle(2)),
            cpu::pixel_shuffle(&cpu::repeat_channels(&x2, 2).expect("cpu"), h, w),
        ),
        (
            "pixel unshuffle",
            run(&x, ChannelSpace::Unshuffle),
            cpu::pixel_unshuffle(&x, h, w),
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(
            got,
            want.expect("cpu"),
            "{dtype:?} {what} {:?}",
            (b, h, w, c)
        );
    }
}

#[test]
fn channel_space_emu_matches_cpu_exactly() {
    for dtype in DTYPES {
        for (i, shape) in SHUFFLE_SHAPES.iter().enumerate() {
            channel_space_case(dtype, *shape, 60 + 3 * i as u64);
        }
    }
}

/// A kernel that swaps the sub-pixel order, or shuffles without the repeat, differs from the reference.
#[test]
fn channel_space_exactness_catches_wrong_kernels() {
    let dtype = sana::engine::emu::StorageDtype::Bf16;
    let (h, w, c) = (2, 3, 4);
    let x4 = rounded(&Rng(70).tensor(&[1, h * w, 4 * c], -3.0, 3.0), dtype);
    let got = emu::channel_space(&x4, (h, w), ChannelSpace::Shuffle(1), dtype).expect("emu");
    // Sub-pixel (a, b) read as (b, a): the reference on the input with channels 4c+1 and 4c+2 swapped.
    let mut swapped = x4.clone();
    for px in swapped.data_mut().chunks_mut(4 * c) {
        for ch in 0..c {
            px.swap(4 * ch + 1, 4 * ch + 2);
        }
    }
    let transposed = cpu::pixel_shuffle(&swapped, h, w).expect("cpu");
    assert_ne!(
        got, transposed,
        "a kernel with 'sub-pixel order swapped' would pass"
    );
    let x2 = rounded(&Rng(71).tensor(&[1, h * w, 2 * c], -3.0, 3.0), dtype);
    let shortcut = emu::channel_space(&x2, (h, w), ChannelSpace::Shuffle(2), dtype).expect("emu");
    let no_repeat =
        cpu::upsample_nearest2x(&cpu::channel_group_mean(&x2, 2).expect("cpu"), h, w).expect("cpu");
    assert_ne!(
        shortcut, no_repeat,
        "a kernel averaging instead of repeating would pass"
    );
}

#[test]
fn channel_space_shape_errors() {
    let dtype = sana::engine::emu::StorageDtype::F32;
    let x = HostTensor::zeros(vec![1, 6, 3]);
    for (what, grid, op) in [
        ("grid of another size", (2, 2), ChannelSpace::Repeat(2)),
        ("repeat 0", (2, 3), ChannelSpace::Repeat(0)),
        (
            "3 channels do not shuffle",
            (2, 3),
            ChannelSpace::Shuffle(1),
        ),
        ("odd grid", (2, 3), ChannelSpace::Unshuffle),
    ] {
        let err = emu::channel_space(&x, grid, op, dtype).err();
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: got {err:?}"
        );
    }
}
