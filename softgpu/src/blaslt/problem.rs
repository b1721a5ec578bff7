//! What one `cublasLtMatmul` computes, and the checks cuBLASLt makes before it agrees to compute it: a type
//! combination from the documented table (cuBLASLt docs, `cublasLtMatmul()`, "Datatypes Supported": the rows softgpu
//! implements), and shapes that fit together. Layouts describe matrices as stored, before TRANSA/TRANSB.
//!
//! Status codes follow the docs: a combination or feature outside the table is CUBLAS_STATUS_NOT_SUPPORTED; shapes
//! "in conflict or in an impossible configuration" are CUBLAS_STATUS_INVALID_VALUE.

use std::fmt;

use cudarc::cublaslt::sys;

use super::desc::{Layout, MatmulDesc};
use super::LtError;

const R_32F: u32 = sys::cudaDataType_t::CUDA_R_32F as u32;
const R_16F: u32 = sys::cudaDataType_t::CUDA_R_16F as u32;
const R_16BF: u32 = sys::cudaDataType_t::CUDA_R_16BF as u32;

/// The element type of a matrix or of the bias vector: the `cudaDataType`s softgpu computes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    Bf16,
}

impl Elem {
    /// The element type a `cudaDataType` value names, if softgpu computes with it.
    pub fn from_raw(raw: u32) -> Option<Elem> {
        match raw {
            R_32F => Some(Elem::F32),
            R_16F => Some(Elem::F16),
            R_16BF => Some(Elem::Bf16),
            _ => None,
        }
    }

    /// Its `cudaDataType` value.
    pub fn raw(self) -> u32 {
        match self {
            Elem::F32 => R_32F,
            Elem::F16 => R_16F,
            Elem::Bf16 => R_16BF,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F16 | Elem::Bf16 => 2,
        }
    }
}

impl fmt::Display for Elem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_type_name(self.raw()))
    }
}

/// `CUDA_R_16BF` for 14, for messages.
pub fn data_type_name(raw: u32) -> String {
    use sys::cudaDataType_t::*;
    [
        CUDA_R_16F,
        CUDA_R_16BF,
        CUDA_R_32F,
        CUDA_R_64F,
        CUDA_R_8I,
        CUDA_R_32I,
        CUDA_R_8F_E4M3,
        CUDA_R_8F_E5M2,
    ]
    .into_iter()
    .find(|t| *t as u32 == raw)
    .map_or_else(|| format!("cudaDataType {raw}"), |t| format!("{t:?}"))
}

/// `CUBLAS_COMPUTE_32F` for 68, for messages.
fn compute_type_name(raw: u32) -> String {
    use sys::cublasComputeType_t::*;
    [
        CUBLAS_COMPUTE_16F,
        CUBLAS_COMPUTE_16F_PEDANTIC,
        CUBLAS_COMPUTE_32F,
        CUBLAS_COMPUTE_32F_PEDANTIC,
        CUBLAS_COMPUTE_32F_FAST_16F,
        CUBLAS_COMPUTE_32F_FAST_16BF,
        CUBLAS_COMPUTE_32F_FAST_TF32,
        CUBLAS_COMPUTE_32F_EMULATED_16BFX9,
        CUBLAS_COMPUTE_64F,
        CUBLAS_COMPUTE_64F_PEDANTIC,
        CUBLAS_COMPUTE_64F_EMULATED_FIXEDPOINT,
        CUBLAS_COMPUTE_32I,
        CUBLAS_COMPUTE_32I_PEDANTIC,
    ]
    .into_iter()
    .find(|t| *t as u32 == raw)
    .map_or_else(|| format!("cublasComputeType {raw}"), |t| format!("{t:?}"))
}

/// A matrix as stored: column-major, element (i, j) of batch q at element offset `q·stride + i + j·ld`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matrix {
    pub elem: Elem,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    pub stride: usize,
}

impl Matrix {
    /// Elements from the first to just past the last of one matrix (0 when empty).
    fn span(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.cols - 1) * self.ld + self.rows
        }
    }

    /// Bytes from the first element of batch 0 to just past the last of batch `batch - 1` (0 when empty).
    pub fn extent(&self, batch: usize) -> u64 {
        if self.span() == 0 {
            return 0;
        }
        let elements = (batch as u128 - 1) * self.stride as u128 + self.span() as u128;
        // A layout too large to address cannot lie in any allocation: the memory check reports it.
        u64::try_from(elements * self.elem.size() as u128).unwrap_or(u64::MAX)
    }
}

/// The point-wise transform of an epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    Gelu,
}

impl Activation {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            // The tanh approximation the docs give for CUBLASLT_EPILOGUE_GELU.
            Activation::Gelu => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
            }
        }
    }
}

/// The epilogues softgpu implements: an optional bias vector added, then an activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epilogue {
    pub bias: bool,
    pub activation: Activation,
}

impl Epilogue {
    pub const DEFAULT: Epilogue = Epilogue {
        bias: false,
        activation: Activation::Identity,
    };

    /// Its `cublasLtEpilogue_t`.
    pub fn raw(self) -> sys::cublasLtEpilogue_t {
        use sys::cublasLtEpilogue_t::*;
        match (self.bias, self.activation) {
            (false, Activation::Identity) => CUBLASLT_EPILOGUE_DEFAULT,
            (false, Activation::Relu) => CUBLASLT_EPILOGUE_RELU,
            (false, Activation::Gelu) => CUBLASLT_EPILOGUE_GELU,
            (true, Activation::Identity) => CUBLASLT_EPILOGUE_BIAS,
            (true, Activation::Relu) => CUBLASLT_EPILOGUE_RELU_BIAS,
            (true, Activation::Gelu) => CUBLASLT_EPILOGUE_GELU_BIAS,
        }
    }

    /// The epilogue a `cublasLtEpilogue_t` value names, if softgpu implements it.
    pub fn from_raw(raw: u32) -> Option<Epilogue> {
        [false, true]
            .into_iter()
            .flat_map(|bias| {
                [Activation::Identity, Activation::Relu, Activation::Gelu]
                    .map(|activation| Epilogue { bias, activation })
            })
            .find(|e| e.raw() as u32 == raw)
    }
}

/// The bias vector of an epilogue: m elements (D's rows), the next batch's `stride` elements further on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bias {
    pub elem: Elem,
    pub stride: usize,
}

impl Bias {
    /// The vectors as a one-column matrix of m rows, batch after batch.
    pub fn vector(&self, m: usize) -> Matrix {
        Matrix {
            elem: self.elem,
            rows: m,
            cols: 1,
            ld: m,
            stride: self.stride,
        }
    }
}

/// One checked matmul: per batch, D = epilogue(alpha·op(A)·op(B) + beta·C), op(A) m×k, op(B) k×n, C and D m×n.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub a: Matrix,
    pub b: Matrix,
    pub c: Matrix,
    pub d: Matrix,
    pub activation: Activation,
    /// Present when the epilogue adds a bias.
    pub bias: Option<Bias>,
}

/// Checks the matmul that `desc` and the layouts of A, B, C and D describe.
pub fn plan(
    desc: &MatmulDesc,
    a: &Layout,
    b: &Layout,
    c: &Layout,
    d: &Layout,
) -> Result<Problem, LtError> {
    let batch_counts = [a, b, c, d].map(|l| l.batch_count);
    if batch_counts.iter().any(|&count| count != d.batch_count) {
        return Err(LtError::invalid(format!(
            "batch counts of A, B, C, D differ: {batch_counts:?}"
        )));
    }
    if d.batch_count < 1 {
        return Err(LtError::invalid(format!(
            "batch count {} is not positive",
            d.batch_count
        )));
    }
    let batch = d.batch_count as usize;

    let (a, b, c, d) = (
        matrix("A", a)?,
        matrix("B", b)?,
        matrix("C", c)?,
        matrix("D", d)?,
    );
    check_types(desc, a.elem, b.elem, c.elem, d.elem)?;

    let (trans_a, trans_b) = (desc.trans_a != 0, desc.trans_b != 0);
    let (m, k) = if trans_a {
        (a.cols, a.rows)
    } else {
        (a.rows, a.cols)
    };
    let (kb, n) = if trans_b {
        (b.cols, b.rows)
    } else {
        (b.rows, b.cols)
    };
    if kb != k {
        return Err(LtError::invalid(format!(
            "op(A) is {m}×{k} but op(B) is {kb}×{n} (A is stored {}×{} with TRANSA {}, B {}×{} with TRANSB {})",
            a.rows, a.cols, desc.trans_a, b.rows, b.cols, desc.trans_b
        )));
    }
    for (name, x) in [("C", &c), ("D", &d)] {
        if (x.rows, x.cols) != (m, n) {
            return Err(LtError::invalid(format!(
                "{name} is {}×{} but op(A)·op(B) is {m}×{n}",
                x.rows, x.cols
            )));
        }
    }
    for (name, x) in [("A", &a), ("B", &b), ("C", &c), ("D", &d)] {
        // C's leading dimension may be 0: its one column is then added to every column of D.
        if x.ld < x.rows && !(name == "C" && x.ld == 0) {
            return Err(LtError::invalid(format!(
                "{name}'s leading dimension {} is less than its {} rows",
                x.ld, x.rows
            )));
        }
    }
    // Overlapping batches of D would be written by concurrent blocks on a GPU: a race, not a result.
    if batch > 1 && d.stride < d.span() {
        return Err(LtError::invalid(format!(
            "D's batches overlap: its batch stride {} is less than the {} elements of one matrix",
            d.stride,
            d.span()
        )));
    }

    Ok(Problem {
        m,
        n,
        k,
        batch,
        trans_a,
        trans_b,
        a,
        b,
        c,
        d,
        activation: desc.epilogue.activation,
        bias: bias(desc, d.elem)?,
    })
}

/// The matrix a layout describes, if softgpu implements its type and cuBLASLt its sizes.
fn matrix(name: &str, l: &Layout) -> Result<Matrix, LtError> {
    let elem = Elem::from_raw(l.dtype).ok_or_else(|| {
        LtError::unsupported(format!(
            "{name} is {}; softgpu computes with CUDA_R_32F, CUDA_R_16F and CUDA_R_16BF",
            data_type_name(l.dtype)
        ))
    })?;
    // The docs: "Normally only values that can be expressed as int32_t are supported."
    let limit = i32::MAX as u64;
    if l.rows > limit || l.cols > limit {
        return Err(LtError::unsupported(format!(
            "{name} is {}×{}: beyond int32_t",
            l.rows, l.cols
        )));
    }
    // The docs: "Currently only non-negative values are supported" (leading dimensions); strides likewise here.
    if l.ld < 0 || l.batch_stride < 0 {
        return Err(LtError::unsupported(format!(
            "{name} has leading dimension {} and batch stride {}: softgpu supports no negative ones",
            l.ld, l.batch_stride
        )));
    }
    Ok(Matrix {
        elem,
        rows: l.rows as usize,
        cols: l.cols as usize,
        ld: l.ld as usize,
        stride: l.batch_stride as usize,
    })
}

/// Accepts the rows of the docs' type table that softgpu implements, all with CUDA_R_32F scale: COMPUTE_32F (or
/// its PEDANTIC twin) over bf16 or f16 A and B with C and D of the same type or f32, or over f32 throughout; and
/// COMPUTE_32F_FAST_TF32 over f32 throughout, computed here in full f32 (hardware may round inputs to TF32).
fn check_types(desc: &MatmulDesc, a: Elem, b: Elem, c: Elem, d: Elem) -> Result<(), LtError> {
    use sys::cublasComputeType_t::*;
    let compute_32f = [CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_PEDANTIC]
        .map(|t| t as u32)
        .contains(&desc.compute);
    let fast_tf32 = desc.compute == CUBLAS_COMPUTE_32F_FAST_TF32 as u32;
    let supported = desc.scale == R_32F
        && a == b
        && c == d
        && match (a, c) {
            (Elem::Bf16, Elem::Bf16 | Elem::F32) | (Elem::F16, Elem::F16 | Elem::F32) => {
                compute_32f
            }
            (Elem::F32, Elem::F32) => compute_32f || fast_tf32,
            _ => false,
        };
    if supported {
        return Ok(());
    }
    Err(LtError::unsupported(format!(
        "{} with scale {}, A {a}, B {b}, C {c}, D {d} is not a row of cuBLASLt's type table that softgpu implements \
         (CUDA_R_32F scale; COMPUTE_32F: A = B bf16 or f16 with C = D of that type or f32, or all f32; \
         COMPUTE_32F_FAST_TF32: all f32)",
        compute_type_name(desc.compute),
        data_type_name(desc.scale)
    )))
}

/// The bias of the epilogue, if it has one. Its type defaults to D's (the docs: "If unset (or set to the default
/// value of -1), the bias vector elements are the same type as the elements of the output matrix (Dtype)"; the
/// exceptions are integer and FP8 kernels); for these types the table lists no other.
fn bias(desc: &MatmulDesc, d: Elem) -> Result<Option<Bias>, LtError> {
    if !desc.epilogue.bias {
        return Ok(None);
    }
    if desc.bias_type != -1 && desc.bias_type as u32 != d.raw() {
        return Err(LtError::unsupported(format!(
            "bias of type {} with D of type {d}: the type table has the bias in D's type",
            data_type_name(desc.bias_type as u32)
        )));
    }
    if desc.bias_stride < 0 {
        return Err(LtError::unsupported(format!(
            "negative bias batch stride {}",
            desc.bias_stride
        )));
    }
    Ok(Some(Bias {
        elem: d,
        stride: desc.bias_stride as usize,
    }))
}
