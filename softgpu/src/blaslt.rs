//! cuBLASLt in software: the descriptor API and `cublasLtMatmul`, exported under cuBLASLt's own names with cudarc's
//! C types (cudarc resolves each symbol by name). A matmul is checked when it is called, as cuBLASLt checks it, and
//! queued on its stream; when the stream runs it, a plain reference computes it on the host (reference.rs).
//!
//! What softgpu implements (anything else is refused with CUBLAS_STATUS_NOT_SUPPORTED and a message): column-major
//! layouts with strided batches; COMPUTE_32F with CUDA_R_32F scale over bf16, f16 or f32 operands, and
//! COMPUTE_32F_FAST_TF32 over f32; TRANSA/TRANSB; the DEFAULT, RELU, GELU and BIAS epilogues and their
//! combinations; host pointer mode. Every refused call prints `softgpu: <call>: <why> (<status>)` on stderr.
//!
//! Files: desc.rs (descriptors and attributes), problem.rs (what a matmul computes, and its checks), matmul.rs
//! (operand checks and submission), reference.rs (the arithmetic).

// The C API is the contract: each function's safety requirements are cuBLASLt's documented ones for it.
#![allow(clippy::missing_safety_doc)]

mod desc;
mod matmul;
mod problem;
mod reference;

use std::ffi::{c_char, c_int, c_void, CStr};

use cudarc::cublaslt::sys;

use desc::{registry, Layout, MatmulDesc, Preference, Registry};
use problem::Problem;
use reference::Operands;

/// A refused call: the status cuBLASLt would return, and why.
#[derive(Debug)]
pub struct LtError {
    status: sys::cublasStatus_t,
    why: String,
}

impl LtError {
    fn new(status: sys::cublasStatus_t, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }

    fn invalid(why: impl Into<String>) -> Self {
        Self::new(sys::cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE, why)
    }

    fn unsupported(why: impl Into<String>) -> Self {
        Self::new(sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED, why)
    }
}

/// Runs the body of the exported function `name`: its status, the refusal printed as `softgpu: <name>: <why>`.
fn call(name: &str, body: impl FnOnce() -> Result<(), LtError>) -> sys::cublasStatus_t {
    match body() {
        Ok(()) => sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS,
        Err(e) => {
            eprintln!("softgpu: {name}: {} ({:?})", e.why, e.status);
            e.status
        }
    }
}

/// Refuses a NULL output pointer.
fn out<T>(ptr: *mut T, name: &str) -> Result<*mut T, LtError> {
    if ptr.is_null() {
        Err(LtError::invalid(format!("{name} is NULL")))
    } else {
        Ok(ptr)
    }
}

// ---- Library -------------------------------------------------------------------------------------------------

/// CUDA 13.0's cuBLASLt: major·10000 + minor·100 + patch.
#[no_mangle]
pub extern "C" fn cublasLtGetVersion() -> usize {
    130_000
}

#[no_mangle]
pub extern "C" fn cublasLtGetStatusName(status: sys::cublasStatus_t) -> *const c_char {
    status_text(status).0.as_ptr()
}

#[no_mangle]
pub extern "C" fn cublasLtGetStatusString(status: sys::cublasStatus_t) -> *const c_char {
    status_text(status).1.as_ptr()
}

/// A status's name and description.
fn status_text(status: sys::cublasStatus_t) -> (&'static CStr, &'static CStr) {
    use sys::cublasStatus_t::*;
    match status {
        CUBLAS_STATUS_SUCCESS => (
            c"CUBLAS_STATUS_SUCCESS",
            c"the operation completed successfully",
        ),
        CUBLAS_STATUS_NOT_INITIALIZED => (
            c"CUBLAS_STATUS_NOT_INITIALIZED",
            c"the library was not initialized",
        ),
        CUBLAS_STATUS_ALLOC_FAILED => (
            c"CUBLAS_STATUS_ALLOC_FAILED",
            c"the resource allocation failed",
        ),
        CUBLAS_STATUS_INVALID_VALUE => (
            c"CUBLAS_STATUS_INVALID_VALUE",
            c"an invalid numeric value was used as an argument",
        ),
        CUBLAS_STATUS_ARCH_MISMATCH => (
            c"CUBLAS_STATUS_ARCH_MISMATCH",
            c"an absent device architectural feature is required",
        ),
        CUBLAS_STATUS_MAPPING_ERROR => (
            c"CUBLAS_STATUS_MAPPING_ERROR",
            c"an access to GPU memory space failed",
        ),
        CUBLAS_STATUS_EXECUTION_FAILED => (
            c"CUBLAS_STATUS_EXECUTION_FAILED",
            c"the GPU program failed to execute",
        ),
        CUBLAS_STATUS_INTERNAL_ERROR => (
            c"CUBLAS_STATUS_INTERNAL_ERROR",
            c"an internal operation failed",
        ),
        CUBLAS_STATUS_NOT_SUPPORTED => (
            c"CUBLAS_STATUS_NOT_SUPPORTED",
            c"the functionality requested is not supported",
        ),
        CUBLAS_STATUS_LICENSE_ERROR => (
            c"CUBLAS_STATUS_LICENSE_ERROR",
            c"the functionality requested requires some license",
        ),
    }
}

// ---- Handle --------------------------------------------------------------------------------------------------

/// A handle needs no state: the stream comes with each matmul.
#[no_mangle]
pub unsafe extern "C" fn cublasLtCreate(handle: *mut sys::cublasLtHandle_t) -> sys::cublasStatus_t {
    call("cublasLtCreate", || {
        *out(handle, "lightHandle")? = registry().handles.create(());
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtDestroy(handle: sys::cublasLtHandle_t) -> sys::cublasStatus_t {
    call("cublasLtDestroy", || {
        out(handle, "lightHandle")?;
        registry().handles.destroy(handle)
    })
}

// ---- Matrix layouts ------------------------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatrixLayoutCreate(
    layout: *mut sys::cublasLtMatrixLayout_t,
    dtype: sys::cudaDataType,
    rows: u64,
    cols: u64,
    ld: i64,
) -> sys::cublasStatus_t {
    call("cublasLtMatrixLayoutCreate", || {
        *out(layout, "matLayout")? =
            registry()
                .layouts
                .create(Layout::new(dtype as u32, rows, cols, ld));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatrixLayoutDestroy(
    layout: sys::cublasLtMatrixLayout_t,
) -> sys::cublasStatus_t {
    call("cublasLtMatrixLayoutDestroy", || {
        destroy(layout, |r| &mut r.layouts)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatrixLayoutSetAttribute(
    layout: sys::cublasLtMatrixLayout_t,
    attr: sys::cublasLtMatrixLayoutAttribute_t,
    buf: *const c_void,
    size: usize,
) -> sys::cublasStatus_t {
    call("cublasLtMatrixLayoutSetAttribute", || {
        registry().layouts.get_mut(layout)?.set(attr, buf, size)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatrixLayoutGetAttribute(
    layout: sys::cublasLtMatrixLayout_t,
    attr: sys::cublasLtMatrixLayoutAttribute_t,
    buf: *mut c_void,
    size: usize,
    written: *mut usize,
) -> sys::cublasStatus_t {
    call("cublasLtMatrixLayoutGetAttribute", || {
        registry()
            .layouts
            .get(layout)?
            .get(attr, buf, size, written)
    })
}

// ---- Matmul descriptors --------------------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulDescCreate(
    desc: *mut sys::cublasLtMatmulDesc_t,
    compute: sys::cublasComputeType_t,
    scale: sys::cudaDataType_t,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulDescCreate", || {
        *out(desc, "matmulDesc")? = registry()
            .descs
            .create(MatmulDesc::new(compute as u32, scale as u32));
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulDescDestroy(
    desc: sys::cublasLtMatmulDesc_t,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulDescDestroy", || {
        destroy(desc, |r| &mut r.descs)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulDescSetAttribute(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    buf: *const c_void,
    size: usize,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulDescSetAttribute", || {
        registry().descs.get_mut(desc)?.set(attr, buf, size)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulDescGetAttribute(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    buf: *mut c_void,
    size: usize,
    written: *mut usize,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulDescGetAttribute", || {
        registry().descs.get(desc)?.get(attr, buf, size, written)
    })
}

// ---- Preferences ---------------------------------------------------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulPreferenceCreate(
    pref: *mut sys::cublasLtMatmulPreference_t,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulPreferenceCreate", || {
        *out(pref, "pref")? = registry().prefs.create(Preference::default());
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulPreferenceDestroy(
    pref: sys::cublasLtMatmulPreference_t,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulPreferenceDestroy", || {
        destroy(pref, |r| &mut r.prefs)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulPreferenceSetAttribute(
    pref: sys::cublasLtMatmulPreference_t,
    attr: sys::cublasLtMatmulPreferenceAttributes_t,
    buf: *const c_void,
    size: usize,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulPreferenceSetAttribute", || {
        registry().prefs.get_mut(pref)?.set(attr, buf, size)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulPreferenceGetAttribute(
    pref: sys::cublasLtMatmulPreference_t,
    attr: sys::cublasLtMatmulPreferenceAttributes_t,
    buf: *mut c_void,
    size: usize,
    written: *mut usize,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulPreferenceGetAttribute", || {
        registry().prefs.get(pref)?.get(attr, buf, size, written)
    })
}

/// Destroys a descriptor; NULL is a no-op, as `free(NULL)` is.
fn destroy<P, T>(
    ptr: *mut P,
    table: impl FnOnce(&mut Registry) -> &mut desc::Table<T>,
) -> Result<(), LtError> {
    if ptr.is_null() {
        return Ok(());
    }
    table(&mut registry()).destroy(ptr)
}

// ---- Matmul --------------------------------------------------------------------------------------------------

/// What `algo.data[0]` holds in the one algorithm softgpu has (the reference), so a stray algo is recognised.
const ALGO_ID: u64 = u64::from_le_bytes(*b"softgpu\0");

/// Looks up the descriptors of one matmul and checks the problem they describe: the problem, and the bias address.
/// A NULL Cdesc means Ddesc (the docs: "If Cdesc is omitted, this function assumes it to be equal to Ddesc").
fn plan(
    reg: &Registry,
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    d: sys::cublasLtMatrixLayout_t,
) -> Result<(Problem, u64), LtError> {
    let c = if c.is_null() { d } else { c };
    let desc = reg.descs.get(desc)?;
    let [a, b, c, d] = [("A", a), ("B", b), ("C", c), ("D", d)].map(|(name, l)| {
        reg.layouts
            .get(l)
            .map_err(|e| LtError::new(e.status, format!("{name}desc: {}", e.why)))
    });
    Ok((problem::plan(desc, a?, b?, c?, d?)?, desc.bias))
}

/// Checks the problem and offers softgpu's one algorithm for it: no workspace, one wave.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulAlgoGetHeuristic(
    handle: sys::cublasLtHandle_t,
    desc: sys::cublasLtMatmulDesc_t,
    a_desc: sys::cublasLtMatrixLayout_t,
    b_desc: sys::cublasLtMatrixLayout_t,
    c_desc: sys::cublasLtMatrixLayout_t,
    d_desc: sys::cublasLtMatrixLayout_t,
    pref: sys::cublasLtMatmulPreference_t,
    requested: c_int,
    results: *mut sys::cublasLtMatmulHeuristicResult_t,
    count: *mut c_int,
) -> sys::cublasStatus_t {
    call("cublasLtMatmulAlgoGetHeuristic", || {
        *out(count, "returnAlgoCount")? = 0;
        out(results, "heuristicResultsArray")?;
        if requested <= 0 {
            return Err(LtError::invalid(format!(
                "requestedAlgoCount {requested} is not positive"
            )));
        }
        let reg = registry();
        reg.handles.get(handle)?;
        if !pref.is_null() {
            reg.prefs.get(pref)?;
        }
        plan(&reg, desc, a_desc, b_desc, c_desc, d_desc)?;
        results.write(sys::cublasLtMatmulHeuristicResult_t {
            algo: sys::cublasLtMatmulAlgo_t {
                data: [ALGO_ID, 0, 0, 0, 0, 0, 0, 0],
            },
            workspaceSize: 0,
            state: sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS,
            wavesCount: 1.0,
            reserved: [0; 4],
        });
        *count = 1;
        Ok(())
    })
}

/// Checks the matmul as the heuristic does, and its operands, then queues it on `stream`.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmul(
    handle: sys::cublasLtHandle_t,
    desc: sys::cublasLtMatmulDesc_t,
    alpha: *const c_void,
    a: *const c_void,
    a_desc: sys::cublasLtMatrixLayout_t,
    b: *const c_void,
    b_desc: sys::cublasLtMatrixLayout_t,
    beta: *const c_void,
    c: *const c_void,
    c_desc: sys::cublasLtMatrixLayout_t,
    d: *mut c_void,
    d_desc: sys::cublasLtMatrixLayout_t,
    algo: *const sys::cublasLtMatmulAlgo_t,
    workspace: *mut c_void,
    workspace_size: usize,
    stream: sys::cudaStream_t,
) -> sys::cublasStatus_t {
    call("cublasLtMatmul", || {
        let (problem, bias) = {
            let reg = registry();
            reg.handles.get(handle)?;
            plan(&reg, desc, a_desc, b_desc, c_desc, d_desc)?
        };
        // NULL asks for an implicit heuristic query: the same one algorithm.
        if !algo.is_null() && (*algo).data[0] != ALGO_ID {
            return Err(LtError::invalid(
                "algo is not one cublasLtMatmulAlgoGetHeuristic returned",
            ));
        }
        if alpha.is_null() || beta.is_null() {
            return Err(LtError::invalid("alpha or beta is NULL"));
        }
        // Host pointer mode with CUDA_R_32F scale (both checked): read now, as cuBLASLt does.
        let (alpha, beta) = (
            alpha.cast::<f32>().read_unaligned(),
            beta.cast::<f32>().read_unaligned(),
        );
        let at = Operands {
            a: a as usize as u64,
            b: b as usize as u64,
            c: c as usize as u64,
            d: d as usize as u64,
            bias,
        };
        matmul::submit(
            problem,
            alpha,
            beta,
            at,
            (workspace as usize as u64, workspace_size),
            stream.cast(),
        )
    })
}

#[cfg(test)]
mod tests;
