//! The descriptors (handles, matrix layouts, matmul descriptors, preferences) and their attributes.
//!
//! Each descriptor lives in a table under a token that is never reused, and the token is the opaque pointer the
//! caller holds: a descriptor used after its Destroy (or never created) is refused with a message instead of read
//! stale. Tokens are non-canonical addresses, so dereferencing one faults at once.
//!
//! Attribute values are checked as cuBLASLt checks them: `sizeInBytes` must equal the size of the attribute's type
//! (cuBLASLt docs, the tables of cublasLtMatrixLayoutAttribute_t, cublasLtMatmulDescAttributes_t and
//! cublasLtMatmulPreferenceAttributes_t). Values softgpu does not implement are refused with
//! CUBLAS_STATUS_NOT_SUPPORTED when set, so an unimplemented feature is never silently ignored.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fmt::Debug;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cudarc::cublaslt::sys;

use super::problem::Epilogue;
use super::LtError;

/// A matrix layout (cublasLtMatrixLayout_t): only column-major order, strided batches, real types.
#[derive(Debug)]
pub struct Layout {
    /// A `cudaDataType` value.
    pub dtype: u32,
    pub rows: u64,
    pub cols: u64,
    pub ld: i64,
    pub batch_count: i32,
    /// Elements from one matrix of the batch to the next.
    pub batch_stride: i64,
}

impl Layout {
    pub fn new(dtype: u32, rows: u64, cols: u64, ld: i64) -> Self {
        Self {
            dtype,
            rows,
            cols,
            ld,
            batch_count: 1,
            batch_stride: 0,
        }
    }

    /// cublasLtMatrixLayoutSetAttribute.
    ///
    /// # Safety
    /// `buf` must be NULL or valid for reading `size` bytes.
    pub unsafe fn set(
        &mut self,
        attr: sys::cublasLtMatrixLayoutAttribute_t,
        buf: *const c_void,
        size: usize,
    ) -> Result<(), LtError> {
        use sys::cublasLtMatrixLayoutAttribute_t::*;
        match attr {
            CUBLASLT_MATRIX_LAYOUT_TYPE => self.dtype = read_value(attr, buf, size)?,
            CUBLASLT_MATRIX_LAYOUT_ORDER => only(attr, buf, size, ORDER_COL, "CUBLASLT_ORDER_COL")?,
            CUBLASLT_MATRIX_LAYOUT_ROWS => self.rows = read_value(attr, buf, size)?,
            CUBLASLT_MATRIX_LAYOUT_COLS => self.cols = read_value(attr, buf, size)?,
            CUBLASLT_MATRIX_LAYOUT_LD => self.ld = read_value(attr, buf, size)?,
            CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT => self.batch_count = read_value(attr, buf, size)?,
            CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET => {
                self.batch_stride = read_value(attr, buf, size)?
            }
            CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET => {
                only(attr, buf, size, 0i64, "0 (not planar complex)")?
            }
            CUBLASLT_MATRIX_LAYOUT_BATCH_MODE => only(
                attr,
                buf,
                size,
                BATCH_STRIDED,
                "CUBLASLT_BATCH_MODE_STRIDED",
            )?,
        }
        Ok(())
    }

    /// cublasLtMatrixLayoutGetAttribute.
    ///
    /// # Safety
    /// `buf` must be NULL or valid for writing `size` bytes; `written` NULL or valid for writing.
    pub unsafe fn get(
        &self,
        attr: sys::cublasLtMatrixLayoutAttribute_t,
        buf: *mut c_void,
        size: usize,
        written: *mut usize,
    ) -> Result<(), LtError> {
        use sys::cublasLtMatrixLayoutAttribute_t::*;
        match attr {
            CUBLASLT_MATRIX_LAYOUT_TYPE => write_value(attr, self.dtype, buf, size, written),
            CUBLASLT_MATRIX_LAYOUT_ORDER => write_value(attr, ORDER_COL, buf, size, written),
            CUBLASLT_MATRIX_LAYOUT_ROWS => write_value(attr, self.rows, buf, size, written),
            CUBLASLT_MATRIX_LAYOUT_COLS => write_value(attr, self.cols, buf, size, written),
            CUBLASLT_MATRIX_LAYOUT_LD => write_value(attr, self.ld, buf, size, written),
            CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT => {
                write_value(attr, self.batch_count, buf, size, written)
            }
            CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET => {
                write_value(attr, self.batch_stride, buf, size, written)
            }
            CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET => write_value(attr, 0i64, buf, size, written),
            CUBLASLT_MATRIX_LAYOUT_BATCH_MODE => {
                write_value(attr, BATCH_STRIDED, buf, size, written)
            }
        }
    }
}

const ORDER_COL: i32 = sys::cublasLtOrder_t::CUBLASLT_ORDER_COL as i32;
const BATCH_STRIDED: i32 = sys::cublasLtBatchMode_t::CUBLASLT_BATCH_MODE_STRIDED as i32;
const POINTER_MODE_HOST: i32 = sys::cublasLtPointerMode_t::CUBLASLT_POINTER_MODE_HOST as i32;
/// cublasOperation_t: CUBLAS_OP_N, CUBLAS_OP_T, CUBLAS_OP_C (for real types the same as T).
const OP_N: i32 = 0;
const OP_C: i32 = 2;

/// A matmul descriptor (cublasLtMatmulDesc_t), with the attributes softgpu implements.
#[derive(Debug)]
pub struct MatmulDesc {
    /// A `cublasComputeType_t` value.
    pub compute: u32,
    /// A `cudaDataType` value: the type of alpha and beta.
    pub scale: u32,
    /// `cublasOperation_t` values: N (0) or a transpose.
    pub trans_a: i32,
    pub trans_b: i32,
    pub epilogue: Epilogue,
    /// The bias vector's device address.
    pub bias: u64,
    /// Elements from one batch's bias vector to the next.
    pub bias_stride: i64,
    /// A `cudaDataType` value, or -1: D's type.
    pub bias_type: i32,
}

impl MatmulDesc {
    pub fn new(compute: u32, scale: u32) -> Self {
        Self {
            compute,
            scale,
            trans_a: OP_N,
            trans_b: OP_N,
            epilogue: Epilogue::DEFAULT,
            bias: 0,
            bias_stride: 0,
            bias_type: -1,
        }
    }

    /// cublasLtMatmulDescSetAttribute.
    ///
    /// # Safety
    /// `buf` must be NULL or valid for reading `size` bytes.
    pub unsafe fn set(
        &mut self,
        attr: sys::cublasLtMatmulDescAttributes_t,
        buf: *const c_void,
        size: usize,
    ) -> Result<(), LtError> {
        use sys::cublasLtMatmulDescAttributes_t::*;
        match attr {
            CUBLASLT_MATMUL_DESC_COMPUTE_TYPE => self.compute = read_value(attr, buf, size)?,
            CUBLASLT_MATMUL_DESC_SCALE_TYPE => self.scale = read_value(attr, buf, size)?,
            CUBLASLT_MATMUL_DESC_POINTER_MODE => only(
                attr,
                buf,
                size,
                POINTER_MODE_HOST,
                "CUBLASLT_POINTER_MODE_HOST",
            )?,
            CUBLASLT_MATMUL_DESC_TRANSA => {
                self.trans_a = operation(attr, read_value(attr, buf, size)?)?
            }
            CUBLASLT_MATMUL_DESC_TRANSB => {
                self.trans_b = operation(attr, read_value(attr, buf, size)?)?
            }
            // The docs: "Currently only CUBLAS_OP_N is supported."
            CUBLASLT_MATMUL_DESC_TRANSC => only(attr, buf, size, OP_N, "CUBLAS_OP_N")?,
            CUBLASLT_MATMUL_DESC_EPILOGUE => {
                let raw: u32 = read_value(attr, buf, size)?;
                self.epilogue = Epilogue::from_raw(raw).ok_or_else(|| {
                    LtError::unsupported(format!(
                        "epilogue {raw}: softgpu implements DEFAULT, RELU, GELU, BIAS, RELU_BIAS and GELU_BIAS"
                    ))
                })?;
            }
            CUBLASLT_MATMUL_DESC_BIAS_POINTER => self.bias = read_value(attr, buf, size)?,
            CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE => {
                self.bias_stride = read_value(attr, buf, size)?
            }
            CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE => self.bias_type = read_value(attr, buf, size)?,
            _ => return Err(unimplemented(attr)),
        }
        Ok(())
    }

    /// cublasLtMatmulDescGetAttribute.
    ///
    /// # Safety
    /// `buf` must be NULL or valid for writing `size` bytes; `written` NULL or valid for writing.
    pub unsafe fn get(
        &self,
        attr: sys::cublasLtMatmulDescAttributes_t,
        buf: *mut c_void,
        size: usize,
        written: *mut usize,
    ) -> Result<(), LtError> {
        use sys::cublasLtMatmulDescAttributes_t::*;
        match attr {
            CUBLASLT_MATMUL_DESC_COMPUTE_TYPE => {
                write_value(attr, self.compute, buf, size, written)
            }
            CUBLASLT_MATMUL_DESC_SCALE_TYPE => write_value(attr, self.scale, buf, size, written),
            CUBLASLT_MATMUL_DESC_POINTER_MODE => {
                write_value(attr, POINTER_MODE_HOST, buf, size, written)
            }
            CUBLASLT_MATMUL_DESC_TRANSA => write_value(attr, self.trans_a, buf, size, written),
            CUBLASLT_MATMUL_DESC_TRANSB => write_value(attr, self.trans_b, buf, size, written),
            CUBLASLT_MATMUL_DESC_TRANSC => write_value(attr, OP_N, buf, size, written),
            CUBLASLT_MATMUL_DESC_EPILOGUE => {
                write_value(attr, self.epilogue.raw() as u32, buf, size, written)
            }
            CUBLASLT_MATMUL_DESC_BIAS_POINTER => write_value(attr, self.bias, buf, size, written),
            CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE => {
                write_value(attr, self.bias_stride, buf, size, written)
            }
            CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE => {
                write_value(attr, self.bias_type, buf, size, written)
            }
            _ => Err(unimplemented(attr)),
        }
    }
}

/// A TRANSA/TRANSB value: N, T or C (conjugate transpose, which is T for real types).
fn operation(attr: sys::cublasLtMatmulDescAttributes_t, op: i32) -> Result<i32, LtError> {
    if (OP_N..=OP_C).contains(&op) {
        Ok(op)
    } else {
        Err(LtError::invalid(format!(
            "{attr:?} = {op} is not CUBLAS_OP_N, _T or _C"
        )))
    }
}

/// Heuristic search preferences (cublasLtMatmulPreference_t). softgpu's one algorithm needs no workspace and any
/// element-aligned operand, so every preference is stored for GetAttribute but changes nothing.
#[derive(Debug, Default)]
pub struct Preference {
    /// Attribute value bits (a 4-byte value in the low half), by attribute.
    values: BTreeMap<u32, u64>,
}

impl Preference {
    /// The value size and default of an attribute, from the docs' table.
    fn spec(attr: sys::cublasLtMatmulPreferenceAttributes_t) -> (usize, u64) {
        use sys::cublasLtMatmulPreferenceAttributes_t::*;
        match attr {
            CUBLASLT_MATMUL_PREF_SEARCH_MODE => (4, 0),
            CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES => (8, 0),
            CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK => (
                4,
                sys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_MASK as u64,
            ),
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES
            | CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES
            | CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES
            | CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES => (4, 256),
            // A float: 0.0 means no limit.
            CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT => (4, 0),
            CUBLASLT_MATMUL_PREF_IMPL_MASK => (8, u64::MAX),
        }
    }

    /// cublasLtMatmulPreferenceSetAttribute.
    ///
    /// # Safety
    /// `buf` must be NULL or valid for reading `size` bytes.
    pub unsafe fn set(
        &mut self,
        attr: sys::cublasLtMatmulPreferenceAttributes_t,
        buf: *const c_void,
        size: usize,
    ) -> Result<(), LtError> {
        let bits = match Self::spec(attr).0 {
            4 => u64::from(read_value::<u32>(attr, buf, size)?),
            _ => read_value::<u64>(attr, buf, size)?,
        };
        self.values.insert(attr as u32, bits);
        Ok(())
    }

    /// cublasLtMatmulPreferenceGetAttribute.
    ///
    /// # Safety
    /// `buf` must be NULL or valid for writing `size` bytes; `written` NULL or valid for writing.
    pub unsafe fn get(
        &self,
        attr: sys::cublasLtMatmulPreferenceAttributes_t,
        buf: *mut c_void,
        size: usize,
        written: *mut usize,
    ) -> Result<(), LtError> {
        let (width, default) = Self::spec(attr);
        let bits = self.values.get(&(attr as u32)).copied().unwrap_or(default);
        match width {
            4 => write_value(attr, bits as u32, buf, size, written),
            _ => write_value(attr, bits, buf, size, written),
        }
    }
}

fn unimplemented(attr: impl Debug) -> LtError {
    LtError::unsupported(format!("softgpu does not implement {attr:?}"))
}

/// Reads a value of `attr` as [`read_value`] does, accepting only the one softgpu implements.
///
/// # Safety
/// `buf` must be NULL or valid for reading `size` bytes.
unsafe fn only<T: Copy + PartialEq + Debug>(
    attr: impl Debug,
    buf: *const c_void,
    size: usize,
    implemented: T,
    name: &str,
) -> Result<(), LtError> {
    let value: T = read_value(&attr, buf, size)?;
    if value == implemented {
        Ok(())
    } else {
        Err(LtError::unsupported(format!(
            "{attr:?} = {value:?}: softgpu implements only {name}"
        )))
    }
}

/// Reads an attribute value of type `T` (an integer), as SetAttribute does: `buf` non-NULL and `size` exactly
/// `size_of::<T>()`.
///
/// # Safety
/// `buf` must be NULL or valid for reading `size` bytes.
unsafe fn read_value<T: Copy>(
    attr: impl Debug,
    buf: *const c_void,
    size: usize,
) -> Result<T, LtError> {
    if buf.is_null() {
        return Err(LtError::invalid(format!("{attr:?}: buf is NULL")));
    }
    if size != size_of::<T>() {
        return Err(LtError::invalid(format!(
            "{attr:?} is {} bytes, sizeInBytes is {size}",
            size_of::<T>()
        )));
    }
    Ok(buf.cast::<T>().read_unaligned())
}

/// Writes an attribute value of type `T`, as GetAttribute does: `size` 0 asks for the size only (into
/// `written`); otherwise `buf` must be non-NULL and `size` exactly `size_of::<T>()`.
///
/// # Safety
/// `buf` must be NULL or valid for writing `size` bytes; `written` NULL or valid for writing.
unsafe fn write_value<T: Copy>(
    attr: impl Debug,
    value: T,
    buf: *mut c_void,
    size: usize,
    written: *mut usize,
) -> Result<(), LtError> {
    if size == 0 {
        if written.is_null() {
            return Err(LtError::invalid(format!(
                "{attr:?}: sizeInBytes is 0 and sizeWritten is NULL"
            )));
        }
        *written = size_of::<T>();
        return Ok(());
    }
    if buf.is_null() {
        return Err(LtError::invalid(format!("{attr:?}: buf is NULL")));
    }
    if size != size_of::<T>() {
        return Err(LtError::invalid(format!(
            "{attr:?} is {} bytes, sizeInBytes is {size}",
            size_of::<T>()
        )));
    }
    buf.cast::<T>().write_unaligned(value);
    if !written.is_null() {
        *written = size_of::<T>();
    }
    Ok(())
}

/// Live descriptors of one kind, by token.
pub struct Table<T> {
    /// The C type, for messages.
    kind: &'static str,
    /// What cuBLASLt returns for a pointer that is not a live descriptor of this kind.
    missing: sys::cublasStatus_t,
    live: BTreeMap<u64, T>,
}

/// The next token: non-canonical on x86-64 and AArch64, 16 apart, never reused.
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(0xb1a5_0000_0000_0000);

impl<T> Table<T> {
    const fn new(kind: &'static str, missing: sys::cublasStatus_t) -> Self {
        Self {
            kind,
            missing,
            live: BTreeMap::new(),
        }
    }

    /// Stores `value` under a new token: the opaque pointer the caller holds.
    pub fn create<P>(&mut self, value: T) -> *mut P {
        let token = NEXT_TOKEN.fetch_add(16, Ordering::Relaxed);
        self.live.insert(token, value);
        token as usize as *mut P
    }

    pub fn get<P>(&self, ptr: *mut P) -> Result<&T, LtError> {
        self.live
            .get(&(ptr as usize as u64))
            .ok_or_else(|| self.missing(ptr))
    }

    pub fn get_mut<P>(&mut self, ptr: *mut P) -> Result<&mut T, LtError> {
        let missing = self.missing(ptr);
        self.live.get_mut(&(ptr as usize as u64)).ok_or(missing)
    }

    pub fn destroy<P>(&mut self, ptr: *mut P) -> Result<(), LtError> {
        self.live
            .remove(&(ptr as usize as u64))
            .map(drop)
            .ok_or_else(|| self.missing(ptr))
    }

    fn missing<P>(&self, ptr: *mut P) -> LtError {
        LtError::new(
            self.missing,
            format!(
                "{ptr:p} is not a live {} (never created, or destroyed)",
                self.kind
            ),
        )
    }
}

/// Every live descriptor.
pub struct Registry {
    pub handles: Table<()>,
    pub layouts: Table<Layout>,
    pub descs: Table<MatmulDesc>,
    pub prefs: Table<Preference>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    // The docs: CUBLAS_STATUS_NOT_INITIALIZED "if cuBLASLt handle has not been initialized".
    handles: Table::new(
        "cublasLtHandle_t",
        sys::cublasStatus_t::CUBLAS_STATUS_NOT_INITIALIZED,
    ),
    layouts: Table::new(
        "cublasLtMatrixLayout_t",
        sys::cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE,
    ),
    descs: Table::new(
        "cublasLtMatmulDesc_t",
        sys::cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE,
    ),
    prefs: Table::new(
        "cublasLtMatmulPreference_t",
        sys::cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE,
    ),
});

/// The registry, locked for one call.
pub fn registry() -> MutexGuard<'static, Registry> {
    // A panic elsewhere while it was held leaves the tables consistent: each change is one insert or remove.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}
