//! `linear` through cuBLASLt: row-major `Y[M, N] = act(X[M, K] · W[N, K]ᵀ + b)` computed as the column-major
//! `Yᵀ = W · Xᵀ` (W transposed, X as is), bf16/f16 operands, f32 accumulation and scale, bias and GELU/ReLU applied
//! in the epilogue before the single rounding to the storage dtype — the rounding PyTorch's `F.linear` does.

use cudarc::cublaslt::{self, CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::{CudaSlice, DeviceRepr};
use half::{bf16, f16};

use crate::engine::emu::StorageDtype;
use crate::engine::Activation;
use crate::error::{Error, Result};

/// Problem size of one linear: `m` rows of `x`, `k` inputs, `n` outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl LinearShape {
    /// The cuBLASLt configuration of the transposed product (`m`/`n` swap roles).
    pub fn config(self) -> MatmulConfig {
        MatmulConfig {
            transa: true,
            transb: false,
            transc: false,
            m: self.n as u64,
            n: self.m as u64,
            k: self.k as u64,
            alpha: 1.0,
            lda: self.k as i64,
            ldb: self.k as i64,
            beta: 0.0,
            ldc: self.n as i64,
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
        }
    }
}

/// The epilogue activation cuBLASLt applies itself; SiLU has none and runs as a separate kernel.
pub fn epilogue(act: Activation) -> (Option<cublaslt::Activation>, Activation) {
    match act {
        Activation::Identity => (None, Activation::Identity),
        Activation::GeluTanh => (Some(cublaslt::Activation::Gelu), Activation::Identity),
        Activation::Relu => (Some(cublaslt::Activation::Relu), Activation::Identity),
        Activation::Silu => (None, Activation::Silu),
    }
}

/// The inputs of one linear: `x` [m, k], `w` [n, k], optional bias [n], in the storage dtype.
pub struct Operands<'a> {
    pub x: &'a CudaSlice<u8>,
    pub w: &'a CudaSlice<u8>,
    pub b: Option<&'a CudaSlice<u8>>,
}

/// Runs `y = epilogue(x · wᵀ + b)` into `y` (`m·n` elements of `dtype`).
pub fn linear(
    lt: &CudaBlasLT,
    dtype: StorageDtype,
    shape: LinearShape,
    inputs: Operands<'_>,
    act: Option<cublaslt::Activation>,
    y: &mut CudaSlice<u8>,
) -> Result<()> {
    match dtype {
        StorageDtype::Bf16 => typed::<bf16>(lt, shape, inputs, act, y),
        StorageDtype::F16 => typed::<f16>(lt, shape, inputs, act, y),
        // cuBLASLt's f32 path computes in TF32, which would not match the f32 reference: the engine refuses f32.
        StorageDtype::F32 => Err(Error::EngineUnavailable {
            engine: "cuda",
            reason: "the cuda engine stores bf16 or f16 (--dtype bf16|f16)".into(),
        }),
    }
}

fn typed<T: DeviceRepr>(
    lt: &CudaBlasLT,
    shape: LinearShape,
    Operands { x, w, b }: Operands<'_>,
    act: Option<cublaslt::Activation>,
    y: &mut CudaSlice<u8>,
) -> Result<()>
where
    CudaBlasLT: Matmul<T>,
{
    let LinearShape { m, k, n } = shape;
    let missing = || Error::Cuda {
        during: "viewing a linear operand".into(),
        detail: "buffer smaller than its shape".into(),
    };
    // SAFETY: the buffers hold elements of T (the engine's storage dtype) in the counts given.
    let (xv, wv, bv, mut yv) = unsafe {
        (
            x.transmute::<T>(m * k).ok_or_else(missing)?,
            w.transmute::<T>(n * k).ok_or_else(missing)?,
            match b {
                Some(b) => Some(b.transmute::<T>(n).ok_or_else(missing)?),
                None => None,
            },
            y.transmute_mut::<T>(m * n).ok_or_else(missing)?,
        )
    };
    // SAFETY: the config describes exactly the buffers above (row-major, contiguous), on the handle's stream.
    unsafe { lt.matmul(shape.config(), &wv, &xv, &mut yv, bv.as_ref(), act.as_ref()) }.map_err(
        |e| Error::Cuda {
            during: format!("cuBLASLt linear {m}×{k} · ({n}×{k})ᵀ"),
            detail: format!("{e:?}"),
        },
    )
}
