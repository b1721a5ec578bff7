//! Finds a usable GPU without ever panicking. cudarc opens libcuda and cuBLASLt lazily and panics when a library or
//! symbol is missing, so every library is looked for first and each absence becomes an
//! [`Error::EngineUnavailable`] naming what is missing.

use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, DriverError};

use crate::error::{Error, Result};

/// Oldest architecture the PTX targets (compute_80).
const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);

/// What the probe found: the device, for messages and reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_bytes: usize,
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::EngineUnavailable {
        engine: "cuda",
        reason: reason.into(),
    }
}

/// Maps a driver error during set-up to an error naming the step.
pub(crate) fn driver(during: impl Into<String>) -> impl FnOnce(DriverError) -> Error {
    let during = during.into();
    move |e| Error::Cuda {
        during,
        detail: e.to_string(),
    }
}

/// Opens device `ordinal`: checks for libcuda, a device, a supported architecture and cuBLASLt, in that order, and
/// returns its primary context.
pub fn open(ordinal: usize) -> Result<(Arc<CudaContext>, DeviceInfo)> {
    // SAFETY: only tries to dlopen the library; nothing is called through it.
    if !unsafe { sys::is_culib_present() } {
        return Err(unavailable(
            "the NVIDIA driver library (libcuda.so.1) was not found: no NVIDIA driver is installed, or it is not \
             on the loader path",
        ));
    }
    let count = match CudaContext::device_count() {
        Ok(n) => usize::try_from(n).unwrap_or(0),
        Err(DriverError(
            sys::CUresult::CUDA_ERROR_NO_DEVICE
            | sys::CUresult::CUDA_ERROR_STUB_LIBRARY
            | sys::CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH
            | sys::CUresult::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE,
        )) => 0,
        Err(e) => return Err(driver("initialising the CUDA driver")(e)),
    };
    if count <= ordinal {
        return Err(unavailable(format!(
            "the NVIDIA driver is installed but reports {count} usable CUDA device(s); device {ordinal} was asked for"
        )));
    }
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(unavailable(
            "cuBLASLt (libcublasLt.so.13 or .so.12) was not found: install the CUDA libraries (e.g. the \
             nvidia-cublas wheel) and add their lib folder to LD_LIBRARY_PATH",
        ));
    }
    let ctx = CudaContext::new(ordinal).map_err(driver(format!("opening device {ordinal}")))?;
    let info = DeviceInfo {
        ordinal,
        name: ctx.name().map_err(driver("reading the device name"))?,
        compute_capability: ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?,
        total_bytes: ctx.total_mem().map_err(driver("reading the memory size"))?,
    };
    if info.compute_capability < MIN_COMPUTE_CAPABILITY {
        return Err(unavailable(format!(
            "{} has compute capability {}.{}; the kernels need 8.0 (Ampere) or newer",
            info.name, info.compute_capability.0, info.compute_capability.1
        )));
    }
    Ok((ctx, info))
}
