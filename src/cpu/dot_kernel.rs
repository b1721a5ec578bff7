//! `c = a · wᵀ` as dot products along `k` on AVX-512, for [`crate::cpu::weight_gemm`]: `a` (activations, f32) and
//! `w` (a weight's rows, f32, bf16 or f16) are both contiguous along `k`, so a tile of 4 rows of `a` and 6 rows of `w`
//! keeps 24 lanes-of-16 sums in registers, loads each operand straight from where it lies (nothing is packed), and
//! widens a 16-bit weight in the register it was loaded into. Each sum is reduced across its lanes once per depth
//! chunk; depths beyond `DEPTH_CHUNK` are split so that a tile's rows stay in L1 and L2, and later chunks add to `c`.
//!
//! Numerics: f32 products and sums (fused multiply-add), 16 partial sums per output summed in a fixed tree, so the
//! result depends only on the shapes, never on the split over the cores; within γ_k of the exact dot product as any
//! f32 summation order (tests/cpu_gemm.rs).

use std::arch::x86_64::{
    __m512, __mmask16, _mm256_loadu_si256, _mm256_maskz_loadu_epi16, _mm512_castsi512_ps,
    _mm512_cvtepu16_epi32, _mm512_cvtph_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_maskz_loadu_ps, _mm512_reduce_add_ps, _mm512_setzero_ps, _mm512_slli_epi32,
};

use half::{bf16, f16};

/// Rows of `a` per tile.
pub const TILE_ROWS: usize = 4;
/// Rows of `w` (columns of `c`) per tile: 4 × 6 sums, 4 rows of `a` and one of `w` fill 29 of the 32 registers.
pub const TILE_COLS: usize = 6;
/// Depths up to this are one chunk (one reduction per output); deeper ones are split evenly.
const DEPTH_CHUNK: usize = 4096;
/// Bytes of `w` a block of tiles reuses from L2 while every row of `a` passes by.
const WEIGHT_BLOCK_BYTES: usize = 512 * 1024;

/// A weight element type the kernel can load 16 of, widened to f32 lanes.
pub trait WeightLanes: Copy + Sync {
    /// Loads `p[0..16]` as f32.
    ///
    /// # Safety
    /// The 16 values are readable; the CPU has AVX-512 F, BW and VL.
    unsafe fn load(p: *const Self) -> __m512;
    /// Loads the values of `p[0..16]` whose bit is set in `mask`, zeros elsewhere (a depth's tail).
    ///
    /// # Safety
    /// The masked values are readable; the CPU has AVX-512 F, BW and VL.
    unsafe fn load_masked(p: *const Self, mask: __mmask16) -> __m512;
}

impl WeightLanes for f32 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const Self, mask: __mmask16) -> __m512 {
        _mm512_maskz_loadu_ps(mask, p)
    }
}

impl WeightLanes for bf16 {
    /// A bf16 is the high half of the f32 of the same value: zero-extend to 32 bits, shift left 16.
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        let half = _mm256_loadu_si256(p.cast());
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(half)))
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const Self, mask: __mmask16) -> __m512 {
        let half = _mm256_maskz_loadu_epi16(mask, p.cast());
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(half)))
    }
}

impl WeightLanes for f16 {
    #[inline(always)]
    unsafe fn load(p: *const Self) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const Self, mask: __mmask16) -> __m512 {
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p.cast()))
    }
}

/// Whether this CPU runs the kernel (checked once by the standard library, then cached).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

/// A strided operand: the first element and the distance between rows, in elements.
#[derive(Clone, Copy)]
pub struct Rows<P> {
    pub at: P,
    pub stride: usize,
}

/// `c[i][j] = Σ_k a[i][k] · w[j][k]` (or `+=` when `add`) for a `R × C` tile over depth `depth`.
///
/// # Safety
/// Rows `0..R` of `a` and `0..C` of `w` hold `depth` readable values each, `c`'s `R × C` elements are writable and
/// overlap neither input, and the CPU has AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
unsafe fn tile<W: WeightLanes, const R: usize, const C: usize>(
    a: Rows<*const f32>,
    w: Rows<*const W>,
    depth: usize,
    c: Rows<*mut f32>,
    add: bool,
) {
    let mut sums = [[_mm512_setzero_ps(); C]; R];
    let whole = depth / 16 * 16;
    let mut k = 0;
    while k < whole {
        let mut x = [_mm512_setzero_ps(); R];
        for (r, x) in x.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(a.at.add(r * a.stride + k));
        }
        for j in 0..C {
            let y = W::load(w.at.add(j * w.stride + k));
            for (row, x) in sums.iter_mut().zip(x) {
                row[j] = _mm512_fmadd_ps(x, y, row[j]);
            }
        }
        k += 16;
    }
    if k < depth {
        let mask = ((1u32 << (depth - k)) - 1) as __mmask16;
        let mut x = [_mm512_setzero_ps(); R];
        for (r, x) in x.iter_mut().enumerate() {
            *x = _mm512_maskz_loadu_ps(mask, a.at.add(r * a.stride + k));
        }
        for j in 0..C {
            let y = W::load_masked(w.at.add(j * w.stride + k), mask);
            for (row, x) in sums.iter_mut().zip(x) {
                row[j] = _mm512_fmadd_ps(x, y, row[j]);
            }
        }
    }
    for (r, row) in sums.iter().enumerate() {
        for (j, lanes) in row.iter().enumerate() {
            let out = c.at.add(r * c.stride + j);
            let sum = _mm512_reduce_add_ps(*lanes);
            *out = if add { *out + sum } else { sum };
        }
    }
}

/// [`tile`] for an edge tile of `rows ≤ TILE_ROWS` by `cols ≤ TILE_COLS`, each shape its own unrolled instance.
///
/// # Safety
/// As [`tile`] for `rows × cols`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn edge_tile<W: WeightLanes>(
    (rows, cols): (usize, usize),
    a: Rows<*const f32>,
    w: Rows<*const W>,
    depth: usize,
    c: Rows<*mut f32>,
    add: bool,
) {
    macro_rules! by_shape {
        ($($r:literal)*; $cols:tt) => { $( if rows == $r { by_shape!(@cols $r $cols); } )* };
        (@cols $r:literal [$($c:literal)*]) => {
            $( if cols == $c { return tile::<W, $r, $c>(a, w, depth, c, add); } )*
        };
    }
    by_shape!(1 2 3 4; [1 2 3 4 5 6]);
    unreachable!("an edge tile of {rows} × {cols} is larger than the kernel's");
}

/// `c = a · wᵀ` for `a` `m × k`, `w` `n × k` and `c` `m × n` on the calling thread: blocks of `w`'s rows that fit in
/// L2 (`WEIGHT_BLOCK_BYTES`), every row of `a` through each block in tiles, depth in chunks.
///
/// # Safety
/// `a` holds `m` rows and `w` `n` rows of `k` readable values at their strides, `c`'s `m × n` elements at its stride
/// are writable and overlap neither, and [`available`] is true.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub unsafe fn gemm<W: WeightLanes>(
    (m, k, n): (usize, usize, usize),
    a: Rows<*const f32>,
    w: Rows<*const W>,
    c: Rows<*mut f32>,
) {
    let chunks = k.div_ceil(DEPTH_CHUNK).max(1);
    let chunk = k.div_ceil(chunks).next_multiple_of(16);
    let block = (WEIGHT_BLOCK_BYTES / (chunk * size_of::<W>()) / TILE_COLS).max(1) * TILE_COLS;
    for k0 in (0..k).step_by(chunk) {
        let depth = chunk.min(k - k0);
        for j0 in (0..n).step_by(block) {
            let j_end = (j0 + block).min(n);
            for i in (0..m).step_by(TILE_ROWS) {
                let rows = TILE_ROWS.min(m - i);
                let a = Rows {
                    at: a.at.add(i * a.stride + k0),
                    ..a
                };
                for j in (j0..j_end).step_by(TILE_COLS) {
                    let cols = TILE_COLS.min(j_end - j);
                    let w = Rows {
                        at: w.at.add(j * w.stride + k0),
                        ..w
                    };
                    let c = Rows {
                        at: c.at.add(i * c.stride + j),
                        ..c
                    };
                    if (rows, cols) == (TILE_ROWS, TILE_COLS) {
                        tile::<W, TILE_ROWS, TILE_COLS>(a, w, depth, c, k0 > 0);
                    } else {
                        edge_tile((rows, cols), a, w, depth, c, k0 > 0);
                    }
                }
            }
        }
    }
}
