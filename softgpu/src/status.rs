//! How the software device reports: every failing call prints one line naming the call and the reason on stderr
//! (the driver only returns a code; a test log needs the why), then returns the driver's code for it.

use std::fmt::Display;

pub use cudarc::driver::sys::CUresult;

/// A failure found while running queued work (a kernel, a copy, a matmul), reported at the next synchronisation.
#[derive(Clone, Debug)]
pub struct Fault {
    pub code: CUresult,
    pub detail: String,
}

impl Fault {
    pub fn new(code: CUresult, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// Prints `softgpu: <call>: <why>` and returns `code`.
pub fn fail(code: CUresult, call: &str, why: impl Display) -> CUresult {
    eprintln!("softgpu: {call}: {why} ({code:?})");
    code
}

/// `Ok` as `CUDA_SUCCESS`, a fault as its code (printed).
pub fn result(call: &str, r: Result<(), Fault>) -> CUresult {
    match r {
        Ok(()) => CUresult::CUDA_SUCCESS,
        Err(f) => fail(f.code, call, f.detail),
    }
}
