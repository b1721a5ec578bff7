//! Reference layout changes: NCHW images ↔ channels-last tokens, and the channel/space rearrangements of the DC-AE.

use crate::cpu::norm::dims3;
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// `[B, C, h, w]` → `[B, h·w, C]`.
pub fn nchw_to_tokens(x: &HostTensor) -> Result<HostTensor> {
    x.expect_shape("nchw_to_tokens", &[None, None, None, None])?;
    let [b, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let mut out = vec![0.0f32; x.len()];
    for bi in 0..b {
        for ci in 0..c {
            for p in 0..h * w {
                out[(bi * h * w + p) * c + ci] = x.data()[(bi * c + ci) * h * w + p];
            }
        }
    }
    HostTensor::new(vec![b, h * w, c], out)
}

/// `[B, h·w, C]` → `[B, C, h, w]`.
pub fn tokens_to_nchw(x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
    x.expect_shape("tokens_to_nchw", &[None, Some(h * w), None])?;
    let (b, c) = (x.shape()[0], x.shape()[2]);
    if h * w == 0 {
        return Err(Error::shape("tokens_to_nchw", "empty image grid"));
    }
    let mut out = vec![0.0f32; x.len()];
    for bi in 0..b {
        for p in 0..h * w {
            for ci in 0..c {
                out[(bi * c + ci) * h * w + p] = x.data()[(bi * h * w + p) * c + ci];
            }
        }
    }
    HostTensor::new(vec![b, c, h, w], out)
}

/// Channel repeat `[B, N, C]` → `[B, N, C·r]`, each channel `r` times consecutively (PyTorch
/// `repeat_interleave(r, dim=1)` on NCHW): channel `c'` of the output is input channel `c' / r`.
pub fn repeat_channels(x: &HostTensor, r: usize) -> Result<HostTensor> {
    let (b, n, c) = dims3(x, "repeat_channels")?;
    if r == 0 {
        return Err(Error::shape("repeat_channels", "repeat count 0"));
    }
    let out = x
        .data()
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, r))
        .collect();
    HostTensor::new(vec![b, n, c * r], out)
}

/// Pixel shuffle by 2 (PyTorch `pixel_shuffle(x, 2)`) on tokens: `x` [B, h·w, 4C] → [B, 2h·2w, C] with
/// `out[c, 2i+a, 2j+b] = x[4c + 2a + b, i, j]`.
pub fn pixel_shuffle(x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
    let (b, n, c4) = dims3(x, "pixel_shuffle")?;
    if n != h * w || c4 % 4 != 0 {
        return Err(Error::shape(
            "pixel_shuffle",
            format!("input {:?} is not [B, {h}·{w}, 4C]", x.shape()),
        ));
    }
    let c = c4 / 4;
    let mut out = vec![0.0f32; x.len()];
    for bi in 0..b {
        for i in 0..2 * h {
            for j in 0..2 * w {
                let src = (bi * n + (i / 2) * w + j / 2) * c4 + 2 * (i % 2) + j % 2;
                let dst = (bi * 4 * n + i * 2 * w + j) * c;
                for (ch, o) in out[dst..dst + c].iter_mut().enumerate() {
                    *o = x.data()[src + 4 * ch];
                }
            }
        }
    }
    HostTensor::new(vec![b, 4 * n, c], out)
}

/// Nearest-neighbour upsampling by 2 on tokens: `x` [B, h·w, C] → [B, 2h·2w, C], output pixel `(2i+a, 2j+b)` copies
/// input pixel `(i, j)`.
pub fn upsample_nearest2x(x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
    let (b, n, c) = dims3(x, "upsample_nearest2x")?;
    if n != h * w {
        return Err(Error::shape(
            "upsample_nearest2x",
            format!("input {:?} is not [B, {h}·{w}, C]", x.shape()),
        ));
    }
    let mut out = Vec::with_capacity(4 * x.len());
    for bi in 0..b {
        for i in 0..2 * h {
            for j in 0..2 * w {
                let src = (bi * n + (i / 2) * w + j / 2) * c;
                out.extend_from_slice(&x.data()[src..src + c]);
            }
        }
    }
    HostTensor::new(vec![b, 4 * n, c], out)
}

/// The DC-AE's LiteMLA grouping (docs/numerics/dc-ae.md §3.4 step 4): `t` [B, N, G·3d] holds G groups of 3d consecutive
/// channels, each `[query d | key d | value d]`; returns q, k, v, each [B, N, G·d] with group `g` at channels
/// `[g·d, (g+1)·d)` (the head-contiguous layout `linear_attention` reads).
pub fn split_qkv_groups(
    t: &HostTensor,
    head_dim: usize,
) -> Result<(HostTensor, HostTensor, HostTensor)> {
    let (b, n, c3) = dims3(t, "split_qkv_groups")?;
    if head_dim == 0 || c3 % (3 * head_dim) != 0 {
        return Err(Error::shape(
            "split_qkv_groups",
            format!("{c3} channels are not groups of 3·{head_dim}"),
        ));
    }
    let c = c3 / 3;
    let mut parts = [
        vec![0.0f32; b * n * c],
        vec![0.0; b * n * c],
        vec![0.0; b * n * c],
    ];
    for (row, src) in t.data().chunks_exact(c3).enumerate() {
        for (g, group) in src.chunks_exact(3 * head_dim).enumerate() {
            for (part, chunk) in parts.iter_mut().zip(group.chunks_exact(head_dim)) {
                part[row * c + g * head_dim..][..head_dim].copy_from_slice(chunk);
            }
        }
    }
    let [q, k, v] = parts;
    let shape = vec![b, n, c];
    Ok((
        HostTensor::new(shape.clone(), q)?,
        HostTensor::new(shape.clone(), k)?,
        HostTensor::new(shape, v)?,
    ))
}

/// Channel concatenation `[B, N, Ca]`, `[B, N, Cb]` → `[B, N, Ca + Cb]`.
pub fn concat_channels(a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    let (bn, n, ca) = dims3(a, "concat_channels")?;
    b.expect_shape("concat_channels", &[Some(bn), Some(n), None])?;
    let cb = b.shape()[2];
    if ca == 0 || cb == 0 {
        return Err(Error::shape("concat_channels", "an input has no channels"));
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    for (ra, rb) in a.data().chunks_exact(ca).zip(b.data().chunks_exact(cb)) {
        out.extend_from_slice(ra);
        out.extend_from_slice(rb);
    }
    HostTensor::new(vec![bn, n, ca + cb], out)
}

/// Pixel unshuffle by 2 (PyTorch `pixel_unshuffle(x, 2)`) on tokens: `x` [B, h·w, C] (h, w even) →
/// [B, (h/2)·(w/2), 4C] with `out[4c + 2a + b, i, j] = x[c, 2i+a, 2j+b]`.
pub fn pixel_unshuffle(x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
    let (b, n, c) = dims3(x, "pixel_unshuffle")?;
    if n != h * w || !h.is_multiple_of(2) || !w.is_multiple_of(2) {
        return Err(Error::shape(
            "pixel_unshuffle",
            format!(
                "input {:?} is not [B, {h}·{w}, C] with an even grid",
                x.shape()
            ),
        ));
    }
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0.0f32; x.len()];
    for bi in 0..b {
        for i in 0..oh {
            for j in 0..ow {
                let dst = (bi * oh * ow + i * ow + j) * 4 * c;
                for a in 0..2 {
                    for bb in 0..2 {
                        let src = (bi * n + (2 * i + a) * w + 2 * j + bb) * c;
                        for ch in 0..c {
                            out[dst + 4 * ch + 2 * a + bb] = x.data()[src + ch];
                        }
                    }
                }
            }
        }
    }
    HostTensor::new(vec![b, oh * ow, 4 * c], out)
}

/// Mean of each run of `g` consecutive channels: `[B, N, C]` → `[B, N, C/g]` (PyTorch
/// `x.unflatten(1, (-1, g)).mean(dim=2)` on NCHW), the DC-AE encoder's channel-averaging shortcuts.
pub fn channel_group_mean(x: &HostTensor, g: usize) -> Result<HostTensor> {
    let (b, n, c) = dims3(x, "channel_group_mean")?;
    if g == 0 || c % g != 0 {
        return Err(Error::shape(
            "channel_group_mean",
            format!("{c} channels are not groups of {g}"),
        ));
    }
    let out = x
        .data()
        .chunks_exact(g)
        .map(|run| run.iter().sum::<f32>() / g as f32)
        .collect();
    HostTensor::new(vec![b, n, c / g], out)
}
