//! kernels/layout.cu against the CPU reference (src/cpu/layout.rs) on inputs first rounded to the storage dtype; each
//! check body runs on the emulation engine (f32, bf16, f16) and on the CUDA engine (bf16, f16: `layout_on_cuda`).
//!
//! Tolerance: none. The kernels move storage values without arithmetic, so the result must equal the reference
//! bit for bit in every dtype (a poisoned, unwritten element is NaN and fails). `layout_exactness_catches_wrong_kernels`
//! shows that typical mistakes differ.

mod common;
mod emu_check;
mod engine_check;

use emu_check::{check_ptx, rounded, Rng, DTYPES};
use engine_check::{on_cuda, run_op, run_op3};
use sana::cpu::layout as cpu;
use sana::engine::cuda::embedded::Family;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::launch::layout::ChannelSpace;
use sana::{Error, HostTensor};

fn nchw_to_tokens<E: Engine>(e: &E, x: &HostTensor) -> sana::Result<HostTensor> {
    run_op(e, &[x], |t| e.nchw_to_tokens(&t[0]))
}

fn tokens_to_nchw<E: Engine>(
    e: &E,
    x: &HostTensor,
    h: usize,
    w: usize,
) -> sana::Result<HostTensor> {
    run_op(e, &[x], |t| e.tokens_to_nchw(&t[0], h, w))
}

/// The engine op that runs kernels/layout.cu's `channel_space` kernel as `op` (`Repeat` ignores the grid).
fn channel_space<E: Engine>(
    e: &E,
    x: &HostTensor,
    (h, w): (usize, usize),
    op: ChannelSpace,
) -> sana::Result<HostTensor> {
    run_op(e, &[x], |t| match op {
        ChannelSpace::Repeat(r) => e.repeat_channels(&t[0], r),
        ChannelSpace::Shuffle(1) => e.pixel_shuffle(&t[0], h, w),
        ChannelSpace::Shuffle(4) => e.upsample_nearest2x(&t[0], h, w),
        ChannelSpace::Shuffle(r) => e.repeat_pixel_shuffle(&t[0], h, w, r),
        ChannelSpace::Unshuffle => e.pixel_unshuffle(&t[0], h, w),
    })
}

fn split_qkv_groups<E: Engine>(
    e: &E,
    x: &HostTensor,
    d: usize,
) -> sana::Result<(HostTensor, HostTensor, HostTensor)> {
    run_op3(e, &[x], |t| e.split_qkv_groups(&t[0], d))
}

fn concat_channels<E: Engine>(e: &E, a: &HostTensor, b: &HostTensor) -> sana::Result<HostTensor> {
    run_op(e, &[a, b], |t| e.concat_channels(&t[0], &t[1]))
}

fn channel_group_mean<E: Engine>(e: &E, x: &HostTensor, g: usize) -> sana::Result<HostTensor> {
    run_op(e, &[x], |t| e.channel_group_mean(&t[0], g))
}

/// The layout checks on the CUDA engine (a GPU, or CI's software device).
#[test]
fn layout_on_cuda() {
    on_cuda("layout_on_cuda", |e, dtype| {
        check_transposes(e, dtype);
        check_channel_space(e, dtype);
        check_channel_groups(e, dtype);
    });
}

/// (B, C, h, w): one pixel of one channel; a non-square 3×5 grid; Sana's 32 latent channels on 5×3; more than one
/// 32×32 tile each way with partial tiles (C = 37, h·w = 63); Sana-0.6B's width on a 2×3 grid (tokens_to_nchw's
/// C = 1152 spans 36 tiles); the DC-AE's 512 channels on 4×4.
const SHAPES: [(usize, usize, usize, usize); 6] = [
    (1, 1, 1, 1),
    (2, 3, 3, 5),
    (1, 32, 5, 3),
    (2, 37, 7, 9),
    (1, 1152, 2, 3),
    (1, 512, 4, 4),
];

fn check_transposes<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(51);
    for (b, c, h, w) in SHAPES {
        let what = format!("{} {dtype:?} {:?}", e.name(), (b, c, h, w));
        let x = rounded(&rng.tensor(&[b, c, h, w], -3.0, 3.0), dtype);
        let tokens = nchw_to_tokens(e, &x).expect("engine");
        assert_eq!(
            tokens,
            cpu::nchw_to_tokens(&x).expect("cpu"),
            "{what} nchw_to_tokens"
        );
        let t = rounded(&rng.tensor(&[b, h * w, c], -3.0, 3.0), dtype);
        let image = tokens_to_nchw(e, &t, h, w).expect("engine");
        assert_eq!(
            image,
            cpu::tokens_to_nchw(&t, h, w).expect("cpu"),
            "{what} tokens_to_nchw"
        );
        assert_eq!(
            nchw_to_tokens(e, &image).expect("engine"),
            t,
            "{what} round trip"
        );
    }
}

#[test]
fn layout_emu_matches_cpu_exactly() {
    for dtype in DTYPES {
        check_transposes(&EmuEngine::new(dtype), dtype);
    }
}

/// What kernels with typical mistakes compute differs from the reference (here exactness is the tolerance).
#[test]
fn layout_exactness_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let (b, c, h, w) = (2, 4, 3, 5);
    let x = rounded(&Rng(52).tensor(&[b, c, h, w], -3.0, 3.0), dtype);
    let got = nchw_to_tokens(&EmuEngine::new(dtype), &x).expect("emu");
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
    let e = EmuEngine::new(StorageDtype::F32);
    let t = HostTensor::zeros(vec![1, 6, 4]);
    let cases = [
        ("nchw of rank 3", nchw_to_tokens(&e, &t).err()),
        ("grid of another size", tokens_to_nchw(&e, &t, 2, 2).err()),
        (
            "empty grid",
            tokens_to_nchw(&e, &HostTensor::zeros(vec![1, 0, 4]), 0, 3).err(),
        ),
    ];
    for (what, err) in cases {
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: expected a shape error, got {err:?}"
        );
    }
    let empty = nchw_to_tokens(&e, &HostTensor::zeros(vec![2, 0, 3, 3])).expect("empty launch");
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
    let dtype = StorageDtype::Bf16;
    let side = 1449;
    let t = rounded(&Rng(53).tensor(&[1, side * side, 1], -3.0, 3.0), dtype);
    let image = tokens_to_nchw(&EmuEngine::new(dtype), &t, side, side).expect("emu");
    assert_eq!(image, cpu::tokens_to_nchw(&t, side, side).expect("cpu"));
}

#[test]
fn plans_at_4096_keep_grid_y_and_z_within_65535() {
    use sana::launch::layout::{nchw_to_tokens, tokens_to_nchw, PairBuffers};
    use sana::launch::Geometry;
    let none = PairBuffers::NONE;
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
/// non-square grid; a grid of many blocks with a partial last one; the DC-AE decoder's 512 channels on 4×4. (The
/// grid-stride loop only turns past 65535 blocks × 256 threads = 16.8M outputs, too many to emulate in a test.)
const SHUFFLE_SHAPES: [(usize, usize, usize, usize); 5] = [
    (1, 2, 2, 1),
    (2, 2, 4, 3),
    (1, 6, 4, 8),
    (1, 16, 24, 9),
    (1, 4, 4, 512),
];

/// Each op against its CPU reference, bit for bit.
fn channel_space_case<E: Engine>(
    e: &E,
    dtype: StorageDtype,
    (b, h, w, c): (usize, usize, usize, usize),
    seed: u64,
) {
    let x = rounded(&Rng(seed).tensor(&[b, h * w, c], -3.0, 3.0), dtype);
    let x4 = rounded(&Rng(seed + 1).tensor(&[b, h * w, 4 * c], -3.0, 3.0), dtype);
    let x2 = rounded(&Rng(seed + 2).tensor(&[b, h * w, 2 * c], -3.0, 3.0), dtype);
    let run = |t: &HostTensor, op| channel_space(e, t, (h, w), op).expect("engine");
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
            "{} {dtype:?} {what} {:?}",
            e.name(),
            (b, h, w, c)
        );
    }
}

fn check_channel_space<E: Engine>(e: &E, dtype: StorageDtype) {
    for (i, shape) in SHUFFLE_SHAPES.iter().enumerate() {
        channel_space_case(e, dtype, *shape, 60 + 3 * i as u64);
    }
}

#[test]
fn channel_space_emu_matches_cpu_exactly() {
    for dtype in DTYPES {
        check_channel_space(&EmuEngine::new(dtype), dtype);
    }
}

/// A kernel that swaps the sub-pixel order, or shuffles without the repeat, differs from the reference.
#[test]
fn channel_space_exactness_catches_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let e = EmuEngine::new(dtype);
    let (h, w, c) = (2, 3, 4);
    let x4 = rounded(&Rng(70).tensor(&[1, h * w, 4 * c], -3.0, 3.0), dtype);
    let got = channel_space(&e, &x4, (h, w), ChannelSpace::Shuffle(1)).expect("emu");
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
    let shortcut = channel_space(&e, &x2, (h, w), ChannelSpace::Shuffle(2)).expect("emu");
    let no_repeat =
        cpu::upsample_nearest2x(&cpu::channel_group_mean(&x2, 2).expect("cpu"), h, w).expect("cpu");
    assert_ne!(
        shortcut, no_repeat,
        "a kernel averaging instead of repeating would pass"
    );
}

#[test]
fn channel_space_shape_errors() {
    let e = EmuEngine::new(StorageDtype::F32);
    let x = HostTensor::zeros(vec![1, 6, 3]);
    for (what, grid, op) in [
        ("grid of another size", (2, 2), ChannelSpace::Shuffle(4)),
        ("repeat 0", (2, 3), ChannelSpace::Repeat(0)),
        (
            "3 channels do not shuffle",
            (2, 3),
            ChannelSpace::Shuffle(1),
        ),
        ("odd grid", (2, 3), ChannelSpace::Unshuffle),
    ] {
        let err = channel_space(&e, &x, grid, op).err();
        assert!(
            matches!(err, Some(Error::Shape { .. })),
            "{what}: got {err:?}"
        );
    }
}

/// (B, N, G, d) for the DC-AE's channel groupings: one token of one group of width 1; odd widths and a batch; the
/// tiny VAE's head width 8; the DC-AE's 32 over many blocks with a partial last one; its deepest stage's 16 heads
/// of 32 (512 channels).
const GROUP_SHAPES: [(usize, usize, usize, usize); 5] = [
    (1, 1, 1, 1),
    (2, 5, 3, 7),
    (1, 9, 4, 8),
    (1, 600, 3, 32),
    (1, 16, 16, 32),
];

/// `split_qkv_groups` and `concat_channels` are copies: bit-exact in every dtype. `channel_group_mean` sums in f32
/// in the reference's order and divides once: bit-exact as well (the GPU has no FMA to contract here).
fn check_channel_groups<E: Engine>(e: &E, dtype: StorageDtype) {
    let mut rng = Rng(80);
    for (b, n, g, d) in GROUP_SHAPES {
        let what = format!("{} {dtype:?} {:?}", e.name(), (b, n, g, d));
        let t = rounded(&rng.tensor(&[b, n, g * 3 * d], -3.0, 3.0), dtype);
        let got = split_qkv_groups(e, &t, d).expect("engine");
        assert_eq!(
            got,
            cpu::split_qkv_groups(&t, d).expect("cpu"),
            "{what} split_qkv_groups"
        );
        let a = rounded(&rng.tensor(&[b, n, g * d], -3.0, 3.0), dtype);
        let c = rounded(&rng.tensor(&[b, n, d + 2], -3.0, 3.0), dtype);
        assert_eq!(
            concat_channels(e, &a, &c).expect("engine"),
            cpu::concat_channels(&a, &c).expect("cpu"),
            "{what} concat_channels"
        );
        // The mean is rounded once to the storage dtype, as the engine's other outputs are.
        let want = rounded(&cpu::channel_group_mean(&t, d).expect("cpu"), dtype);
        assert_eq!(
            channel_group_mean(e, &t, d).expect("engine"),
            want,
            "{what} channel_group_mean"
        );
    }
}

#[test]
fn channel_groups_emu_match_cpu_exactly() {
    for dtype in DTYPES {
        check_channel_groups(&EmuEngine::new(dtype), dtype);
    }
}

/// Typical mistakes in the grouping kernels give results that differ from the reference.
#[test]
fn channel_groups_exactness_catch_wrong_kernels() {
    let dtype = StorageDtype::Bf16;
    let e = EmuEngine::new(dtype);
    let (b, n, g, d) = (2, 3, 4, 5);
    let t = rounded(&Rng(81).tensor(&[b, n, g * 3 * d], -3.0, 3.0), dtype);
    let (q, k, v) = split_qkv_groups(&e, &t, d).expect("emu");
    // Read as [q (G·d) | k (G·d) | v (G·d)] rather than per-group triples.
    let mut planar = t.clone();
    for (row, src) in planar
        .data_mut()
        .chunks_mut(3 * g * d)
        .zip(t.data().chunks(3 * g * d))
    {
        for gi in 0..g {
            for part in 0..3 {
                for j in 0..d {
                    row[gi * 3 * d + part * d + j] = src[part * g * d + gi * d + j];
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
    let got = channel_group_mean(&e, &t, d).expect("emu");
    let wrong = rounded(&cpu::channel_group_mean(&strided, d).expect("cpu"), dtype);
    assert_ne!(got, wrong, "a mean over strided channels would pass");
    // Concatenation in the other order.
    let a = rounded(&Rng(82).tensor(&[b, n, 3], -3.0, 3.0), dtype);
    let got = concat_channels(&e, &a, &t).expect("emu");
    let swapped = cpu::concat_channels(&t, &a).expect("cpu");
    assert_ne!(
        got.data(),
        swapped.data(),
        "a concat in the other order would pass"
    );
}

#[test]
fn channel_groups_shape_errors() {
    let e = EmuEngine::new(StorageDtype::F32);
    let x = HostTensor::zeros(vec![1, 6, 12]);
    let y = HostTensor::zeros(vec![1, 5, 12]);
    let cases = [
        (
            "12 channels are not triples of 8",
            split_qkv_groups(&e, &x, 8).err(),
        ),
        ("head_dim 0", split_qkv_groups(&e, &x, 0).err()),
        ("token counts differ", concat_channels(&e, &x, &y).err()),
        (
            "rank 2",
            concat_channels(&e, &HostTensor::zeros(vec![6, 12]), &x).err(),
        ),
        ("5 does not divide 12", channel_group_mean(&e, &x, 5).err()),
        ("group of 0", channel_group_mean(&e, &x, 0).err()),
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
