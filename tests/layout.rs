//! kernels/layout.cu, run through the emulation engine, against the CPU reference (src/cpu/layout.rs) on inputs
//! first rounded to the storage dtype.
//!
//! Tolerance: none. The kernels move storage values without arithmetic, so the result must equal the reference
//! bit for bit in every dtype (a poisoned, unwritten element is NaN and fails). `layout_exactness_catches_wrong_kernels`
//! shows that typical mistakes differ.

mod emu_check;

use emu_check::{check_ptx, rounded, Rng, DTYPES};
use sana::cpu::layout as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu;
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
    let dtype = sana::engine::StorageDtype::Bf16;
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
    let dtype = sana::engine::StorageDtype::F32;
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

/// The transposes at 4096² — the decoder's last [B, h·w, 3] tokens to NCHW, the encoder's image to tokens, a
/// 128-channel map either way — and the DC-AE's grouped 1×1 conv over the tokens of its deepest attention stage at
/// 4096² (stage 3: 512 channels in 16 heads of 32, 512² tokens per image, batch 4): every grid keeps y and z within
/// 65535 and x within 2³¹ − 1. Before the tiles moved to grid.x, tokens_to_nchw put ⌈h·w/32⌉ row tiles on grid.y
/// (65535 tiles: 1448² at most), and grouped_linear 4·512²/16 = 65536 row strips there.
/// An untiled decode's last transpose just past the old limit, emulated: 1449² tokens of one channel to NCHW is
/// 65 613 row tiles, which grid.y could not hold.
#[test]
fn tokens_to_nchw_past_1448_squared_matches_cpu_exactly() {
    let dtype = sana::engine::StorageDtype::Bf16;
    let side = 1449;
    let t = rounded(&Rng(53).tensor(&[1, side * side, 1], -3.0, 3.0), dtype);
    let image = emu::tokens_to_nchw(&t, side, side, dtype).expect("emu");
    assert_eq!(image, cpu::tokens_to_nchw(&t, side, side).expect("cpu"));
}

#[test]
fn plans_at_4096_keep_grid_y_and_z_within_65535() {
    use sana::launch::layout::{nchw_to_tokens, tokens_to_nchw, TransposeBuffers};
    use sana::launch::Geometry;
    let none = TransposeBuffers { out: 0, x: 0 };
    let fits = |what: &str, g: Geometry| {
        assert!(
            g.grid[0] <= i32::MAX as u32 && g.grid[1] <= 65535 && g.grid[2] <= 65535,
            "{what}: grid {:?}",
            g.grid
        );
        assert!(!g.is_empty(), "{what}: empty grid");
    };
    let n = 4096 * 4096;
    for (b, c) in [(1usize, 3usize), (4, 3), (1, 128), (2, 32)] {
        let to_image = tokens_to_nchw(&[b, n, c], 4096, 4096, none).expect("plan");
        fits(
            &format!("tokens_to_nchw B = {b}, C = {c}"),
            to_image.geometry,
        );
        assert_eq!(
            to_image.geometry.grid[0] as usize,
            (n / 32) * c.div_ceil(32)
        );
        let to_tokens = nchw_to_tokens(&[b, c, 4096, 4096], none).expect("plan");
        fits(
            &format!("nchw_to_tokens B = {b}, C = {c}"),
            to_tokens.geometry,
        );
    }
    let (rows, groups, ci): (usize, usize, usize) = (4 * 512 * 512, 3 * 16, 32);
    let (grouped, _) = sana::launch::conv::grouped_linear(
        &[4, 512 * 512, groups * ci],
        &[groups * ci, ci],
        groups,
        (0, 0, 0),
    )
    .expect("plan");
    fits("grouped_linear", grouped.geometry);
    assert_eq!(
        grouped.geometry.grid[0] as usize,
        rows.div_ceil(16) * (groups * ci).div_ceil(128)
    );
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
    dtype: sana::engine::StorageDtype,
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
    let dtype = sana::engine::StorageDtype::Bf16;
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
    let dtype = sana::engine::StorageDtype::F32;
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

/// (B, N, G, d) for the DC-AE's channel groupings: one token of one group of width 1; odd widths and a batch; the
/// tiny VAE's head width 8; the DC-AE's 32 over many blocks with a partial last one.
const GROUP_SHAPES: [(usize, usize, usize, usize); 4] =
    [(1, 1, 1, 1), (2, 5, 3, 7), (1, 9, 4, 8), (1, 600, 3, 32)];

/// `split_qkv_groups` and `concat_channels` are copies: bit-exact in every dtype. `channel_group_mean` sums in f32
/// in the reference's order and divides once: bit-exact as well (the GPU has no FMA to contract here).
#[test]
fn channel_groups_emu_match_cpu_exactly() {
    let mut rng = Rng(80);
    for dtype in DTYPES {
        for (b, n, g, d) in GROUP_SHAPES {
            let t = rounded(&rng.tensor(&[b, n, g * 3 * d], -3.0, 3.0), dtype);
            let got = emu::split_qkv_groups(&t, d, dtype).expect("emu");
            assert_eq!(
                got,
                cpu::split_qkv_groups(&t, d).expect("cpu"),
                "{dtype:?} split_qkv_groups {:?}",
                (b, n, g, d)
            );
            let a = rounded(&rng.tensor(&[b, n, g * d], -3.0, 3.0), dtype);
            let c = rounded(&rng.tensor(&[b, n, d + 2], -3.0, 3.0), dtype);
            assert_eq!(
                emu::concat_channels(&a, &c, dtype).expect("emu"),
                cpu::concat_channels(&a, &c).expect("cpu"),
                "{dtype:?} concat_channels {:?}",
                (b, n, g, d)
            );
            // The mean is rounded once to the storage dtype, as the engine's other outputs are.
            let want = rounded(&cpu::channel_group_mean(&t, d).expect("cpu"), dtype);
            assert_eq!(
                emu::channel_group_mean(&t, d, dtype).expect("emu"),
                want,
                "{dtype:?} channel_group_mean {:?}",
                (b, n, g, d)
            );
        }
    }
}

/// Typical mistakes in the grouping kernels give results that differ from the reference.
#[test]
fn channel_groups_exactness_catch_wrong_kernels() {
    let dtype = sana::engine::StorageDtype::Bf16;
    let (b, n, g, d) = (2, 3, 4, 5);
    let t = rounded(&Rng(81).tensor(&[b, n, g * 3 * d], -3.0, 3.0), dtype);
    let (q, k, v) = emu::split_qkv_groups(&t, d, dtype).expect("emu");
    // Read as [q (G·d) | k (G·d) | v (G·d)] rather than per-group triples.
    let mut planar = t.clone();
    for (row, src) in planar
        .data_mut()
        .chunks_mut(3 * g * d)
        .zip(t.data().chunks(3 * g * d))
    {
        for gi in 0..g {
            for part in 0..3 {
                for e in 0..d {
                    row[gi * 3 * d + part * d + e] = src[part * g * d + gi * d + e];
                }
            }
        }
    }
    let wrong = cpu::split_qkv_groups(&planar, d).expect("cpu");
    assert_ne!((q, k, v), wrong, "a split reading planar q|k|v would pass");
    // The mean over strided channels (c + e·C/g) instead of consecutive ones.
    let c = g * 3 * d;
    let mut strided = t.clone();
    for (row, src) in strided.data_mut().chunks_mut(c).zip(t.data().chunks(c)) {
        for (o, y) in row.iter_mut().enumerate() {
            *y = src[(o % d) * (c / d) + o / d];
        }
    }
    let got = emu::channel_group_mean(&t, d, dtype).expect("emu");
    let wrong = rounded(&cpu::channel_group_mean(&strided, d).expect("cpu"), dtype);
    assert_ne!(got, wrong, "a mean over strided channels would pass");
    // Concatenation in the other order.
    let a = rounded(&Rng(82).tensor(&[b, n, 3], -3.0, 3.0), dtype);
    let got = emu::concat_channels(&a, &t, dtype).expect("emu");
    let swapped = cpu::concat_channels(&t, &a).expect("cpu");
    assert_ne!(
        got.data(),
        swapped.data(),
        "a concat in the other order would pass"
    );
}

#[test]
fn channel_groups_shape_errors() {
    let dtype = sana::engine::StorageDtype::F32;
    let x = HostTensor::zeros(vec![1, 6, 12]);
    let y = HostTensor::zeros(vec![1, 5, 12]);
    let cases = [
        (
            "12 channels are not triples of 8",
            emu::split_qkv_groups(&x, 8, dtype).err(),
        ),
        ("head_dim 0", emu::split_qkv_groups(&x, 0, dtype).err()),
        (
            "token counts differ",
            emu::concat_channels(&x, &y, dtype).err(),
        ),
        (
            "rank 2",
            emu::concat_channels(&HostTensor::zeros(vec![6, 12]), &x, dtype).err(),
        ),
        (
            "5 does not divide 12",
            emu::channel_group_mean(&x, 5, dtype).err(),
        ),
        ("group of 0", emu::channel_group_mean(&x, 0, dtype).err()),
    ];
    for (what, err) in cases {
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: expected a shape error, got {err:?}"
        );
    }
}

#[test]
fn channel_groups_ptx_has_entries() {
    check_ptx(
        Family::Layout,
        &[
            "split_qkv_groups_f32",
            "split_qkv_groups_bf16",
            "split_qkv_groups_f16",
            "concat_channels_f32",
            "concat_channels_bf16",
            "concat_channels_f16",
            "channel_group_mean_f32",
            "channel_group_mean_bf16",
            "channel_group_mean_f16",
        ],
    );
}
