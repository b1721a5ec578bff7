//! The CPU engine's one matrix multiply, `C = α·A·B + β·C` over strided f32 views, on `matrixmultiply`'s packed,
//! cache-blocked kernels (runtime AVX/FMA dispatch, its own thread pool). Every GEMM-shaped op of the CPU engine
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

/// `c = alpha · a · b + beta · c` for `a` `m × k`, `b` `k × n`, `c` `m × n`, each a view into its slice.
///
/// # Panics
/// When the shapes do not chain or a view reaches past its slice: callers check user shapes first, so this is a
/// programming error, and the bounds check is what makes the unsafe call below sound.
pub fn gemm(
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
