//! 3×3 convolutions at stride 1 (zero padding 1) by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, *Fast
//! Algorithms for Convolutional Neural Networks*, 2016): each 2×2 block of outputs comes from its 4×4 input patch
//! with 16 products per channel pair instead of 36, so the DC-AE decoder's stage convolutions, most of a decode,
//! multiply 2.25× less. The transforms only add, subtract and halve (exact in f32), so the result stays within a
//! small constant of the direct sum's error (tests/cpu_winograd.rs derives and checks the bound).
//!
//! Per chunk of output channels the weight is transformed once (`U = G·g·Gᵀ`, 16 matrices `Cin × Cout` packed in
//! panels for src/cpu/panel_gemm.rs); then each core takes its own tiles, a block at a time: their patches transformed
//! (`V = Bᵀ·d·B`, `[16, tiles, Cin]`), sixteen products `M_e = V_e · U_e`, and `Y = Aᵀ·M·A` written out with the
//! bias. Blocks are sized so
//! that one product's operands stay in L2; the weight chunk is sized for L3, so nothing grows with the image.

use crate::cpu::conv::conv3x3_shape;
use crate::cpu::gemm::MatrixLayout;
use crate::cpu::panel_gemm::{packed_index, packed_len, panel_gemm_serial};
use crate::cpu::parallel::{for_each_block, for_each_part, SharedOut};
use crate::cpu::weight_gemm::WeightRows;
use crate::error::Result;
use crate::tensor::HostTensor;

/// Products of the transformed domain: a 4×4 patch.
const POINTS: usize = 16;

/// f32 values of one chunk of the transformed weight (16 MB): it stays in L3 while every core's tiles pass it.
const WEIGHT_CHUNK_VALUES: usize = 4 << 20;

/// f32 values of one transformed operand of one product (128 KB): `V_e` and `M_e` of a block of tiles stay in L2.
const OPERAND_VALUES: usize = 32 << 10;

/// Fewest channels on either side, and fewest tiles, for which the transforms cost little beside the products.
const MIN_CHANNELS: usize = 16;
const MIN_TILES: usize = 16;

/// Whether [`conv3x3`] applies and pays for this convolution: stride 1, enough channels on both sides and enough
/// 2×2 tiles. Shapes that do not fit a convolution say no here and get their error from the direct path.
pub fn pays(x: &HostTensor, w: &HostTensor, (h, width): (usize, usize), stride: usize) -> bool {
    let (xs, ws) = (x.shape(), w.shape());
    stride == 1
        && xs.len() == 3
        && ws.len() == 4
        && xs[1] == h * width
        && xs[2] >= MIN_CHANNELS
        && ws[0] >= MIN_CHANNELS
        && xs[0] * h.div_ceil(2) * width.div_ceil(2) >= MIN_TILES
}

/// `conv3x3(x, w, bias, (h, width), 1)` of [`crate::cpu::conv::conv3x3`] (the same shapes and errors), computed by
/// F(2×2, 3×3). The result does not depend on how many cores run it.
pub fn conv3x3(
    x: &HostTensor,
    w: &HostTensor,
    bias: Option<&HostTensor>,
    grid: (usize, usize),
) -> Result<HostTensor> {
    let (b, (h, width), cin, cout) = conv3x3_shape(x, w, bias, grid, 1)?;
    let mut out = vec![0.0f32; b * h * width * cout];
    if out.is_empty() {
        return HostTensor::new(vec![b, h * width, cout], out);
    }
    let tiles = Tiles {
        b,
        h,
        width,
        rows: h.div_ceil(2),
        cols: width.div_ceil(2),
    };
    let chunk = (WEIGHT_CHUNK_VALUES / (POINTS * cin.max(1))).clamp(1, cout.max(1));
    let weight = WeightRows::of(w);
    let bias = bias.map(HostTensor::data);
    let shared = SharedOut(out.as_mut_ptr());
    for first in (0..cout).step_by(chunk) {
        let channels = first..cout.min(first + chunk);
        let u = transform_weight(weight, cin, channels.clone());
        let block = (OPERAND_VALUES / cin.max(channels.len())).max(4) / 4 * 4;
        let count = tiles.count();
        let per_core = count.div_ceil(rayon::current_num_threads()).max(1);
        for_each_part(count, per_core, |start, len| {
            let mut scratch = Scratch::new(block, cin, channels.len());
            for s in (start..start + len).step_by(block) {
                let n = block.min(start + len - s);
                scratch.products(x.data(), &tiles, s..s + n, &u, cin);
                // SAFETY: each tile's 2×2 outputs belong to that tile alone, and every core has its own tiles.
                unsafe { scratch.write(&shared, &tiles, s..s + n, (&channels, cout), bias) };
            }
        });
    }
    HostTensor::new(vec![b, h * width, cout], out)
}

/// The grid of 2×2 output tiles over a batch of `h × width` images (the last row or column of tiles half outside
/// an odd image).
struct Tiles {
    b: usize,
    h: usize,
    width: usize,
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn count(&self) -> usize {
        self.b * self.rows * self.cols
    }

    /// (image, top row, left column) of tile `t`'s outputs.
    fn origin(&self, t: usize) -> (usize, usize, usize) {
        let per_image = self.rows * self.cols;
        let (bi, p) = (t / per_image, t % per_image);
        (bi, p / self.cols * 2, p % self.cols * 2)
    }
}

/// `U = G·g·Gᵀ` for output channels `channels` of `w` (`[Cout, Cin, 3, 3]`): 16 matrices `Cin × channels`, each
/// packed in panels ([`packed_index`]). The cores split the 16 points between them.
fn transform_weight(w: WeightRows<'_>, cin: usize, channels: std::ops::Range<usize>) -> Vec<f32> {
    let n = channels.len();
    let plane = packed_len(cin, n);
    let mut u = vec![0.0f32; POINTS * plane];
    for_each_block(&mut u, plane, |first, points| {
        let mut g = vec![0.0f32; 9 * cin];
        for (i, co) in channels.clone().enumerate() {
            w.widen_into(co * 9 * cin, &mut g);
            for (ci, g) in g.chunks_exact(9).enumerate() {
                // G·g (4×3), then (G·g)·Gᵀ (4×4); G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
                let mut gg = [[0.0f32; 3]; 4];
                for c in 0..3 {
                    let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                    gg[0][c] = g0;
                    gg[1][c] = 0.5 * (g0 + g1 + g2);
                    gg[2][c] = 0.5 * (g0 - g1 + g2);
                    gg[3][c] = g2;
                }
                for (p, u) in points.chunks_exact_mut(plane).enumerate() {
                    let [r, c] = [(first + p) / 4, (first + p) % 4];
                    let [g0, g1, g2] = gg[r];
                    u[packed_index(cin, ci, i)] = match c {
                        0 => g0,
                        1 => 0.5 * (g0 + g1 + g2),
                        2 => 0.5 * (g0 - g1 + g2),
                        _ => g2,
                    };
                }
            }
        }
    });
    u
}

/// One core's transformed operands for a block of tiles: `V` `[16, block, Cin]` and `M` `[16, block, channels]`, and
/// room for one tile's half-transformed values (`t`, 16 runs of channels).
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
    t: Vec<f32>,
    block: usize,
    channels: usize,
}

impl Scratch {
    fn new(block: usize, cin: usize, channels: usize) -> Self {
        Self {
            v: vec![0.0; POINTS * block * cin],
            m: vec![0.0; POINTS * block * channels],
            t: vec![0.0; POINTS * cin.max(channels)],
            block,
            channels,
        }
    }

    /// Transforms the patches of tiles `range` of `x` (`[B, h·w, Cin]`) and multiplies them by `u`.
    fn products(
        &mut self,
        x: &[f32],
        tiles: &Tiles,
        range: std::ops::Range<usize>,
        u: &[f32],
        cin: usize,
    ) {
        let n = range.len();
        let zeros = vec![0.0f32; cin];
        for (r, t) in range.enumerate() {
            let (bi, top, left) = tiles.origin(t);
            // The 4×4 patch's pixels, rows top−1..top+3 and columns left−1..left+3, zeros outside the image.
            let d: [&[f32]; POINTS] = std::array::from_fn(|p| {
                let (i, j) = (
                    (top + p / 4).wrapping_sub(1),
                    (left + p % 4).wrapping_sub(1),
                );
                if i < tiles.h && j < tiles.width {
                    &x[((bi * tiles.h + i) * tiles.width + j) * cin..][..cin]
                } else {
                    &zeros
                }
            });
            let plane = self.block * cin;
            let mut v: [&mut [f32]; POINTS] = split_points(&mut self.v, plane, r * cin, cin);
            transform_patch(&d, &mut self.t, &mut v);
        }
        let channels = self.channels;
        let plane = packed_len(cin, channels);
        for e in 0..POINTS {
            panel_gemm_serial(
                (
                    &self.v[e * self.block * cin..],
                    MatrixLayout::row_major(n, cin, cin),
                ),
                &u[e * plane..][..plane],
                (
                    &mut self.m[e * self.block * channels..],
                    MatrixLayout::row_major(n, channels, channels),
                ),
            );
        }
    }

    /// `Y = Aᵀ·M·A` (+ bias) of tiles `range` into output channels `channels` of `out` (`[B, h·w, cout]`).
    ///
    /// # Safety
    /// `out` points at `B·h·w·cout` values, and no other thread writes these tiles' outputs.
    unsafe fn write(
        &self,
        out: &SharedOut,
        tiles: &Tiles,
        range: std::ops::Range<usize>,
        (channels, cout): (&std::ops::Range<usize>, usize),
        bias: Option<&[f32]>,
    ) {
        let n = self.channels;
        let bias = bias.map(|b| &b[channels.clone()]);
        let plane = self.block * n;
        let mut t = vec![0.0f32; 8 * n];
        let mut y = vec![0.0f32; 4 * n];
        for (r, t_index) in range.enumerate() {
            let (bi, top, left) = tiles.origin(t_index);
            let m: [&[f32]; POINTS] = std::array::from_fn(|e| &self.m[e * plane + r * n..][..n]);
            // Aᵀ·M (2×4), then (Aᵀ·M)·A (2×2); Aᵀ = [1 1 1 0; 0 1 −1 −1].
            let mut tt = t.chunks_exact_mut(n);
            let rows: [&mut [f32]; 8] = std::array::from_fn(|_| tt.next().expect("8 runs"));
            for k in 0..4 {
                combine3(rows[k], m[k], m[4 + k], m[8 + k], |a, b, c| a + b + c);
                combine3(rows[4 + k], m[4 + k], m[8 + k], m[12 + k], |a, b, c| {
                    a - b - c
                });
            }
            let mut yy = y.chunks_exact_mut(n);
            let mut ys: [&mut [f32]; 4] = std::array::from_fn(|_| yy.next().expect("4 runs"));
            for i in 0..2 {
                let [t0, t1, t2, t3] = [
                    &*rows[4 * i],
                    &*rows[4 * i + 1],
                    &*rows[4 * i + 2],
                    &*rows[4 * i + 3],
                ];
                combine3(ys[2 * i], t0, t1, t2, |a, b, c| a + b + c);
                combine3(ys[2 * i + 1], t1, t2, t3, |a, b, c| a - b - c);
            }
            for (q, y) in ys.iter_mut().enumerate() {
                let (i, j) = (top + q / 2, left + q % 2);
                if i >= tiles.h || j >= tiles.width {
                    continue;
                }
                let pixel = (bi * tiles.h + i) * tiles.width + j;
                let dst = std::slice::from_raw_parts_mut(out.at(pixel * cout + channels.start), n);
                match bias {
                    Some(b) => combine(dst, y, b, |y, b| y + b),
                    None => dst.copy_from_slice(y),
                }
            }
        }
    }
}

/// The 16 rows `offset..offset + len` of the 16 planes of `plane` values each in `v`.
fn split_points(v: &mut [f32], plane: usize, offset: usize, len: usize) -> [&mut [f32]; POINTS] {
    let mut planes = v.chunks_exact_mut(plane);
    std::array::from_fn(|_| &mut planes.next().expect("16 planes")[offset..][..len])
}

/// `V = Bᵀ·d·B` over a run of channels, `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`: rows first into `t`
/// (16 runs), then columns into `v`, each step one vectorised pass over contiguous channels.
fn transform_patch(d: &[&[f32]; POINTS], t: &mut [f32], v: &mut [&mut [f32]; POINTS]) {
    let n = d[0].len();
    let t: [&mut [f32]; POINTS] = split_points(t, n, 0, n);
    for c in 0..4 {
        let (d0, d1, d2, d3) = (d[c], d[4 + c], d[8 + c], d[12 + c]);
        combine(t[c], d0, d2, |a, b| a - b);
        combine(t[4 + c], d1, d2, |a, b| a + b);
        combine(t[8 + c], d2, d1, |a, b| a - b);
        combine(t[12 + c], d1, d3, |a, b| a - b);
    }
    for r in 0..4 {
        let [t0, t1, t2, t3] = [&*t[4 * r], &*t[4 * r + 1], &*t[4 * r + 2], &*t[4 * r + 3]];
        combine(v[4 * r], t0, t2, |a, b| a - b);
        combine(v[4 * r + 1], t1, t2, |a, b| a + b);
        combine(v[4 * r + 2], t2, t1, |a, b| a - b);
        combine(v[4 * r + 3], t1, t3, |a, b| a - b);
    }
}

/// `out[i] = f(a[i], b[i])`: one vectorised pass.
#[inline(always)]
fn combine(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(a, b);
    }
}

/// `out[i] = f(a[i], b[i], c[i])`: one vectorised pass.
#[inline(always)]
fn combine3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) {
    for (o, ((&a, &b), &c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
        *o = f(a, b, c);
    }
}
