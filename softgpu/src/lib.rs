//! A software CUDA device: stand-ins for `libcuda.so` and `libcublasLt.so` that run sana's CUDA engine on the host,
//! so the engine's host side (modules, launches, copies, the memory pool, stream capture and graph replay, cuBLASLt
//! descriptors and epilogues) runs on every commit without a GPU. `tools/softgpu.sh` puts this library first on the
//! loader path under both names; cudarc opens them by bare name and resolves each symbol on first use.
//!
//! It is faithful where faithfulness catches bugs: work runs in stream order only at synchronisation points; capture
//! enforces the driver's rules; launches are checked against sm_90's limits; buffers sit between guard pages with
//! canaries; out-of-memory happens at a configurable capacity. Kernels are the emulation build of kernels/*.cu
//! (kernels/emu/emu.cuh), so their arithmetic is the host's, not the GPU's: hardware numerics, ptxas/driver
//! acceptance of the real binaries and speed remain for a real GPU.

pub mod blaslt;
mod context;
pub mod cubin;
pub mod device;
pub mod driver;
mod fault;
mod graph;
mod kernel_table;
pub mod memory;
mod module;
pub mod ptx;
pub mod status;
pub mod stream;
pub mod work;
