//! Reference depthwise 3×3 convolution + bias + GLU(SiLU), the middle of Sana's Mix-FFN (docs/numerics/transformer.md
//! §11), over channels-last tokens `[B, h·w, 2F]` with zero padding of one pixel.

use half::{bf16, f16};

use crate::cpu::elementwise::silu;
use crate::cpu::gemm::MatrixLayout;
use crate::cpu::norm::dims3;
use crate::cpu::parallel::{for_each_block, for_each_row};
use crate::cpu::weight_gemm::{gemm_weight_serial, WeightRows};
use crate::error::{Error, Result};
use crate::tensor::HostTensor;

/// Bytes of one core's im2col tile in [`conv3x3`]: small enough that both cores' tiles stay in L3 while the dot
/// kernel passes them once per block of the weight's rows (16 MB tiles were 5–25% slower at the DC-AE's 512 px shapes,
/// 2026-12-03), and never a full im2col buffer at 4K.
const IM2COL_TILE_BYTES: usize = 2 << 20;

/// Fewest output pixels per tile whatever the width: the whole weight is read once per tile, so a tile of fewer
/// pixels than this would spend more on the weight than on its products.
const MIN_TILE_PIXELS: usize = 256;

pub fn dwconv3x3_glu(
    x: &HostTensor,
    w: &HostTensor,
    bias: &HostTensor,
    h: usize,
    width: usize,
) -> Result<HostTensor> {
    let (b, n, c2) = dims3(x, "dwconv3x3_glu")?;
    if n != h * width || c2 % 2 != 0 {
        return Err(Error::shape(
            "dwconv3x3_glu",
            format!("input {:?} is not [B, {h}·{width}, 2F]", x.shape()),
        ));
    }
    w.expect_shape("dwconv3x3_glu (weight)", &[Some(c2), Some(9)])?;
    bias.expect_shape("dwconv3x3_glu (bias)", &[Some(c2)])?;
    let f = c2 / 2;
    // Taps [9, 2F]: the inner loop runs over contiguous channels of one input pixel and one tap.
    let mut taps = vec![0.0f32; 9 * c2];
    let w = w.widened();
    for c in 0..c2 {
        for tap in 0..9 {
            taps[tap * c2 + c] = w[c * 9 + tap];
        }
    }
    let mut out = vec![0.0f32; b * n * f];
    for_each_block(&mut out, f, |first, block| {
        // Both halves at once, tap by tap over contiguous channels, into one buffer per core.
        let mut acc = vec![0.0f32; c2];
        for (r, o) in block.chunks_exact_mut(f).enumerate() {
            let (bi, p) = ((first + r) / n, (first + r) % n);
            let (i, j) = (p / width, p % width);
            acc.copy_from_slice(bias.data());
            for di in 0..3 {
                for dj in 0..3 {
                    let (ii, jj) = ((i + di).wrapping_sub(1), (j + dj).wrapping_sub(1));
                    if ii >= h || jj >= width {
                        continue;
                    }
                    let xs = &x.data()[(bi * n + ii * width + jj) * c2..][..c2];
                    let ws = &taps[(di * 3 + dj) * c2..][..c2];
                    for ((a, &xv), &wv) in acc.iter_mut().zip(xs).zip(ws) {
                        *a += wv * xv;
                    }
                }
            }
            let (value, gate) = acc.split_at(f);
            for ((y, &v), &g) in o.iter_mut().zip(value).zip(gate) {
                *y = v * silu(g);
            }
        }
    });
    HostTensor::new(vec![b, n, f], out)
}

/// Full 3×3 convolution, zero padding 1, stride 1 or 2 (PyTorch `Conv2d(Cin, Cout, 3, stride, 1)`), over
/// channels-last tokens `x` [B, h·w, Cin]; `w` [Cout, Cin, 3, 3] as PyTorch stores it; out [B, h'·w', Cout] with
/// `h' = (h − 1) / stride + 1`. Tiled im2col: the weight is reordered once to (tap, channel) columns, so a tile of
/// output pixels gathers each 3×3 neighbourhood as nine contiguous copies of an input pixel's channels, and one GEMM
/// per tile multiplies them by it. Each core gathers and multiplies its own tiles (no core waits on a serial
/// gather); tiles are sized for the caches, so no full im2col buffer exists even at 4K. f32 accumulation.
pub fn conv3x3(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    (h, width): (usize, usize),
    stride: usize,
) -> Result<HostTensor> {
    let (b, (oh, ow), cin, cout) = conv3x3_shape(x, w, bias, (h, width), stride)?;
    let n = h * width;
    let k = 9 * cin;
    let pixels = b * oh * ow;
    let mut out = vec![0.0f32; pixels * cout];
    if k == 0 || pixels == 0 || cout == 0 {
        add_bias(&mut out, cout, bias);
        return HostTensor::new(vec![b, oh * ow, cout], out);
    }
    // [Cout, 9, Cin]: tap-major columns, matching the gathered rows, in the weight's own format (the GEMM widens a
    // 16-bit weight as it loads it).
    let (taps_f32, taps_bf16, taps_f16): (Vec<f32>, Vec<bf16>, Vec<f16>);
    let taps = match WeightRows::of(w) {
        WeightRows::F32(w) => {
            taps_f32 = tap_major(w, cin);
            WeightRows::F32(&taps_f32)
        }
        WeightRows::Bf16(w) => {
            taps_bf16 = tap_major(w, cin);
            WeightRows::Bf16(&taps_bf16)
        }
        WeightRows::F16(w) => {
            taps_f16 = tap_major(w, cin);
            WeightRows::F16(&taps_f16)
        }
    };
    let tile = (IM2COL_TILE_BYTES / (4 * k)).max(MIN_TILE_PIXELS);
    for_each_block(&mut out, cout, |first, block| {
        let rows = block.len() / cout;
        let mut patches = vec![0.0f32; tile.min(rows) * k];
        for start in (0..rows).step_by(tile) {
            let count = tile.min(rows - start);
            for (r, patch) in patches.chunks_exact_mut(k).take(count).enumerate() {
                let (bi, p) = (
                    (first + start + r) / (oh * ow),
                    (first + start + r) % (oh * ow),
                );
                let (i, j) = (p / ow * stride, p % ow * stride);
                for (tap, dst) in patch.chunks_exact_mut(cin).enumerate() {
                    let (ii, jj) = ((i + tap / 3).wrapping_sub(1), (j + tap % 3).wrapping_sub(1));
                    if ii < h && jj < width {
                        dst.copy_from_slice(&x.data()[(bi * n + ii * width + jj) * cin..][..cin]);
                    } else {
                        dst.fill(0.0);
                    }
                }
            }
            let out = &mut block[start * cout..][..count * cout];
            gemm_weight_serial(
                (&patches, MatrixLayout::row_major(count, k, k)),
                taps,
                (out, MatrixLayout::row_major(count, cout, cout)),
            );
            add_bias(out, cout, bias);
        }
    });
    HostTensor::new(vec![b, oh * ow, cout], out)
}

/// `(B, (h', w'), Cin, Cout)` of a [`conv3x3`], or the error naming what does not fit.
pub(crate) fn conv3x3_shape(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    (h, width): (usize, usize),
    stride: usize,
) -> Result<(usize, (usize, usize), usize, usize)> {
    let (b, n, cin) = dims3(x, "conv3x3")?;
    if n != h * width || h == 0 || width == 0 || !(1..=2).contains(&stride) {
        return Err(Error::shape(
            "conv3x3",
            format!(
                "input {:?} is not [B, {h}·{width}, C], or stride {stride} is not 1 or 2",
                x.shape()
            ),
        ));
    }
    let (oh, ow) = ((h - 1) / stride + 1, (width - 1) / stride + 1);
    w.expect_shape("conv3x3 (weight)", &[None, Some(cin), Some(3), Some(3)])?;
    let cout = w.shape()[0];
    if let Some(bias) = bias {
        bias.expect_shape("conv3x3 (bias)", &[Some(cout)])?;
    }
    Ok((b, (oh, ow), cin, cout))
}

/// A `[Cout, Cin, 3, 3]` weight as `[Cout, 9, Cin]`.
fn tap_major<T: Copy + Default>(w: &[T], cin: usize) -> Vec<T> {
    let k = 9 * cin;
    let mut taps = vec![T::default(); w.len()];
    for (dst, src) in taps.chunks_exact_mut(k).zip(w.chunks_exact(k)) {
        for (ci, from) in src.chunks_exact(9).enumerate() {
            for (tap, &v) in from.iter().enumerate() {
                dst[tap * cin + ci] = v;
            }
        }
    }
    taps
}

/// Adds `bias` (if any) to every `cout`-wide row of `out`.
fn add_bias(out: &mut [f32], cout: usize, bias: Option<&HostTensor>) {
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(cout) {
            row.iter_mut().zip(bias.data()).for_each(|(y, b)| *y += b);
        }
    }
}

/// Depthwise k×k convolution (k odd), stride 1, zero padding k/2, over channels-last tokens `x` `[B, h·w, C]`; `w`
/// `[C, k, k]`; optional bias `[C]`; out `[B, h·w, C]`. The DC-AE's multi-scale branch (5×5, no bias).
pub fn depthwise_conv(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    h: usize,
    width: usize,
) -> Result<HostTensor> {
    let (b, n, c) = dims3(x, "depthwise_conv")?;
    w.expect_shape("depthwise_conv (weight)", &[Some(c), None, None])?;
    let k = w.shape()[1];
    if n != h * width || k != w.shape()[2] || k.is_multiple_of(2) {
        return Err(Error::shape(
            "depthwise_conv",
            format!(
                "input {:?} with weight {:?}: need [B, {h}·{width}, C] and an odd square kernel",
                x.shape(),
                w.shape()
            ),
        ));
    }
    if let Some(bias) = bias {
        bias.expect_shape("depthwise_conv (bias)", &[Some(c)])?;
    }
    let r = k / 2;
    // Taps [k·k, C]: the inner loop runs over contiguous channels of one input pixel and one tap.
    let mut taps = vec![0.0f32; k * k * c];
    let w = w.widened();
    for ch in 0..c {
        for tap in 0..k * k {
            taps[tap * c + ch] = w[ch * k * k + tap];
        }
    }
    let mut out = vec![0.0f32; b * n * c];
    for_each_row(&mut out, c, |row, o| {
        let (bi, p) = (row / n, row % n);
        let (i, j) = (p / width, p % width);
        match bias {
            Some(bias) => o.copy_from_slice(bias.data()),
            None => o.fill(0.0),
        }
        for di in 0..k {
            let ii = (i + di).wrapping_sub(r);
            if ii >= h {
                continue;
            }
            for dj in 0..k {
                let jj = (j + dj).wrapping_sub(r);
                if jj >= width {
                    continue;
                }
                let xs = &x.data()[(bi * n + ii * width + jj) * c..][..c];
                let ws = &taps[(di * k + dj) * c..][..c];
                for ((y, &xv), &wv) in o.iter_mut().zip(xs).zip(ws) {
                    *y += wv * xv;
                }
            }
        }
    });
    HostTensor::new(vec![b, n, c], out)
}
