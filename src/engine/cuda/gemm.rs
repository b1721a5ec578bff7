//! `linear` through cuBLASLt: row-major `Y[M, N] = act(X[M, K] · W[N, K]ᵀ + b)` computed as the column-major
//! `Yᵀ = W · Xᵀ` (W transposed, X as is), bf16/f16 operands, f32 accumulation and scale, bias and GELU/ReLU applied
//! in the epilogue before the single rounding to the storage dtype — the rounding PyTorch's `F.linear` does.
//!
//! Each problem (shape, dtype, epilogue) gets its descriptors and the heuristic's algorithm once, on its first call
//! (the eager first denoising step, never inside a graph capture); later calls set only the bias pointer and queue
//! `cublasLtMatmul`. cudarc's safe `matmul` would rebuild three layouts, a descriptor and a preference and rerun the
//! heuristic on every call.

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::{Arc, Mutex};

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr as _, DevicePtrMut as _};

use crate::engine::kernel::LinearShape;
use crate::engine::Activation;
use crate::engine::StorageDtype;
use crate::error::{Error, Result};

/// An activation cuBLASLt applies in its epilogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fused {
    /// NVIDIA's GELU, the tanh form.
    Gelu,
    Relu,
}

/// The epilogue activation cuBLASLt applies itself, and what remains for a kernel (SiLU has no epilogue).
pub fn epilogue(act: Activation) -> (Option<Fused>, Activation) {
    match act {
        Activation::Identity => (None, Activation::Identity),
        Activation::GeluTanh => (Some(Fused::Gelu), Activation::Identity),
        Activation::Relu => (Some(Fused::Relu), Activation::Identity),
        Activation::Silu => (None, Activation::Silu),
    }
}

/// The inputs of one linear: `x` [m, k], `w` [n, k], optional bias [n], in the storage dtype.
pub struct Operands<'a> {
    pub x: &'a CudaSlice<u8>,
    pub w: &'a CudaSlice<u8>,
    pub b: Option<&'a CudaSlice<u8>>,
}

/// What a cached plan is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    shape: LinearShape,
    dtype: sys::cudaDataType,
    epilogue: sys::cublasLtEpilogue_t,
}

impl Key {
    fn has_bias(&self) -> bool {
        use sys::cublasLtEpilogue_t::*;
        matches!(
            self.epilogue,
            CUBLASLT_EPILOGUE_BIAS | CUBLASLT_EPILOGUE_RELU_BIAS | CUBLASLT_EPILOGUE_GELU_BIAS
        )
    }
}

/// The cuBLASLt epilogue of a fused activation with or without a bias.
fn epilogue_of(act: Option<Fused>, bias: bool) -> sys::cublasLtEpilogue_t {
    use sys::cublasLtEpilogue_t::*;
    match (act, bias) {
        (None, false) => CUBLASLT_EPILOGUE_DEFAULT,
        (None, true) => CUBLASLT_EPILOGUE_BIAS,
        (Some(Fused::Gelu), false) => CUBLASLT_EPILOGUE_GELU,
        (Some(Fused::Gelu), true) => CUBLASLT_EPILOGUE_GELU_BIAS,
        (Some(Fused::Relu), false) => CUBLASLT_EPILOGUE_RELU,
        (Some(Fused::Relu), true) => CUBLASLT_EPILOGUE_RELU_BIAS,
    }
}

/// Sets a matmul descriptor attribute to `value`, passing its size as cuBLASLt checks it.
///
/// # Safety
/// `desc` is a live descriptor and `T` is the attribute's documented type.
unsafe fn set_desc<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> std::result::Result<(), CublasError> {
    // SAFETY: forwarded from the caller; `value` outlives the call, which copies it.
    unsafe {
        lt::set_matmul_desc_attribute(
            desc,
            attr,
            value as *const T as *const c_void,
            size_of::<T>(),
        )
    }
}

/// Descriptors and the chosen algorithm of one problem.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    /// A = W: `k × n` column-major (ld k), transposed by the op.
    a: sys::cublasLtMatrixLayout_t,
    /// B = X: `k × m` column-major (ld k).
    b: sys::cublasLtMatrixLayout_t,
    /// C = D = Y: `n × m` column-major (ld n).
    c: sys::cublasLtMatrixLayout_t,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Plan {
    /// Creates the descriptors and runs the heuristic (host work only). `bias` is set first, as cudarc does, so the
    /// heuristic sees the descriptor a call will use.
    fn new(
        handle: sys::cublasLtHandle_t,
        key: Key,
        bias: Option<u64>,
        workspace_bytes: usize,
    ) -> std::result::Result<Self, CublasError> {
        use sys::cublasLtMatmulDescAttributes_t::*;
        let LinearShape { m, k, n } = key.shape;
        // Null handles until each is made: a failure part way leaves only live handles for `Drop`.
        let mut plan = Plan {
            desc: std::ptr::null_mut(),
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            algo: sys::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        plan.desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType::CUDA_R_32F,
        )?;
        let (op_t, op_n) = (
            cublasOperation_t::CUBLAS_OP_T as i32,
            cublasOperation_t::CUBLAS_OP_N as i32,
        );
        // SAFETY: a live descriptor; TRANSA/TRANSB are int32 (cublasOperation_t), EPILOGUE uint32
        // (cublasLtEpilogue_t), BIAS_DATA_TYPE int32 (cudaDataType), BIAS_POINTER a device pointer.
        unsafe {
            set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t)?;
            set_desc(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n)?;
            set_desc(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &key.epilogue)?;
            if key.has_bias() {
                set_desc(
                    plan.desc,
                    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                    &(key.dtype as i32),
                )?;
            }
            if let Some(ptr) = bias {
                set_desc(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &ptr)?;
            }
        }
        let (m, k, n) = (m as u64, k as u64, n as u64);
        plan.a = lt::create_matrix_layout(key.dtype, k, n, k as i64)?;
        plan.b = lt::create_matrix_layout(key.dtype, k, m, k as i64)?;
        plan.c = lt::create_matrix_layout(key.dtype, n, m, n as i64)?;
        let pref = lt::create_matmul_pref()?;
        let workspace = workspace_bytes as u64;
        // SAFETY: live handles; MAX_WORKSPACE_BYTES is a uint64. The preference is destroyed whatever the outcome.
        let chosen = unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &workspace as *const u64 as *const c_void,
                size_of::<u64>(),
            )
            .and_then(|()| {
                lt::get_matmul_algo_heuristic(
                    handle, plan.desc, plan.a, plan.b, plan.c, plan.c, pref,
                )
            })
        };
        // SAFETY: created above, used by nothing else.
        let destroyed = unsafe { lt::destroy_matmul_pref(pref) };
        plan.algo = chosen?.algo;
        destroyed?;
        Ok(plan)
    }
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: each handle is null or was created for this plan alone. A failure to destroy one can only leak it,
        // so it is not reported.
        unsafe {
            for layout in [self.a, self.b, self.c] {
                if !layout.is_null() {
                    let _ = lt::destroy_matrix_layout(layout);
                }
            }
            if !self.desc.is_null() {
                let _ = lt::destroy_matmul_desc(self.desc);
            }
        }
    }
}

/// The engine's cuBLASLt handle, its workspace and the plans made so far.
pub struct Gemm {
    handle: sys::cublasLtHandle_t,
    stream: Arc<CudaStream>,
    workspace: CudaSlice<u8>,
    plans: Mutex<HashMap<Key, Plan>>,
}

// SAFETY: the raw handles are cuBLASLt objects any thread may use; every use of a plan's descriptor (the bias pointer
// set, then the matmul that reads it) and of the shared workspace happens under the `plans` lock, on one stream.
unsafe impl Send for Gemm {}
// SAFETY: as above.
unsafe impl Sync for Gemm {}

fn cublas(during: impl Into<String>) -> impl FnOnce(CublasError) -> Error {
    let during = during.into();
    move |e| Error::Cuda {
        during,
        detail: format!("{e:?}"),
    }
}

impl Gemm {
    /// A handle for `stream` with the workspace NVIDIA recommends: 32 MiB from Hopper (compute capability 9) on,
    /// 4 MiB before.
    pub fn new(stream: &Arc<CudaStream>, compute_capability: (i32, i32)) -> Result<Self> {
        let bytes = if compute_capability.0 >= 9 {
            32 << 20
        } else {
            4 << 20
        };
        // SAFETY: cuBLASLt only writes its scratch data there.
        let workspace = unsafe { stream.alloc::<u8>(bytes) }
            .map_err(super::probe::driver("allocating the cuBLASLt workspace"))?;
        let handle = lt::create_handle().map_err(cublas("creating the cuBLASLt handle"))?;
        Ok(Self {
            handle,
            stream: stream.clone(),
            workspace,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// Problems planned so far (descriptors and algorithm made once each).
    pub fn plans(&self) -> usize {
        self.plans.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Queues `y = act(x · wᵀ + b)` into `y` (`m·n` elements of `dtype`) on the engine's stream.
    pub fn linear(
        &self,
        dtype: StorageDtype,
        shape: LinearShape,
        Operands { x, w, b }: Operands<'_>,
        act: Option<Fused>,
        y: &mut CudaSlice<u8>,
    ) -> Result<()> {
        let LinearShape { m, k, n } = shape;
        let what = format!("cuBLASLt linear {m}×{k} · ({n}×{k})ᵀ");
        let data_type = match dtype {
            StorageDtype::Bf16 => sys::cudaDataType::CUDA_R_16BF,
            StorageDtype::F16 => sys::cudaDataType::CUDA_R_16F,
            // cuBLASLt's f32 path computes in TF32, which would not match the f32 reference: the engine refuses f32.
            StorageDtype::F32 => {
                return Err(Error::EngineUnavailable {
                    engine: "cuda",
                    reason: "the cuda engine stores bf16 or f16".into(),
                })
            }
        };
        let size = dtype.size();
        let short = [
            ("x", x.len(), m * k),
            ("w", w.len(), n * k),
            ("y", y.len(), m * n),
        ]
        .into_iter()
        .chain(b.map(|b| ("bias", b.len(), n)))
        .find(|&(_, bytes, elements)| bytes < elements * size);
        if let Some((name, bytes, elements)) = short {
            return Err(Error::Cuda {
                during: what,
                detail: format!("{name} holds {bytes} bytes, fewer than its {elements} elements"),
            });
        }
        let key = Key {
            shape,
            dtype: data_type,
            epilogue: epilogue_of(act, b.is_some()),
        };
        let stream = &self.stream;
        // Event tracking is off (one stream): the guards record nothing, but they live until the call is queued.
        let (w_ptr, _w) = w.device_ptr(stream);
        let (x_ptr, _x) = x.device_ptr(stream);
        let bias = b.map(|b| b.device_ptr(stream));
        let bias_ptr = bias.as_ref().map(|(p, _)| *p);
        let (ws_ptr, _ws) = self.workspace.device_ptr(stream);
        let (y_ptr, _y) = y.device_ptr_mut(stream);
        stream
            .context()
            .bind_to_thread()
            .map_err(super::probe::driver(what.clone()))?;
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let plan = match plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                Plan::new(self.handle, key, bias_ptr, self.workspace.len())
                    .map_err(cublas(format!("planning {what}")))?,
            ),
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: the plan describes exactly these buffers (row-major, contiguous, sizes checked above), in the
        // storage dtype; the bias pointer is set under the lock that also covers the matmul reading it; alpha and
        // beta are host f32 (the scale type, default pointer mode) read during the call; the workspace is the size
        // the heuristic was told; everything is queued on the engine's stream.
        unsafe {
            if let Some(ptr) = bias_ptr {
                set_desc(
                    plan.desc,
                    sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                    &ptr,
                )
                .map_err(cublas(format!("setting the bias of {what}")))?;
            }
            lt::matmul(
                self.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                w_ptr as *const c_void,
                plan.a,
                x_ptr as *const c_void,
                plan.b,
                y_ptr as *const c_void,
                plan.c,
                y_ptr as *mut c_void,
                plan.c,
                &plan.algo,
                ws_ptr as *mut c_void,
                self.workspace.len(),
                stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(cublas(what))
    }
}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.plans
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        // SAFETY: created in `new`, used by nothing else now. A failure can only leak the handle, so it is not
        // reported (cudarc's own handle panics here instead). The workspace is freed after this, in stream order,
        // behind any matmul still queued.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}
