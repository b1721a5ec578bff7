//! The one device the software GPU presents: an H100 (compute capability 9.0, 132 SMs) by its documented limits,
//! named so that nobody takes it for a GPU, with a capacity set by `SOFTGPU_MEMORY` (bytes, or with a KiB/MiB/GiB
//! suffix; default 80 GiB) to drive out-of-memory paths.

use std::sync::OnceLock;

use cudarc::driver::sys::CUdevice_attribute as A;

/// What `cuDeviceGetName` answers.
pub const NAME: &str = "softgpu (software sm_90 device on the host CPU, not a GPU)";

/// Dynamic plus static shared memory a block may have on sm_90 after opting in.
pub const SMEM_OPTIN: u32 = 232_448;
/// Dynamic shared memory a launch gets without `cuFuncSetAttribute`.
pub const SMEM_DEFAULT: u32 = 48 * 1024;
/// 32-bit registers per SM and per block.
pub const REGISTERS_PER_BLOCK: u32 = 65_536;

/// Device memory capacity in bytes.
pub fn capacity() -> u64 {
    static CAPACITY: OnceLock<u64> = OnceLock::new();
    *CAPACITY.get_or_init(|| {
        let default = 80u64 << 30;
        match std::env::var("SOFTGPU_MEMORY") {
            Ok(v) => parse_bytes(&v).unwrap_or_else(|| {
                eprintln!("softgpu: SOFTGPU_MEMORY={v:?} is not a size (e.g. 512MiB); using {default} bytes");
                default
            }),
            Err(_) => default,
        }
    })
}

fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..digits].parse().ok()?;
    let shift = match v[digits..].trim() {
        "" | "B" => 0,
        "KiB" | "K" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// Compute capability (major, minor).
pub const COMPUTE_CAPABILITY: (i32, i32) = (9, 0);

/// `cuDeviceGetAttribute` for the attributes an H100 SXM reports; `None` for those this device does not model.
pub fn attribute(attr: A) -> Option<i32> {
    Some(match attr {
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => COMPUTE_CAPABILITY.0,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => COMPUTE_CAPABILITY.1,
        A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT => 132,
        A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X | A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z => 64,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X => i32::MAX,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y | A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z => 65_535,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK => SMEM_DEFAULT as i32,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => SMEM_OPTIN as i32,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => 233_472,
        A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK
        | A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR => REGISTERS_PER_BLOCK as i32,
        A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR => 2048,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR => 32,
        A::CU_DEVICE_ATTRIBUTE_WARP_SIZE => 32,
        A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY => 65_536,
        A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE => 50 << 20,
        A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE => 1_980_000,
        A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE => 2_619_000,
        A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH => 5120,
        A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED
        | A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING
        | A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS
        | A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT
        | A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY => 1,
        A::CU_DEVICE_ATTRIBUTE_INTEGRATED | A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED => 0,
        A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID | A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID => 0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("99999999999999GiB"), None);
    }
}
