//! GPU-side support: embedded PTX, device probe.

pub mod kernels;
