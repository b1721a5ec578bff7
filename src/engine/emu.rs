//! The emulation engine: kernels/*.cu compiled for the host.
