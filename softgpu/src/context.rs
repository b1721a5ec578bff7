//! The device's primary context: retained and released by count, current per thread, and its sticky error — a
//! fault in queued work (an illegal address) makes every later call fail, as a GPU fault kills the context, until
//! the last user releases it.

use std::cell::Cell;
use std::sync::Mutex;

use cudarc::driver::sys::CUcontext;

use crate::status::{CUresult, Fault};

/// The one context's handle.
pub const HANDLE: CUcontext = 0x5ca1_ab1e_0000 as CUcontext;

struct Primary {
    refs: usize,
    sticky: Option<Fault>,
}

static PRIMARY: Mutex<Primary> = Mutex::new(Primary {
    refs: 0,
    sticky: None,
});

thread_local! {
    static CURRENT: Cell<bool> = const { Cell::new(false) };
}

fn primary() -> std::sync::MutexGuard<'static, Primary> {
    PRIMARY.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn retain() -> CUcontext {
    primary().refs += 1;
    HANDLE
}

pub fn release() -> Result<(), Fault> {
    let mut p = primary();
    if p.refs == 0 {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_INVALID_CONTEXT,
            "the primary context is not retained",
        ));
    }
    p.refs -= 1;
    if p.refs == 0 {
        p.sticky = None;
    }
    Ok(())
}

pub fn set_current(ctx: CUcontext) -> Result<(), Fault> {
    if !ctx.is_null() && ctx != HANDLE {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_INVALID_CONTEXT,
            format!("{ctx:?} is not this device's context"),
        ));
    }
    CURRENT.with(|c| c.set(!ctx.is_null()));
    Ok(())
}

pub fn current() -> CUcontext {
    if CURRENT.with(Cell::get) {
        HANDLE
    } else {
        std::ptr::null_mut()
    }
}

/// The calling thread has the context current and the context has no sticky error.
pub fn check() -> Result<(), Fault> {
    if !CURRENT.with(Cell::get) {
        return Err(Fault::new(
            CUresult::CUDA_ERROR_INVALID_CONTEXT,
            "no context is current on this thread (cuCtxSetCurrent)",
        ));
    }
    match &primary().sticky {
        Some(f) => Err(Fault::new(
            f.code,
            format!("the context failed earlier: {}", f.detail),
        )),
        None => Ok(()),
    }
}

pub fn set_sticky(f: Fault) {
    primary().sticky.get_or_insert(f);
}
