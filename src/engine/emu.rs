//! The emulation engine: the kernel engine ([`KernelEngine`], whose op bodies the cuda engine shares) on the host —
//! kernels/*.cu compiled for the host by g++ through kernels/emu/emu.cuh (see build.rs), launched with the same
//! plans and packed params structs as on a GPU, on buffers in the same storage dtypes. It is how CI tests every
//! kernel without a GPU. Outputs start as NaN, so an element a kernel fails to write shows in every comparison.

mod device;

pub use device::{EmuDevice, HostBuffer};

use crate::engine::kernel::KernelEngine;
use crate::engine::StorageDtype;

/// The emulation engine: kernels/*.cu run on the host, on buffers in a storage dtype.
pub type EmuEngine = KernelEngine<EmuDevice>;

impl EmuEngine {
    /// An engine storing activations and weights in `dtype`.
    pub fn new(dtype: StorageDtype) -> Self {
        KernelEngine::on(EmuDevice::new(dtype))
    }
}
