//! `c = a · wᵀ` against a weight's rows as the checkpoint stores them (f32, bf16 or f16, row-major `n × k`): the GEMM
//! of the linear layers and 1×1 convolutions. On a CPU with AVX-512 it runs as dot products along `k`
//! (src/cpu/dot_kernel.rs): activations and weight rows are both contiguous along `k`, so nothing is packed and a
//! 16-bit weight is widened in the registers it is loaded into. A linear layer then reads its weight once, in its 2
//! bytes, instead of widening it to 4 and packing it again on every call. Elsewhere, and for depths too short for a
//! dot product to pay, the weight is widened and goes through [`gemm`].

use std::borrow::Cow;
use std::ops::Range;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::cpu::gemm::{gemm, gemm_serial, gemm_widened_weight, MatrixLayout};
use crate::tensor::{HalfValues, HostTensor};

/// A weight's values in the format they are kept in, row-major.
#[derive(Clone, Copy, Debug)]
pub enum WeightRows<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// bfloat16 values.
    Bf16(&'a [bf16]),
    /// IEEE half values.
    F16(&'a [f16]),
}

impl<'a> WeightRows<'a> {
    /// A tensor's values: its 16-bit ones when it keeps them ([`HostTensor::half`]), else its f32 ones.
    pub fn of(tensor: &'a HostTensor) -> Self {
        match tensor.half() {
            Some(HalfValues::Bf16(v)) => Self::Bf16(v),
            Some(HalfValues::F16(v)) => Self::F16(v),
            None => Self::F32(tensor.data()),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::Bf16(v) => v.len(),
            Self::F16(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values in `range` (a group's rows of a grouped convolution's weight).
    ///
    /// # Panics
    /// When `range` passes the end.
    pub fn slice(self, range: Range<usize>) -> Self {
        match self {
            Self::F32(v) => Self::F32(&v[range]),
            Self::Bf16(v) => Self::Bf16(&v[range]),
            Self::F16(v) => Self::F16(&v[range]),
        }
    }

    /// Values `start..start + out.len()` as f32 (exact).
    pub(crate) fn widen_into(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            Self::F32(v) => out.copy_from_slice(&v[start..end]),
            Self::Bf16(v) => v[start..end].convert_to_f32_slice(out),
            Self::F16(v) => v[start..end].convert_to_f32_slice(out),
        }
    }

    /// Every value as f32, borrowed when they already are.
    fn widened(&self) -> Cow<'a, [f32]> {
        match *self {
            Self::F32(v) => Cow::Borrowed(v),
            _ => {
                let mut out = vec![0.0; self.len()];
                self.widen_into(0, &mut out);
                Cow::Owned(out)
            }
        }
    }
}

/// Without the dot kernel, a 16-bit weight of at most this many values (4 MB in f32) is widened whole for the call:
/// cheap beside its GEMM, and the GEMM then splits a tall output by rows.
const WIDEN_WHOLE_ELEMENTS: usize = 1 << 20;

/// `c = a · wᵀ` for `a` `m × k`, `w` `n × k` row-major (its `n · k` values) and `c` `m × n`, `a` and `c` strided views
/// into their slices. The result is the same on any split over the cores, and the same for a weight in f32 as for
/// its bf16 or f16 values widened (the kernels see the same f32 values either way).
///
/// # Panics
/// When the shapes do not chain, `w` does not hold `n · k` values or a view reaches past its slice: callers check
/// user shapes first, so this is a programming error, and the checks are what make the unsafe calls sound.
pub fn gemm_weight(a: (&[f32], MatrixLayout), w: WeightRows<'_>, c: (&mut [f32], MatrixLayout)) {
    product(a, w, c, Cores::All);
}

/// [`gemm_weight`] on the calling thread: for callers that already spread independent products over the cores (a
/// convolution's tiles of pixels).
///
/// # Panics
/// As [`gemm_weight`].
pub fn gemm_weight_serial(
    a: (&[f32], MatrixLayout),
    w: WeightRows<'_>,
    c: (&mut [f32], MatrixLayout),
) {
    product(a, w, c, Cores::One);
}

/// Whether a product may spread over the cores.
#[derive(Clone, Copy, PartialEq)]
enum Cores {
    All,
    One,
}

fn product(
    a: (&[f32], MatrixLayout),
    w: WeightRows<'_>,
    c: (&mut [f32], MatrixLayout),
    cores: Cores,
) {
    let ((a, la), (c, lc)) = (a, c);
    let (m, k, n) = (la.rows, la.cols, lc.cols);
    assert!(
        lc.rows == m && w.len() == n * k,
        "gemm_weight shapes do not chain: {la:?} · ({} weight values)ᵀ → {lc:?}",
        w.len()
    );
    #[cfg(target_arch = "x86_64")]
    if k >= dot_kernel_path::MIN_DEPTH
        && la.col_stride == 1
        && lc.col_stride == 1
        && dot_kernel_path::available()
    {
        return dot_kernel_path::gemm((a, la), w, (c, lc), cores == Cores::All);
    }
    let lw = MatrixLayout::row_major(n, k, k).t();
    match (w, cores) {
        (WeightRows::F32(w), Cores::All) => gemm(1.0, (a, la), (w, lw), 0.0, (c, lc)),
        (_, Cores::One) => gemm_serial(1.0, (a, la), (&w.widened(), lw), 0.0, (c, lc)),
        _ if w.len() <= WIDEN_WHOLE_ELEMENTS => {
            gemm(1.0, (a, la), (&w.widened(), lw), 0.0, (c, lc))
        }
        _ => gemm_widened_weight((a, la), |start, out| w.widen_into(start, out), (c, lc)),
    }
}

/// The dot kernel's checks and split over the cores.
#[cfg(target_arch = "x86_64")]
mod dot_kernel_path {
    use super::WeightRows;
    use crate::cpu::dot_kernel::{self, Rows, WeightLanes, TILE_COLS, TILE_ROWS};
    use crate::cpu::gemm::MatrixLayout;
    use crate::cpu::parallel::{for_each_part, SharedOut};

    pub use dot_kernel::available;

    /// Depths below this go through [`gemm`](super::gemm): a dot product over fewer than 8 vectors of 16 spends as long
    /// reducing its lanes as multiplying.
    pub const MIN_DEPTH: usize = 128;

    /// Below this many flops the product runs on the calling thread.
    const PARALLEL_FLOPS: usize = 1 << 22;

    /// [`super::gemm_weight`] on the dot kernel, over the cores when `parallel`; `a` and `c` have unit column
    /// strides.
    pub fn gemm(
        (a, la): (&[f32], MatrixLayout),
        w: WeightRows<'_>,
        (c, lc): (&mut [f32], MatrixLayout),
        parallel: bool,
    ) {
        match w {
            WeightRows::F32(w) => split((a, la), w, (c, lc), parallel),
            WeightRows::Bf16(w) => split((a, la), w, (c, lc), parallel),
            WeightRows::F16(w) => split((a, la), w, (c, lc), parallel),
        }
    }

    /// Splits `c`'s columns (whole tiles of them) over the cores, or its rows when it has too few columns to go round;
    /// one part when not `parallel`.
    fn split<W: WeightLanes>(
        (a, la): (&[f32], MatrixLayout),
        w: &[W],
        (c, lc): (&mut [f32], MatrixLayout),
        parallel: bool,
    ) {
        let (m, k, n) = (la.rows, la.cols, lc.cols);
        let extent = |rows: usize, stride: usize| {
            if rows == 0 {
                0
            } else {
                (rows - 1) * stride + k
            }
        };
        assert!(
            extent(m, la.row_stride) <= a.len()
                && (m == 0 || (m - 1) * lc.row_stride + n <= c.len())
                && (m <= 1 || lc.row_stride >= n),
            "a gemm_weight view reaches past its slice or overlaps itself: {la:?}, {lc:?}"
        );
        if m == 0 || n == 0 {
            return;
        }
        let threads = rayon::current_num_threads();
        let by_rows = n < 4 * TILE_COLS * threads && m >= 4 * TILE_ROWS * threads;
        let (parts, tile) = if by_rows {
            (m, TILE_ROWS)
        } else {
            (n, TILE_COLS)
        };
        let per = if !parallel || 2 * m * k * n < PARALLEL_FLOPS {
            parts
        } else {
            parts.div_ceil(threads).next_multiple_of(tile)
        };
        let out = SharedOut(c.as_mut_ptr());
        for_each_part(parts, per, |first, len| {
            let (rows, cols, a_at, w_at, c_at) = if by_rows {
                (len, n, first * la.row_stride, 0, first * lc.row_stride)
            } else {
                (m, len, 0, first * k, first)
            };
            // SAFETY: the views were checked against their slices above, `w` holds `n × k` values (checked by the
            // caller), this part's rows or columns of `c` are its own, and `available()` was true.
            unsafe {
                dot_kernel::gemm(
                    (rows, k, cols),
                    Rows {
                        at: a.as_ptr().add(a_at),
                        stride: la.row_stride,
                    },
                    Rows {
                        at: w.as_ptr().add(w_at),
                        stride: k,
                    },
                    Rows {
                        at: out.at(c_at),
                        stride: lc.row_stride,
                    },
                )
            }
        });
    }
}
