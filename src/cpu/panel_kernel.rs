//! `c = a · b` as outer products on AVX-512, for `b` packed in panels of [`PANEL`] columns (`[panel][k][PANEL]`,
//! zero past the last column): a tile of 12 rows of `a` by one panel keeps 24 lanes-of-16 sums in registers, each step
//! of `k` loading the panel's row once and broadcasting one value of each row of `a`. No sum is ever reduced across
//! lanes, so short depths cost nothing extra: the products of a Winograd convolution (depth = input channels, often
//! 128) run at the speed of long ones, where the dot kernel (src/cpu/dot_kernel.rs) spends half its time reducing.
//!
//! Numerics: each output is one chain of fused multiply-adds in `k` order, so the result depends only on the shapes;
//! within γ_k of the exact dot product.

use std::arch::x86_64::{
    __m512, __mmask16, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_set1_ps,
    _mm512_setzero_ps,
};

use crate::cpu::dot_kernel::Rows;

/// Columns of `b` per packed panel: two vectors of 16 (src/cpu/panel_gemm.rs packs to this).
pub const PANEL: usize = 32;
/// Rows of `a` per tile: 12 × 2 sums, the panel's row and one broadcast fill 27 of the 32 registers.
const TILE_ROWS: usize = 12;

/// Whether this CPU runs the kernel (checked once by the standard library, then cached).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// `c[i][j] = Σ_k a[i][k] · b[k][j]` for an `R × PANEL` tile, storing the lanes `mask` selects of each half.
///
/// # Safety
/// Rows `0..R` of `a` hold `depth` readable values, `panel` holds `depth · PANEL`, the masked elements of `c`'s
/// `R` rows are writable and overlap neither input, and the CPU has AVX-512 F.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize>(
    a: Rows<*const f32>,
    panel: *const f32,
    depth: usize,
    c: Rows<*mut f32>,
    mask: [__mmask16; 2],
) {
    let mut sums: [[__m512; 2]; R] = [[_mm512_setzero_ps(); 2]; R];
    for k in 0..depth {
        let b = [
            _mm512_loadu_ps(panel.add(k * PANEL)),
            _mm512_loadu_ps(panel.add(k * PANEL + 16)),
        ];
        for (r, row) in sums.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*a.at.add(r * a.stride + k));
            row[0] = _mm512_fmadd_ps(x, b[0], row[0]);
            row[1] = _mm512_fmadd_ps(x, b[1], row[1]);
        }
    }
    for (r, row) in sums.iter().enumerate() {
        let out = c.at.add(r * c.stride);
        _mm512_mask_storeu_ps(out, mask[0], row[0]);
        _mm512_mask_storeu_ps(out.add(16), mask[1], row[1]);
    }
}

/// [`tile`] for the last `rows < TILE_ROWS` rows, each count its own unrolled instance.
///
/// # Safety
/// As [`tile`] for `rows` rows.
#[target_feature(enable = "avx512f")]
unsafe fn edge_tile(
    rows: usize,
    a: Rows<*const f32>,
    panel: *const f32,
    depth: usize,
    c: Rows<*mut f32>,
    mask: [__mmask16; 2],
) {
    macro_rules! by_rows {
        ($($r:literal)*) => { $( if rows == $r { return tile::<$r>(a, panel, depth, c, mask); } )* };
    }
    by_rows!(1 2 3 4 5 6 7 8 9 10 11);
    unreachable!("an edge tile of {rows} rows is larger than the kernel's");
}

/// `c = a · b` for `a` `m × k`, `b` `k × n` packed in panels and `c` `m × n`, on the calling thread: panel by panel
/// (each stays in L1/L2 while every row of `a` passes it), 12 rows at a time.
///
/// # Safety
/// `a` holds `m` rows of `k` readable values at its stride, `packed` holds `n.div_ceil(PANEL) · k · PANEL` values,
/// `c`'s `m × n` elements at its stride are writable and overlap neither, and [`available`] is true.
#[target_feature(enable = "avx512f")]
pub unsafe fn gemm(
    (m, k, n): (usize, usize, usize),
    a: Rows<*const f32>,
    packed: *const f32,
    c: Rows<*mut f32>,
) {
    for (p, j) in (0..n).step_by(PANEL).enumerate() {
        let cols = PANEL.min(n - j);
        let lanes = |first: usize| {
            (((1u32 << cols.saturating_sub(first).min(16)) - 1) & 0xffff) as __mmask16
        };
        let mask = [lanes(0), lanes(16)];
        let panel = packed.add(p * k * PANEL);
        for i in (0..m).step_by(TILE_ROWS) {
            let a = Rows {
                at: a.at.add(i * a.stride),
                ..a
            };
            let c = Rows {
                at: c.at.add(i * c.stride + j),
                ..c
            };
            match TILE_ROWS.min(m - i) {
                TILE_ROWS => tile::<TILE_ROWS>(a, panel, k, c, mask),
                rows => edge_tile(rows, a, panel, k, c, mask),
            }
        }
    }
}
