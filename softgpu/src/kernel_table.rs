//! The kernels this device can run: each kernel of kernels/*.cu by name, with its host entry (the emulation build,
//! `sana_emu_<name>`) and what the sm_90 build says of it (build.rs).

use std::ffi::{c_int, c_void};

/// The launch geometry the host entries take (mirrors `sana_emu::Geometry` in kernels/emu/emu.cuh).
#[repr(C)]
pub struct Geometry {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
}

/// Return codes of the host entries (`sana_emu::Status`).
pub const ENTRY_OK: c_int = 0;
pub const ENTRY_INVALID_GEOMETRY: c_int = 1;

/// One kernel.
pub struct KernelInfo {
    pub name: &'static str,
    /// Registers per thread in the sm_90 cubin.
    pub registers: u32,
    /// Static shared memory per block in the sm_90 cubin.
    pub static_smem: u32,
    /// Bytes of the `.param` list the PTX declares.
    pub param_bytes: usize,
    /// `.maxntid` (x·y·z), when declared.
    pub max_threads: Option<u32>,
    pub entry: unsafe extern "C" fn(*const Geometry, *const c_void) -> c_int,
}

include!(concat!(env!("OUT_DIR"), "/kernel_table.rs"));

/// The kernel named `name`.
pub fn find(name: &str) -> Option<&'static KernelInfo> {
    KERNELS.iter().find(|k| k.name == name)
}
