//! Engine-generic helpers of the kernel-family tests (tests/<family>.rs): one check body per family runs on the
//! emulation engine (the kernels compiled for the host, what CI runs on every push) and on the CUDA engine (a GPU,
//! or CI's software device), through the `Engine` API alone, so it never depends on an engine's tensor type.
#![allow(dead_code)] // each test binary uses its own subset

use sana::engine::cuda::CudaEngine;
use sana::engine::{Engine, StorageDtype};
use sana::{HostTensor, Result};

/// The dtypes the CUDA engine stores (it refuses f32).
pub const CUDA_DTYPES: [StorageDtype; 2] = [StorageDtype::Bf16, StorageDtype::F16];

/// Uploads `inputs` to `e` (rounding them to its storage dtype), runs `op` on the engine's tensors and downloads
/// the result as f32.
pub fn run_op<E: Engine>(
    e: &E,
    inputs: &[&HostTensor],
    op: impl FnOnce(&[E::Tensor]) -> Result<E::Tensor>,
) -> Result<HostTensor> {
    let ts = upload_all(e, inputs)?;
    e.download(&op(&ts)?)
}

/// As [`run_op`] for an op with two results.
pub fn run_op2<E: Engine>(
    e: &E,
    inputs: &[&HostTensor],
    op: impl FnOnce(&[E::Tensor]) -> Result<(E::Tensor, E::Tensor)>,
) -> Result<(HostTensor, HostTensor)> {
    let ts = upload_all(e, inputs)?;
    let (a, b) = op(&ts)?;
    Ok((e.download(&a)?, e.download(&b)?))
}

/// As [`run_op`] for an op with three results.
pub fn run_op3<E: Engine>(
    e: &E,
    inputs: &[&HostTensor],
    op: impl FnOnce(&[E::Tensor]) -> Result<(E::Tensor, E::Tensor, E::Tensor)>,
) -> Result<(HostTensor, HostTensor, HostTensor)> {
    let ts = upload_all(e, inputs)?;
    let (a, b, c) = op(&ts)?;
    Ok((e.download(&a)?, e.download(&b)?, e.download(&c)?))
}

fn upload_all<E: Engine>(e: &E, inputs: &[&HostTensor]) -> Result<Vec<E::Tensor>> {
    inputs.iter().map(|t| e.upload(t)).collect()
}

/// Asserts that `got` has `want`'s shape and each element is within `tol(i)` of it (`emu_check::assert_within`),
/// naming the engine, dtype and `case` on failure; returns the worst |got − want| / tol.
pub fn within<E: Engine>(
    e: &E,
    dtype: StorageDtype,
    case: impl std::fmt::Debug,
    got: &HostTensor,
    want: &HostTensor,
    tol: impl Fn(usize) -> f32,
) -> f32 {
    assert_eq!(got.shape(), want.shape(), "{} {dtype:?} {case:?}", e.name());
    crate::emu_check::assert_within(
        &format!("{} {dtype:?} {case:?}", e.name()),
        got.data(),
        want.data(),
        tol,
    )
}

/// Runs `check` on the CUDA engine in bf16 and f16, or skips (printing why) where there is no GPU; with
/// `SANA_REQUIRE_GPU=1` (CI's software device) a missing GPU fails instead (`common::cuda_or_skip`).
pub fn on_cuda(test: &str, mut check: impl FnMut(&CudaEngine, StorageDtype)) {
    for dtype in CUDA_DTYPES {
        if let Some(e) = crate::common::cuda_or_skip(test, dtype) {
            let start = std::time::Instant::now();
            check(&e, dtype);
            eprintln!("{test} {dtype:?}: {:.1} s", start.elapsed().as_secs_f64());
        }
    }
}
