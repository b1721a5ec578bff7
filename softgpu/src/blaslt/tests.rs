//! The exported functions, called as cudarc calls them: descriptor attributes, and the heuristic's checks.

use std::fmt::Debug;
use std::mem::size_of;
use std::ptr::{null, null_mut};

use super::*;
use sys::cublasLtMatmulDescAttributes_t as D;
use sys::cublasLtMatrixLayoutAttribute_t as L;
use sys::cublasStatus_t::*;
use sys::cudaDataType_t::{CUDA_R_16BF, CUDA_R_16F, CUDA_R_32F};

const BIAS: sys::cublasLtEpilogue_t = sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS;

fn layout(dtype: sys::cudaDataType, rows: u64, cols: u64) -> sys::cublasLtMatrixLayout_t {
    let mut layout = null_mut();
    // SAFETY: `layout` is writable.
    let status = unsafe { cublasLtMatrixLayoutCreate(&mut layout, dtype, rows, cols, rows as i64) };
    assert_eq!(status, CUBLAS_STATUS_SUCCESS);
    layout
}

fn set_layout<T>(layout: sys::cublasLtMatrixLayout_t, attr: L, value: T) -> sys::cublasStatus_t {
    let buf = (&value as *const T).cast();
    // SAFETY: `buf` is readable for the size given.
    unsafe { cublasLtMatrixLayoutSetAttribute(layout, attr, buf, size_of::<T>()) }
}

fn get_layout<T: Default>(layout: sys::cublasLtMatrixLayout_t, attr: L) -> T {
    let (mut value, mut written) = (T::default(), 0);
    let buf = (&mut value as *mut T).cast();
    // SAFETY: `buf` is writable for the size given, and `written` writable.
    let status = unsafe {
        cublasLtMatrixLayoutGetAttribute(layout, attr, buf, size_of::<T>(), &mut written)
    };
    assert_eq!(
        (status, written),
        (CUBLAS_STATUS_SUCCESS, size_of::<T>()),
        "{attr:?}"
    );
    value
}

/// Sets `attr` of a layout to `value` and reads it back.
fn layout_round_trip<T: Default + PartialEq + Debug + Copy>(
    layout: sys::cublasLtMatrixLayout_t,
    attr: L,
    value: T,
) {
    assert_eq!(
        set_layout(layout, attr, value),
        CUBLAS_STATUS_SUCCESS,
        "{attr:?}"
    );
    assert_eq!(get_layout::<T>(layout, attr), value, "{attr:?}");
}

fn matmul_desc() -> sys::cublasLtMatmulDesc_t {
    let mut desc = null_mut();
    let compute = sys::cublasComputeType_t::CUBLAS_COMPUTE_32F;
    // SAFETY: `desc` is writable.
    assert_eq!(
        unsafe { cublasLtMatmulDescCreate(&mut desc, compute, CUDA_R_32F) },
        CUBLAS_STATUS_SUCCESS
    );
    desc
}

fn set_desc<T>(desc: sys::cublasLtMatmulDesc_t, attr: D, value: T) -> sys::cublasStatus_t {
    let buf = (&value as *const T).cast();
    // SAFETY: `buf` is readable for the size given.
    unsafe { cublasLtMatmulDescSetAttribute(desc, attr, buf, size_of::<T>()) }
}

fn get_desc<T: Default>(desc: sys::cublasLtMatmulDesc_t, attr: D) -> T {
    let (mut value, mut written) = (T::default(), 0);
    let buf = (&mut value as *mut T).cast();
    // SAFETY: `buf` is writable for the size given, and `written` writable.
    let status =
        unsafe { cublasLtMatmulDescGetAttribute(desc, attr, buf, size_of::<T>(), &mut written) };
    assert_eq!(
        (status, written),
        (CUBLAS_STATUS_SUCCESS, size_of::<T>()),
        "{attr:?}"
    );
    value
}

/// Sets `attr` of a matmul descriptor to `value` and reads it back.
fn desc_round_trip<T: Default + PartialEq + Debug + Copy>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: D,
    value: T,
) {
    assert_eq!(
        set_desc(desc, attr, value),
        CUBLAS_STATUS_SUCCESS,
        "{attr:?}"
    );
    assert_eq!(get_desc::<T>(desc, attr), value, "{attr:?}");
}

#[test]
fn blaslt_layout_attributes_round_trip() {
    let l = layout(CUDA_R_16BF, 7, 5);
    assert_eq!(
        get_layout::<u32>(l, L::CUBLASLT_MATRIX_LAYOUT_TYPE),
        CUDA_R_16BF as u32
    );
    assert_eq!(get_layout::<u64>(l, L::CUBLASLT_MATRIX_LAYOUT_COLS), 5);
    assert_eq!(
        get_layout::<i32>(l, L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT),
        1
    );
    layout_round_trip(l, L::CUBLASLT_MATRIX_LAYOUT_TYPE, CUDA_R_32F as u32);
    layout_round_trip(l, L::CUBLASLT_MATRIX_LAYOUT_ORDER, 0i32);
    layout_round_trip(l, L::CUBLASLT_MATRIX_LAYOUT_ROWS, 11u64);
    layout_round_trip(l, L::CUBLASLT_MATRIX_LAYOUT_COLS, 3u64);
    layout_round_trip(l, L::CUBLASLT_MATRIX_LAYOUT_LD, 12i64);
    layout_round_trip(l, L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, 4i32);
    layout_round_trip(l, L::CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, 40i64);

    // Size 0 asks for the size.
    let mut written = 0;
    let attr = L::CUBLASLT_MATRIX_LAYOUT_LD;
    // SAFETY: `written` is writable; with size 0 nothing is written to the buffer.
    let status = unsafe { cublasLtMatrixLayoutGetAttribute(l, attr, null_mut(), 0, &mut written) };
    assert_eq!((status, written), (CUBLAS_STATUS_SUCCESS, 8));

    // Wrong sizes, a NULL buffer and a row-major order are refused, and change nothing.
    let refused = [
        set_layout(l, L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, 2i64),
        set_layout(l, L::CUBLASLT_MATRIX_LAYOUT_ROWS, 2u32),
        // SAFETY: a NULL buffer is refused before it is read.
        unsafe { cublasLtMatrixLayoutSetAttribute(l, attr, null(), 8) },
        set_layout(l, L::CUBLASLT_MATRIX_LAYOUT_ORDER, 1i32),
    ];
    let invalid = CUBLAS_STATUS_INVALID_VALUE;
    assert_eq!(
        refused,
        [invalid, invalid, invalid, CUBLAS_STATUS_NOT_SUPPORTED]
    );
    assert_eq!(
        get_layout::<i32>(l, L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT),
        4
    );
    assert_eq!(get_layout::<u64>(l, L::CUBLASLT_MATRIX_LAYOUT_ROWS), 11);

    // After its Destroy, every use of a layout is refused.
    // SAFETY: `l` is live for the first call; the second is refused.
    let destroyed = unsafe {
        [
            cublasLtMatrixLayoutDestroy(l),
            cublasLtMatrixLayoutDestroy(l),
        ]
    };
    assert_eq!(
        destroyed,
        [CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_INVALID_VALUE]
    );
    assert_eq!(
        set_layout(l, L::CUBLASLT_MATRIX_LAYOUT_ROWS, 1u64),
        CUBLAS_STATUS_INVALID_VALUE
    );
}

#[test]
fn blaslt_matmul_desc_attributes_round_trip() {
    use sys::cublasLtEpilogue_t::*;
    let d = matmul_desc();
    assert_eq!(get_desc::<u32>(d, D::CUBLASLT_MATMUL_DESC_COMPUTE_TYPE), 68);
    assert_eq!(
        get_desc::<u32>(d, D::CUBLASLT_MATMUL_DESC_EPILOGUE),
        CUBLASLT_EPILOGUE_DEFAULT as u32
    );
    assert_eq!(
        get_desc::<i32>(d, D::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE),
        -1
    );
    // The values, and sizes, cudarc's `Matmul::matmul` sets.
    desc_round_trip(d, D::CUBLASLT_MATMUL_DESC_TRANSA, 1i32);
    desc_round_trip(d, D::CUBLASLT_MATMUL_DESC_TRANSB, 0i32);
    desc_round_trip(d, D::CUBLASLT_MATMUL_DESC_TRANSC, 0i32);
    desc_round_trip(
        d,
        D::CUBLASLT_MATMUL_DESC_EPILOGUE,
        CUBLASLT_EPILOGUE_GELU_BIAS as u32,
    );
    desc_round_trip(d, D::CUBLASLT_MATMUL_DESC_BIAS_POINTER, 0x1000u64);
    desc_round_trip(d, D::CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, 64i64);
    desc_round_trip(
        d,
        D::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
        CUDA_R_16BF as i32,
    );
    desc_round_trip(d, D::CUBLASLT_MATMUL_DESC_SCALE_TYPE, CUDA_R_32F as u32);

    // Wrong sizes and values are refused as cuBLASLt refuses them, and change nothing.
    let invalid = [
        set_desc(d, D::CUBLASLT_MATMUL_DESC_TRANSA, 0i64),
        set_desc(d, D::CUBLASLT_MATMUL_DESC_EPILOGUE, 4u64),
        set_desc(d, D::CUBLASLT_MATMUL_DESC_BIAS_POINTER, 0x2000u32),
        set_desc(d, D::CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, 1i32),
        set_desc(d, D::CUBLASLT_MATMUL_DESC_TRANSA, 7i32),
    ];
    assert_eq!(invalid, [CUBLAS_STATUS_INVALID_VALUE; 5]);
    // What softgpu does not implement is refused, never ignored.
    let unsupported = [
        set_desc(
            d,
            D::CUBLASLT_MATMUL_DESC_EPILOGUE,
            CUBLASLT_EPILOGUE_GELU_AUX,
        ),
        set_desc(d, D::CUBLASLT_MATMUL_DESC_TRANSC, 1i32),
        set_desc(d, D::CUBLASLT_MATMUL_DESC_POINTER_MODE, 1i32),
        set_desc(d, D::CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, 0u64),
    ];
    assert_eq!(unsupported, [CUBLAS_STATUS_NOT_SUPPORTED; 4]);
    assert_eq!(get_desc::<i32>(d, D::CUBLASLT_MATMUL_DESC_TRANSA), 1);
    assert_eq!(
        get_desc::<u32>(d, D::CUBLASLT_MATMUL_DESC_EPILOGUE),
        CUBLASLT_EPILOGUE_GELU_BIAS as u32
    );
    assert_eq!(
        get_desc::<u64>(d, D::CUBLASLT_MATMUL_DESC_BIAS_POINTER),
        0x1000
    );
    // SAFETY: `d` is live.
    assert_eq!(
        unsafe { cublasLtMatmulDescDestroy(d) },
        CUBLAS_STATUS_SUCCESS
    );
}

#[test]
fn blaslt_preference_attributes_round_trip() {
    use sys::cublasLtMatmulPreferenceAttributes_t::*;
    let (mut pref, mut workspace, mut alignment, mut written) = (null_mut(), 0u64, 0u32, 0);
    let bytes = 32u64 << 20;
    // SAFETY: every buffer is a local of the size given.
    let statuses = unsafe {
        [
            cublasLtMatmulPreferenceCreate(&mut pref),
            cublasLtMatmulPreferenceSetAttribute(
                pref,
                CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&bytes as *const u64).cast(),
                8,
            ),
            cublasLtMatmulPreferenceGetAttribute(
                pref,
                CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&mut workspace as *mut u64).cast(),
                8,
                &mut written,
            ),
            cublasLtMatmulPreferenceGetAttribute(
                pref,
                CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                (&mut alignment as *mut u32).cast(),
                4,
                &mut written,
            ),
            cublasLtMatmulPreferenceSetAttribute(
                pref,
                CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&alignment as *const u32).cast(),
                4,
            ),
            cublasLtMatmulPreferenceDestroy(pref),
        ]
    };
    let (ok, invalid) = (CUBLAS_STATUS_SUCCESS, CUBLAS_STATUS_INVALID_VALUE);
    assert_eq!(statuses, [ok, ok, ok, ok, invalid, ok]);
    // The value set, and the documented default of 256 bytes.
    assert_eq!((workspace, alignment), (bytes, 256));
}

/// The descriptors of one matmul, as the engine's linear layer asks through cudarc: D (m×n) = op(A)·op(B) +
/// bias, A the weight stored k×m with TRANSA = T, B the activations stored k×n, C = D.
#[derive(Clone, Copy)]
struct Linear {
    handle: sys::cublasLtHandle_t,
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
}

impl Linear {
    fn new(ab: sys::cudaDataType, cd: sys::cudaDataType) -> Self {
        let (m, n, k) = (64, 7, 32);
        let mut handle = null_mut();
        // SAFETY: `handle` is writable.
        assert_eq!(
            unsafe { cublasLtCreate(&mut handle) },
            CUBLAS_STATUS_SUCCESS
        );
        let desc = matmul_desc();
        assert_eq!(
            set_desc(desc, D::CUBLASLT_MATMUL_DESC_TRANSA, 1i32),
            CUBLAS_STATUS_SUCCESS
        );
        assert_eq!(
            set_desc(desc, D::CUBLASLT_MATMUL_DESC_EPILOGUE, BIAS),
            CUBLAS_STATUS_SUCCESS
        );
        let (a, b, c) = (layout(ab, k, m), layout(ab, k, n), layout(cd, m, n));
        Linear {
            handle,
            desc,
            a,
            b,
            c,
        }
    }

    /// The status and count of cublasLtMatmulAlgoGetHeuristic, and its one result.
    fn heuristic(
        &self,
    ) -> (
        sys::cublasStatus_t,
        c_int,
        sys::cublasLtMatmulHeuristicResult_t,
    ) {
        let mut result = sys::cublasLtMatmulHeuristicResult_t {
            algo: sys::cublasLtMatmulAlgo_t { data: [0; 8] },
            workspaceSize: 99,
            state: CUBLAS_STATUS_INTERNAL_ERROR,
            wavesCount: 0.0,
            reserved: [0; 4],
        };
        let mut count = -1;
        let Linear {
            handle,
            desc,
            a,
            b,
            c,
        } = *self;
        // SAFETY: `result` has room for the one result asked for; `count` is writable.
        let status = unsafe {
            cublasLtMatmulAlgoGetHeuristic(
                handle,
                desc,
                a,
                b,
                c,
                c,
                null_mut(),
                1,
                &mut result,
                &mut count,
            )
        };
        (status, count, result)
    }

    /// Asserts that the heuristic refuses the problem with `want`, offering no algorithm.
    fn refused(self, want: sys::cublasStatus_t) {
        let (status, count, _) = self.heuristic();
        assert_eq!((status, count), (want, 0));
    }
}

#[test]
fn blaslt_heuristic_accepts_what_the_engine_asks() {
    for (ab, cd) in [
        (CUDA_R_16BF, CUDA_R_16BF),
        (CUDA_R_16F, CUDA_R_16F),
        (CUDA_R_16BF, CUDA_R_32F),
    ] {
        let (status, count, result) = Linear::new(ab, cd).heuristic();
        assert_eq!((status, count), (CUBLAS_STATUS_SUCCESS, 1), "{ab:?} {cd:?}");
        assert_eq!(
            (result.state, result.workspaceSize, result.wavesCount),
            (CUBLAS_STATUS_SUCCESS, 0, 1.0)
        );
        assert_eq!(result.algo.data[0], ALGO_ID);
    }
}

#[test]
fn blaslt_heuristic_refuses_what_cublaslt_refuses() {
    let linear = || Linear::new(CUDA_R_16BF, CUDA_R_16BF);
    // op(A) is 64×32 but B is stored 16×7 with TRANSB = N: k disagrees.
    Linear {
        b: layout(CUDA_R_16BF, 16, 7),
        ..linear()
    }
    .refused(CUBLAS_STATUS_INVALID_VALUE);
    // With TRANSA = N, op(A) is A as stored, 32×64: its 64 columns do not meet B's 32 rows.
    let s = linear();
    assert_eq!(
        set_desc(s.desc, D::CUBLASLT_MATMUL_DESC_TRANSA, 0i32),
        CUBLAS_STATUS_SUCCESS
    );
    s.refused(CUBLAS_STATUS_INVALID_VALUE);
    // A leading dimension below the rows.
    let s = linear();
    assert_eq!(
        set_layout(s.a, L::CUBLASLT_MATRIX_LAYOUT_LD, 31i64),
        CUBLAS_STATUS_SUCCESS
    );
    s.refused(CUBLAS_STATUS_INVALID_VALUE);
    // Batch counts that differ.
    let s = linear();
    assert_eq!(
        set_layout(s.b, L::CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, 2i32),
        CUBLAS_STATUS_SUCCESS
    );
    s.refused(CUBLAS_STATUS_INVALID_VALUE);
    // Type combinations outside the table: f16 A/B with bf16 C/D, f32 A/B with bf16 C/D, COMPUTE_16F.
    Linear::new(CUDA_R_16F, CUDA_R_16BF).refused(CUBLAS_STATUS_NOT_SUPPORTED);
    Linear::new(CUDA_R_32F, CUDA_R_16BF).refused(CUBLAS_STATUS_NOT_SUPPORTED);
    let s = Linear::new(CUDA_R_16F, CUDA_R_16F);
    let compute_16f = sys::cublasComputeType_t::CUBLAS_COMPUTE_16F as u32;
    assert_eq!(
        set_desc(s.desc, D::CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, compute_16f),
        CUBLAS_STATUS_SUCCESS
    );
    s.refused(CUBLAS_STATUS_NOT_SUPPORTED);
    // A bias type other than D's.
    let s = linear();
    let f32_bias = CUDA_R_32F as i32;
    assert_eq!(
        set_desc(s.desc, D::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, f32_bias),
        CUBLAS_STATUS_SUCCESS
    );
    s.refused(CUBLAS_STATUS_NOT_SUPPORTED);
    // A destroyed layout, and a handle never created.
    let s = linear();
    // SAFETY: `s.a` is live.
    assert_eq!(
        unsafe { cublasLtMatrixLayoutDestroy(s.a) },
        CUBLAS_STATUS_SUCCESS
    );
    s.refused(CUBLAS_STATUS_INVALID_VALUE);
    let s = linear();
    Linear {
        handle: s.desc.cast(),
        ..s
    }
    .refused(CUBLAS_STATUS_NOT_INITIALIZED);
}

#[test]
fn blaslt_status_strings_name_the_status() {
    // SAFETY: the strings returned are static and NUL-terminated.
    let name = unsafe { CStr::from_ptr(cublasLtGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED)) };
    assert_eq!(name, c"CUBLAS_STATUS_NOT_SUPPORTED");
}
