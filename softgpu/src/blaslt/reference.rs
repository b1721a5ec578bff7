//! The reference matmul, written from the cuBLASLt documentation (not from the engine's wrapper, which it exists to
//! check): per batch q, D = act(alpha·op(A)·op(B) + beta·C + bias).
//!
//! - Layouts are column-major: element (i, j) of a stored rows×cols matrix at `i + j·ld`, batch q `q·stride`
//!   elements further on. op(X) is X, or Xᵀ when TRANSA/TRANSB say so; the layout describes X as stored.
//! - The bias has m elements (D's rows) and is added to every column; act is identity, max(x, 0) (RELU) or the tanh
//!   GELU the docs give.
//! - Precision as COMPUTE_32F: operands widened exactly to f32; each output one f32 sum of f32 products in ascending
//!   k; alpha, beta, C and the bias applied in f32; one rounding to D's type (to nearest even) at the end.
//! - When beta is 0, C is not read: it may be garbage, or D itself.
//!
//! Loop order: op(A) is gathered row-major and op(B) column-major into f32 scratch, so every output is a dot
//! product of two contiguous runs, four rows at a time; large products share their columns among threads. Each
//! output is still one ascending sum, so the result depends on neither.

use std::num::NonZeroUsize;
use std::slice;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::problem::{Elem, Matrix, Problem};

/// The device addresses of one matmul's operands (`c` unused when beta is 0, `bias` when there is none).
#[derive(Clone, Copy, Debug)]
pub struct Operands {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
    pub bias: u64,
}

/// Computes `p` into D.
///
/// # Safety
/// Each operand `p` reads (A, B, C when beta ≠ 0, the bias when there is one) must be valid for reading, and D for
/// writing, over its extent, aligned to its element size; D must not overlap A, B or the bias.
pub unsafe fn execute(p: &Problem, alpha: f32, beta: f32, at: &Operands) {
    for q in 0..p.batch {
        let a = read(&p.a, at.a, q);
        let b = read(&p.b, at.b, q);
        // op(A) row-major is the stored A transposed when TRANSA is N, and the stored A itself when it is T.
        let a_rows = if p.trans_a {
            a
        } else {
            transpose(&a, p.a.rows, p.a.cols)
        };
        // op(B) column-major is the stored B when TRANSB is N, its transpose when it is T.
        let b_cols = if p.trans_b {
            transpose(&b, p.b.rows, p.b.cols)
        } else {
            b
        };
        let c = (beta != 0.0).then(|| read(&p.c, at.c, q));
        let bias = p.bias.map(|bias| read(&bias.vector(p.m), at.bias, q));

        let mut d = product(p.m, p.n, p.k, &a_rows, &b_cols);
        for (j, column) in d.chunks_mut(p.m.max(1)).enumerate() {
            for (i, x) in column.iter_mut().enumerate() {
                let mut v = alpha * *x;
                if let Some(c) = &c {
                    v += beta * c[i + j * p.m];
                }
                if let Some(bias) = &bias {
                    v += bias[i];
                }
                *x = p.activation.apply(v);
            }
            narrow(p.d.elem, column_address(&p.d, at.d, q, j), column);
        }
    }
}

/// Products below this many multiply-adds run on the calling thread.
const PARALLEL_WORK: usize = 1 << 20;

/// op(A)·op(B) in f32, column-major m×n, from op(A) row-major (`a_rows`, m×k) and op(B) column-major (`b_cols`,
/// k×n).
fn product(m: usize, n: usize, k: usize, a_rows: &[f32], b_cols: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    if m == 0 || n == 0 {
        return out;
    }
    let threads = if m * n * k < PARALLEL_WORK {
        1
    } else {
        std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
    };
    let columns_per_thread = n.div_ceil(threads);
    let row = |i: usize| &a_rows[i * k..(i + 1) * k];
    let fill = |first: usize, out: &mut [f32]| {
        for (j, column) in (first..).zip(out.chunks_mut(m)) {
            let b = &b_cols[j * k..(j + 1) * k];
            for (q, x) in column.chunks_exact_mut(4).enumerate() {
                let i = 4 * q;
                x.copy_from_slice(&dot4([row(i), row(i + 1), row(i + 2), row(i + 3)], b));
            }
            for (i, x) in column.iter_mut().enumerate().skip(m / 4 * 4) {
                *x = dot(row(i), b);
            }
        }
    };
    if threads == 1 {
        fill(0, &mut out);
    } else {
        std::thread::scope(|s| {
            for (t, part) in out.chunks_mut(columns_per_thread * m).enumerate() {
                s.spawn(move || fill(t * columns_per_thread, part));
            }
        });
    }
    out
}

/// One f32 sum of f32 products, in order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |sum, (x, y)| sum + x * y)
}

/// Four [`dot`]s with one `b`. The four sums are independent, so the CPU overlaps their additions, which one sum
/// alone has to wait for one by one.
fn dot4(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    let mut sums = [0.0f32; 4];
    for ((((y, x0), x1), x2), x3) in b.iter().zip(a[0]).zip(a[1]).zip(a[2]).zip(a[3]) {
        sums[0] += x0 * y;
        sums[1] += x1 * y;
        sums[2] += x2 * y;
        sums[3] += x3 * y;
    }
    sums
}

/// A dense column-major rows×cols matrix transposed: dense column-major cols×rows.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (j, column) in x.chunks(rows.max(1)).enumerate() {
        for (i, v) in column.iter().enumerate() {
            out[j + i * cols] = *v;
        }
    }
    out
}

/// The address of column `j` of batch `q` of `x`, stored at `base`.
fn column_address(x: &Matrix, base: u64, q: usize, j: usize) -> u64 {
    base + ((q * x.stride + j * x.ld) * x.elem.size()) as u64
}

/// Batch `q` of `x`, stored at `base`, widened to a dense column-major f32 matrix.
///
/// # Safety
/// As [`execute`]'s for the operand read.
unsafe fn read(x: &Matrix, base: u64, q: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.rows * x.cols);
    for j in 0..x.cols {
        widen(x.elem, column_address(x, base, q, j), x.rows, &mut out);
    }
    out
}

/// Appends `len` elements of type `elem` at `address`, widened (exactly) to f32.
///
/// # Safety
/// `address` must be valid for reading `len` elements and aligned to them.
unsafe fn widen(elem: Elem, address: u64, len: usize, out: &mut Vec<f32>) {
    if len == 0 {
        return;
    }
    let start = out.len();
    out.resize(start + len, 0.0);
    let dst = &mut out[start..];
    match elem {
        Elem::F32 => dst.copy_from_slice(slice::from_raw_parts(address as *const f32, len)),
        Elem::F16 => slice::from_raw_parts(address as *const f16, len).convert_to_f32_slice(dst),
        Elem::Bf16 => slice::from_raw_parts(address as *const bf16, len).convert_to_f32_slice(dst),
    }
}

/// Stores `values` at `address` as `elem`, rounded to nearest even.
///
/// # Safety
/// `address` must be valid for writing `values.len()` elements and aligned to them.
unsafe fn narrow(elem: Elem, address: u64, values: &[f32]) {
    let len = values.len();
    if len == 0 {
        return;
    }
    match elem {
        Elem::F32 => slice::from_raw_parts_mut(address as *mut f32, len).copy_from_slice(values),
        Elem::F16 => {
            slice::from_raw_parts_mut(address as *mut f16, len).convert_from_f32_slice(values)
        }
        Elem::Bf16 => {
            slice::from_raw_parts_mut(address as *mut bf16, len).convert_from_f32_slice(values)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blaslt::problem::{Activation, Bias};

    /// Deterministic values in [-1, 1) (splitmix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    /// Host memory standing in for device memory, in one element type.
    enum Buffer {
        F32(Vec<f32>),
        F16(Vec<f16>),
        Bf16(Vec<bf16>),
    }

    impl Buffer {
        fn new(elem: Elem, values: &[f32]) -> Self {
            match elem {
                Elem::F32 => Buffer::F32(values.to_vec()),
                Elem::F16 => Buffer::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
                Elem::Bf16 => Buffer::Bf16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
            }
        }

        fn address(&self) -> u64 {
            match self {
                Buffer::F32(v) => v.as_ptr() as u64,
                Buffer::F16(v) => v.as_ptr() as u64,
                Buffer::Bf16(v) => v.as_ptr() as u64,
            }
        }

        fn values(&self) -> Vec<f32> {
            match self {
                Buffer::F32(v) => v.clone(),
                Buffer::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
                Buffer::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            }
        }
    }

    /// `v` as an `elem` holds it.
    fn exact(elem: Elem, v: f32) -> f32 {
        Buffer::new(elem, &[v]).values()[0]
    }

    /// Batches of row-major matrices (`x[q][i][j]`).
    type Batches = Vec<Vec<Vec<f32>>>;

    fn random(rng: &mut Rng, elem: Elem, batch: usize, rows: usize, cols: usize) -> Batches {
        (0..batch)
            .map(|_| {
                (0..rows)
                    .map(|_| (0..cols).map(|_| exact(elem, rng.next())).collect())
                    .collect()
            })
            .collect()
    }

    /// Stores `x` column-major — transposed if asked — with `pad` rows of padding below each column and `gap`
    /// elements between batches (a stride of 0 when `shared`); every element outside the matrices is NaN.
    fn store(
        elem: Elem,
        x: &Batches,
        transposed: bool,
        pad: usize,
        gap: usize,
        shared: bool,
    ) -> (Buffer, Matrix) {
        let (rows, cols) = (x[0].len(), x[0][0].len());
        let (sr, sc) = if transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let ld = sr + pad;
        let stride = if shared { 0 } else { ld * sc + gap };
        let mut values = vec![f32::NAN; stride * (x.len() - 1) + ld * sc];
        for (q, matrix) in x.iter().enumerate() {
            for (i, row) in matrix.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let (r, c) = if transposed { (j, i) } else { (i, j) };
                    values[q * stride + r + c * ld] = *v;
                }
            }
        }
        let matrix = Matrix {
            elem,
            rows: sr,
            cols: sc,
            ld,
            stride,
        };
        (Buffer::new(elem, &values), matrix)
    }

    /// One test matmul: sizes, types and epilogue, and how its operands are laid out.
    #[derive(Clone, Copy)]
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        batch: usize,
        trans_a: bool,
        trans_b: bool,
        ab: Elem,
        cd: Elem,
        alpha: f32,
        beta: f32,
        activation: Activation,
        bias: bool,
        /// Padding rows under each column (ld − rows) and elements between batches.
        pad: usize,
        gap: usize,
        /// One A for every batch (batch stride 0).
        shared_a: bool,
        /// C is D (same memory and layout).
        in_place: bool,
        /// C has leading dimension 0: one column added to every column.
        broadcast_c: bool,
    }

    impl Case {
        fn new(m: usize, n: usize, k: usize) -> Self {
            Case {
                m,
                n,
                k,
                batch: 1,
                trans_a: false,
                trans_b: false,
                ab: Elem::F32,
                cd: Elem::F32,
                alpha: 1.0,
                beta: 0.0,
                activation: Activation::Identity,
                bias: false,
                pad: 2,
                gap: 3,
                shared_a: false,
                in_place: false,
                broadcast_c: false,
            }
        }
    }

    /// The formula, in row-major terms and f64: D[i][j] = act(alpha·Σ_l A[i][l]·B[l][j] + beta·C[i][j] + bias[i]).
    fn formula(
        case: &Case,
        a: &[Vec<f32>],
        b: &[Vec<f32>],
        c: &[Vec<f32>],
        bias: &[f32],
        i: usize,
        j: usize,
    ) -> f64 {
        let product: f64 = (0..case.k).map(|l| a[i][l] as f64 * b[l][j] as f64).sum();
        let mut v = case.alpha as f64 * product + case.beta as f64 * c[i][j] as f64;
        if case.bias {
            v += bias[i] as f64;
        }
        match case.activation {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Gelu => {
                0.5 * v
                    * (1.0
                        + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3))).tanh())
            }
        }
    }

    /// Runs `case` on random operands and compares every element of D with the formula, and D's padding with the
    /// NaN it held.
    fn check(case: Case) {
        let Case { m, n, k, batch, .. } = case;
        let mut rng = Rng(m as u64 * 1000 + n as u64 * 100 + k as u64);
        let mut a = random(&mut rng, case.ab, batch, m, k);
        if case.shared_a {
            a = vec![a[0].clone(); batch];
        }
        let b = random(&mut rng, case.ab, batch, k, n);
        // A broadcast C is one column, stored once with leading dimension 0.
        let c_columns = if case.broadcast_c { 1 } else { n };
        let stored_c = random(&mut rng, case.cd, batch, m, c_columns);
        let c: Batches = stored_c
            .iter()
            .map(|x| {
                x.iter()
                    .map(|row| (0..n).map(|j| row[j % c_columns]).collect())
                    .collect()
            })
            .collect();
        let bias = random(&mut rng, case.cd, batch, 1, m);
        let nan = |cols: usize| vec![vec![vec![f32::NAN; cols]; m]; batch];

        let (a_mem, a_matrix) = store(case.ab, &a, case.trans_a, case.pad, case.gap, case.shared_a);
        let (b_mem, b_matrix) = store(case.ab, &b, case.trans_b, case.pad, case.gap, false);
        // With beta 0, C's memory is NaN: reading it would show in D.
        let c_values = if case.beta == 0.0 {
            nan(c_columns)
        } else {
            stored_c
        };
        let (c_mem, mut c_matrix) = store(case.cd, &c_values, false, case.pad, case.gap, false);
        if case.broadcast_c {
            (c_matrix.cols, c_matrix.ld) = (n, 0);
        }
        let d_values = if case.in_place { c.clone() } else { nan(n) };
        let (d_mem, d_matrix) = store(case.cd, &d_values, false, case.pad, case.gap, false);
        let bias_stride = m + case.gap;
        let mut bias_values = vec![f32::NAN; bias_stride * batch];
        for (q, vector) in bias.iter().enumerate() {
            bias_values[q * bias_stride..][..m].copy_from_slice(&vector[0]);
        }
        let bias_mem = Buffer::new(case.cd, &bias_values);

        let problem = Problem {
            m,
            n,
            k,
            batch,
            trans_a: case.trans_a,
            trans_b: case.trans_b,
            a: a_matrix,
            b: b_matrix,
            c: if case.in_place { d_matrix } else { c_matrix },
            d: d_matrix,
            activation: case.activation,
            bias: case.bias.then_some(Bias {
                elem: case.cd,
                stride: bias_stride,
            }),
        };
        let at = Operands {
            a: a_mem.address(),
            b: b_mem.address(),
            c: if case.in_place {
                d_mem.address()
            } else {
                c_mem.address()
            },
            d: d_mem.address(),
            bias: bias_mem.address(),
        };
        // SAFETY: the buffers hold every element the problem's layouts reach, aligned.
        unsafe { execute(&problem, case.alpha, case.beta, &at) };

        let got = d_mem.values();
        // Half a unit in the last place of D's type, relative.
        let unit = match case.cd {
            Elem::F32 => 0.0,
            Elem::F16 => 2f64.powi(-11),
            Elem::Bf16 => 2f64.powi(-8),
        };
        let mut inside = vec![false; got.len()];
        for q in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let at = q * d_matrix.stride + i + j * d_matrix.ld;
                    inside[at] = true;
                    let want = formula(&case, &a[q], &b[q], &c[q], &bias[q][0], i, j);
                    // f32 sums err by a few units of 2^-24 of the magnitudes summed.
                    let magnitudes = (0..k)
                        .map(|l| (a[q][i][l] * b[q][l][j]).abs() as f64)
                        .sum::<f64>()
                        + (case.beta * c[q][i][j]).abs() as f64
                        + bias[q][0][i].abs() as f64;
                    let tolerance = 2.0 * unit * want.abs() + 1e-6 * magnitudes;
                    assert!(
                        (got[at] as f64 - want).abs() <= tolerance,
                        "D[{q}][{i}][{j}] = {} but the formula gives {want} (tolerance {tolerance})",
                        got[at]
                    );
                }
            }
        }
        for (at, x) in got.iter().enumerate().filter(|(at, _)| !inside[*at]) {
            assert!(x.is_nan(), "D's padding at element {at} was written: {x}");
        }
    }

    const TYPES: [(Elem, Elem); 5] = [
        (Elem::Bf16, Elem::Bf16),
        (Elem::Bf16, Elem::F32),
        (Elem::F16, Elem::F16),
        (Elem::F16, Elem::F32),
        (Elem::F32, Elem::F32),
    ];

    #[test]
    fn blaslt_reference_matches_the_formula_for_every_transpose_and_type() {
        for (ab, cd) in TYPES {
            for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
                check(Case {
                    trans_a,
                    trans_b,
                    ab,
                    cd,
                    ..Case::new(7, 5, 3)
                });
            }
        }
    }

    #[test]
    fn blaslt_reference_applies_alpha_beta_bias_and_activations() {
        for (ab, cd) in TYPES {
            for activation in [Activation::Identity, Activation::Relu, Activation::Gelu] {
                for bias in [false, true] {
                    let case = Case::new(9, 4, 6);
                    check(Case {
                        trans_a: true,
                        ab,
                        cd,
                        alpha: 0.75,
                        beta: -0.5,
                        activation,
                        bias,
                        ..case
                    });
                    check(Case {
                        trans_b: true,
                        ab,
                        cd,
                        alpha: 1.5,
                        activation,
                        bias,
                        ..case
                    });
                }
            }
        }
    }

    #[test]
    fn blaslt_reference_runs_strided_batches() {
        for (ab, cd) in [(Elem::Bf16, Elem::Bf16), (Elem::F32, Elem::F32)] {
            let case = Case {
                batch: 3,
                ab,
                cd,
                beta: 0.5,
                bias: true,
                activation: Activation::Gelu,
                ..Case::new(5, 6, 4)
            };
            check(Case {
                trans_a: true,
                ..case
            });
            check(Case {
                trans_b: true,
                gap: 0,
                ..case
            });
            check(Case {
                shared_a: true,
                ..case
            });
        }
    }

    #[test]
    fn blaslt_reference_reads_c_only_when_beta_is_nonzero() {
        // With beta 0, check() leaves C's memory NaN; in place, C is D, read before D is written.
        let case = Case {
            ab: Elem::Bf16,
            cd: Elem::Bf16,
            ..Case::new(4, 3, 5)
        };
        check(case);
        check(Case {
            in_place: true,
            beta: 2.0,
            ..case
        });
        check(Case {
            in_place: true,
            beta: -1.0,
            batch: 2,
            ..Case::new(3, 3, 3)
        });
    }

    #[test]
    fn blaslt_reference_broadcasts_c_with_leading_dimension_zero() {
        check(Case {
            broadcast_c: true,
            beta: 1.0,
            ..Case::new(6, 4, 2)
        });
    }

    #[test]
    fn blaslt_reference_rounds_once_to_nearest_even() {
        // 1 + 2^-8 and 1 + 3·2^-8 are exact in f32 and halfway between bf16 neighbours: the even one wins.
        for (small, want) in [
            (2f32.powi(-8), 1.0),
            (3.0 * 2f32.powi(-8), 1.0 + 2f32.powi(-6)),
        ] {
            let a = Buffer::new(Elem::Bf16, &[1.0, 1.0]);
            let b = Buffer::new(Elem::Bf16, &[1.0, small]);
            let d = Buffer::new(Elem::Bf16, &[0.0]);
            let row = Matrix {
                elem: Elem::Bf16,
                rows: 1,
                cols: 2,
                ld: 1,
                stride: 0,
            };
            let column = Matrix {
                rows: 2,
                cols: 1,
                ld: 2,
                ..row
            };
            let one = Matrix {
                rows: 1,
                cols: 1,
                ld: 1,
                ..row
            };
            let problem = Problem {
                m: 1,
                n: 1,
                k: 2,
                batch: 1,
                trans_a: false,
                trans_b: false,
                a: row,
                b: column,
                c: one,
                d: one,
                activation: Activation::Identity,
                bias: None,
            };
            let at = Operands {
                a: a.address(),
                b: b.address(),
                c: 0,
                d: d.address(),
                bias: 0,
            };
            // SAFETY: the buffers hold the 1×2, 2×1 and 1×1 matrices of the problem.
            unsafe { execute(&problem, 1.0, 0.0, &at) };
            assert_eq!(d.values(), [want]);
        }
    }

    #[test]
    fn blaslt_reference_splits_large_products_across_threads_without_changing_them() {
        let (m, n, k) = (130, 96, 128);
        assert!(m * n * k >= PARALLEL_WORK);
        let mut rng = Rng(1);
        let a: Vec<f32> = (0..m * k).map(|_| rng.next()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.next()).collect();
        let got = product(m, n, k, &a, &b);
        for j in 0..n {
            for i in 0..m {
                let mut sum = 0.0f32;
                for l in 0..k {
                    sum += a[i * k + l] * b[j * k + l];
                }
                assert_eq!(got[i + j * m].to_bits(), sum.to_bits(), "D[{i}][{j}]");
            }
        }
    }
}
