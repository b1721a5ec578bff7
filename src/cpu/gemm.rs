//! The CPU engine's one matrix multiply, `C = α·A·B + β·C` over strided f32 views, on `matrixmultiply`'s packed,
//! cache-blocked kernels (runtime AVX/FMA dispatch), row blocks over the cores. Every GEMM-shaped op of the CPU engine
//! (linear layers, grouped 1×1 convolutions, 3×3 convolutions as tiled im2col, attention's two products) comes here,
//! so one place decides how the machine's cores and caches are used. f32 accumulation throughout.

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

/// `c = alpha · a · b + beta · c` for `a` `m × k`, `b` `k × n`, `c` `m × n`, each a view into its slice, with the
/// rows of `c` split over the machine's cores (each block one single-threaded GEMM, so there is no nested pool).
///
/// # Panics
/// When the shapes do not chain or a view reaches past its slice: callers check user shapes first, so this is a
/// programming error, and the bounds check is what makes the unsafe call in [`gemm_serial`] sound.
pub fn gemm(
    alpha: f32,
    a: (&[f32], MatrixLayout),
    b: (&[f32], MatrixLayout),
    beta: f32,
    c: (&mut [f32], MatrixLayout),
) {
    let ((a, la), (c, lc)) = (a, c);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let flops = 2 * la.rows * la.cols * lc.cols;
    // Row blocks of `c` are disjoint slices only when a row's elements come before the next row's.
    let splittable = lc.col_stride == 1 && lc.row_stride >= lc.cols;
    if threads == 1 || flops < PARALLEL_FLOPS || lc.rows < 2 * threads || !splittable {
        return gemm_serial(alpha, (a, la), b, beta, (c, lc));
    }
    let per = lc.rows.div_ceil(threads);
    std::thread::scope(|scope| {
        let mut rest = c;
        for first in (0..lc.rows).step_by(per) {
            let rows = per.min(lc.rows - first);
            let take = if first + rows == lc.rows {
                rest.len()
            } else {
                rows * lc.row_stride
            };
            let (block, tail) = std::mem::take(&mut rest).split_at_mut(take);
            rest = tail;
            let a_block = (
                &a[(first * la.row_stride).min(a.len())..],
                MatrixLayout { rows, ..la },
            );
            let c_block = MatrixLayout { rows, ..lc };
            scope.spawn(move || gemm_serial(alpha, a_block, b, beta, (block, c_block)));
        }
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
    assert!(
        la.cols == lb.rows && la.rows == lc.rows && lb.cols == lc.cols,
        "gemm shapes do not chain: {la:?} · {lb:?} → {lc:?}"
    );
    assert!(
        la.extent() <= a.len() && lb.extent() <= b.len() && lc.extent() <= c.len(),
        "a gemm view reaches past its slice"
    );
    if lc.rows == 0 || lc.cols == 0 {
        return;
    }
    let stride = |s: usize| isize::try_from(s).expect("a slice's stride fits isize");
    // SAFETY: every element the views address lies inside its slice (checked above; matrixmultiply reads
    // exactly the m×k, k×n and m×n elements the layouts describe), and `c` is a unique borrow, so it aliases
    // neither input.
    unsafe {
        matrixmultiply::sgemm(
            la.rows,
            la.cols,
            lb.cols,
            alpha,
            a.as_ptr(),
            stride(la.row_stride),
            stride(la.col_stride),
            b.as_ptr(),
            stride(lb.row_stride),
            stride(lb.col_stride),
            beta,
            c.as_mut_ptr(),
            stride(lc.row_stride),
            stride(lc.col_stride),
        );
    }
}
