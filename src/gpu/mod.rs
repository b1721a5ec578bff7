//! GPU-side support: embedded kernels, device probe, the memory pool and the per-stage working-set plan.

pub mod arena;
pub mod kernels;
pub mod pool;
pub mod probe;
