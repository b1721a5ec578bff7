//! The CPU engine's general matrix multiply, `C = α·A·B + β·C` over strided f32 views, on `matrixmultiply`'s packed,
//! cache-blocked kernels (runtime AVX-512/AVX/FMA dispatch), row or column blocks over the cores: attention's two
//! products, and the products against a weight where the dot kernel does not run ([`crate::cpu::weight_gemm`]: no
//! AVX-512, or depths too short). f32 accumulation throughout.

use std::cell::RefCell;

use crate::cpu::parallel::{for_each_part, SharedOut};

/// A strided matrix view: element `(i, j)` is at `offset + i·row_stride + j·col_stride` of its slice. Strides are
/// in elements; a transposed view swaps them.
#[derive(Clone, Copy, Debug)]
pub struct MatrixLayout {
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl MatrixLayout {
    /// A row-major `rows × cols` matrix whose rows are `row_stride` apart (`cols` when packed).
    pub fn row_major(rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    /// The transpose of this view (no data moves).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// The index one past the last element the view touches (0 for an empty view).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// Below this many flops a GEMM runs on the calling thread: splitting it costs more than it saves.
const PARALLEL_FLOPS: usize = 1 << 22;

/// `c = alpha · a · b + beta · c` for `a` `m × k`, `b` `k × n`, `c` `m × n`, each a view into its slice, split over
/// the machine's cores by rows of `c` or, when `c` is wider than tall, by its columns: each part packs the whole of
/// the operand it does not split, so splitting the larger dimension packs less (a linear layer over a few hundred
/// tokens would otherwise pack its whole weight once per core). Each part is one single-threaded GEMM, so there is no
/// nested pool.
///
/// # Panics
/// When the shapes do not chain or a view reaches past its slice: callers check user shapes first, so this is a
/// programming error, and the bounds check is what makes the unsafe calls sound.
pub fn gemm(
    alpha: f32,
    a: (&[f32], MatrixLayout),
    b: (&[f32], MatrixLayout),
    beta: f32,
    c: (&mut [f32], MatrixLayout),
) {
    let ((a, la), (b, lb), (c, lc)) = (a, b, c);
    check_views((a, la), (b, lb), (c, lc));
    let threads = rayon::current_num_threads();
    let (m, n) = (lc.rows, lc.cols);
    if threads == 1 || 2 * m * la.cols * n < PARALLEL_FLOPS || m.max(n) < 2 * threads {
        return gemm_serial(alpha, (a, la), (b, lb), beta, (c, lc));
    }
    // Rows of C with the same rows of A, or columns of C with the same columns of B (matrixmultiply's epilogue wants
    // C's columns contiguous, so C is not transposed to make one case of the two).
    let by_rows = m >= n;
    let parts = if by_rows { m } else { n };
    let per = parts.div_ceil(threads);
    let c = SharedOut(c.as_mut_ptr());
    for_each_part(parts, per, |first, len| {
        let (mut la, mut lb, mut lc) = (la, lb, lc);
        let (a_off, b_off, c_off) = if by_rows {
            (la.rows, lc.rows) = (len, len);
            (first * la.row_stride, 0, first * lc.row_stride)
        } else {
            (lb.cols, lc.cols) = (len, len);
            (0, first * lb.col_stride, first * lc.col_stride)
        };
        // SAFETY: each part's view lies inside the checked whole view of `c` (so inside its allocation), and
        // the parts address disjoint elements: distinct rows or distinct columns of a view whose elements
        // are distinct (`check_views`).
        unsafe {
            sgemm(
                alpha,
                (a[a_off..].as_ptr(), la),
                (b[b_off..].as_ptr(), lb),
                beta,
                (c.at(c_off), lc),
            )
        }
    });
}

/// Output columns per panel of a 16-bit weight: matrixmultiply's column block (`NC`, 1024), so that widening the
/// weight a panel at a time re-packs `a` no more often than one f32 GEMM over the whole weight does.
const HALF_PANEL_COLUMNS: usize = 1024;

thread_local! {
    /// A core's widened weight panel, kept between calls (at most `HALF_PANEL_COLUMNS · k` floats).
    static WIDENED_PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `c = a · wᵀ` for `a` `m × k`, a weight `w` `n × k` row-major that `widen(start, out)` writes as f32 (values
/// `start..start + out.len()`; a checkpoint's bf16/f16 weight kept as it is) and `c` `m × n`: the columns of `c` are
/// split into panels over the cores, and each panel's rows of `w` are widened into the core's own buffer (a few MB, so
/// still in cache when the GEMM packs it) and multiplied there. The same f32 values and order of operations as
/// [`gemm`] over the widened weight: widening is exact.
///
/// # Panics
/// As [`gemm`].
pub fn gemm_widened_weight(
    a: (&[f32], MatrixLayout),
    widen: impl Fn(usize, &mut [f32]) + Sync,
    c: (&mut [f32], MatrixLayout),
) {
    let ((a, la), (c, lc)) = (a, c);
    let (n, k) = (lc.cols, la.cols);
    let lw = MatrixLayout::row_major(n, k, k).t();
    // The whole views; each panel's views below lie inside them.
    assert!(
        la.rows == lc.rows,
        "gemm shapes do not chain: {la:?} · {n}×{k} weightᵀ → {lc:?}"
    );
    assert!(
        la.extent() <= a.len() && lc.extent() <= c.len(),
        "a gemm view reaches past its slice"
    );
    check_distinct(lc);
    if lc.rows == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let panels = n
        .div_ceil(HALF_PANEL_COLUMNS)
        .next_multiple_of(threads)
        .min(n);
    let per = n.div_ceil(panels);
    let c = SharedOut(c.as_mut_ptr());
    for_each_part(n, per, |first, cols| {
        WIDENED_PANEL.with_borrow_mut(|panel| {
            panel.resize(cols * k, 0.0);
            widen(first * k, panel);
            let lb = MatrixLayout { cols, ..lw };
            let lc = MatrixLayout { cols, ..lc };
            // SAFETY: `a` was checked whole; the panel holds `cols · k` floats, which `lb` (`k × cols`,
            // strides 1 and k) spans; this part of `c` is columns `first..first + cols` of the checked
            // view, whose elements are distinct, and no other part writes them.
            unsafe {
                let c = c.at(first * lc.col_stride);
                sgemm(1.0, (a.as_ptr(), la), (panel.as_ptr(), lb), 0.0, (c, lc))
            }
        });
    });
}

/// [`gemm`] on the calling thread: for callers that already spread independent GEMMs over the cores (attention's
/// heads).
///
/// # Panics
/// As [`gemm`].
pub fn gemm_serial(
    alpha: f32,
    a: (&[f32], MatrixLayout),
    b: (&[f32], MatrixLayout),
    beta: f32,
    c: (&mut [f32], MatrixLayout),
) {
    let ((a, la), (b, lb), (c, lc)) = (a, b, c);
    check_views((a, la), (b, lb), (c, lc));
    // SAFETY: the views were checked against their slices, and `c` is a unique borrow.
    unsafe {
        sgemm(
            alpha,
            (a.as_ptr(), la),
            (b.as_ptr(), lb),
            beta,
            (c.as_mut_ptr(), lc),
        )
    }
}

/// Panics unless the views chain, lie inside their slices, and `c`'s view addresses each element once (a part's rows
/// or columns overlapping another's would be written by two threads).
fn check_views(a: (&[f32], MatrixLayout), b: (&[f32], MatrixLayout), c: (&[f32], MatrixLayout)) {
    let ((a, la), (b, lb), (c, lc)) = (a, b, c);
    assert!(
        la.cols == lb.rows && la.rows == lc.rows && lb.cols == lc.cols,
        "gemm shapes do not chain: {la:?} · {lb:?} → {lc:?}"
    );
    assert!(
        la.extent() <= a.len() && lb.extent() <= b.len() && lc.extent() <= c.len(),
        "a gemm view reaches past its slice"
    );
    check_distinct(lc);
}

/// Panics unless the view addresses each element once (a part's rows or columns overlapping another's would be
/// written by two threads).
fn check_distinct(lc: MatrixLayout) {
    let distinct = lc.rows <= 1
        || lc.cols <= 1
        || (lc.col_stride >= 1 && lc.row_stride >= lc.cols * lc.col_stride)
        || (lc.row_stride >= 1 && lc.col_stride >= lc.rows * lc.row_stride);
    assert!(
        distinct,
        "gemm's output view {lc:?} addresses an element twice"
    );
}

/// `matrixmultiply`'s packed, cache-blocked kernel (AVX-512, AVX/FMA or portable, chosen at run time) on one thread.
///
/// # Safety
/// The views lie inside live allocations (`check_views`), and `c`'s elements overlap neither input.
unsafe fn sgemm(
    alpha: f32,
    (a, la): (*const f32, MatrixLayout),
    (b, lb): (*const f32, MatrixLayout),
    beta: f32,
    (c, lc): (*mut f32, MatrixLayout),
) {
    if lc.rows == 0 || lc.cols == 0 {
        return;
    }
    let stride = |s: usize| isize::try_from(s).expect("a slice's stride fits isize");
    matrixmultiply::sgemm(
        la.rows,
        la.cols,
        lb.cols,
        alpha,
        a,
        stride(la.row_stride),
        stride(la.col_stride),
        b,
        stride(lb.row_stride),
        stride(lb.col_stride),
        beta,
        c,
        stride(lc.row_stride),
        stride(lc.col_stride),
    );
}
