//! GPU-side support: embedded PTX, device probe.
