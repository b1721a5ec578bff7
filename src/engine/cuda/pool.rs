//! The device's stream-ordered memory pool, which every cudarc allocation comes from (`cuMemAllocAsync` on
//! devices with memory pools, all of sm_80+). It is the activation arena: with no release threshold, memory freed
//! by one op stays reserved for the next (as PyTorch's caching allocator keeps it), so steady-state steps never call
//! into the driver's allocator; and its used-memory high-water mark is the peak device memory a stage needed.

use std::ffi::c_void;

use cudarc::driver::{sys, CudaContext};

use crate::error::{Error, Result};

/// The default memory pool of the context's device.
#[derive(Clone, Copy, Debug)]
pub struct MemoryPool(sys::CUmemoryPool);

// SAFETY: a pool handle is a process-wide driver object; the driver API is thread-safe.
unsafe impl Send for MemoryPool {}
// SAFETY: as above.
unsafe impl Sync for MemoryPool {}

fn check(during: &str, r: sys::CUresult) -> Result<()> {
    match r {
        sys::CUresult::CUDA_SUCCESS => Ok(()),
        e => Err(Error::Cuda {
            during: during.to_string(),
            detail: format!("{e:?}"),
        }),
    }
}

impl MemoryPool {
    pub fn default_of(ctx: &CudaContext) -> Result<Self> {
        let mut pool = std::ptr::null_mut();
        ctx.bind_to_thread()
            .map_err(super::probe::driver("binding the context"))?;
        // SAFETY: `pool` is a valid out-pointer and the device handle comes from a live context.
        let r = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) };
        check("getting the device memory pool", r)?;
        Ok(Self(pool))
    }

    fn get(&self, attr: sys::CUmemPool_attribute) -> Result<u64> {
        let mut v: u64 = 0;
        // SAFETY: every attribute read here is a cuuint64_t; `v` outlives the call.
        let r =
            unsafe { sys::cuMemPoolGetAttribute(self.0, attr, &mut v as *mut u64 as *mut c_void) };
        check("reading a memory pool attribute", r)?;
        Ok(v)
    }

    fn set(&self, attr: sys::CUmemPool_attribute, mut v: u64) -> Result<()> {
        // SAFETY: as in `get`.
        let r =
            unsafe { sys::cuMemPoolSetAttribute(self.0, attr, &mut v as *mut u64 as *mut c_void) };
        check("setting a memory pool attribute", r)
    }

    /// Keeps freed memory reserved in the pool instead of returning it to the driver at each synchronisation.
    pub fn keep_freed_memory(&self) -> Result<()> {
        self.set(
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            u64::MAX,
        )
    }

    /// Bytes the pool holds from the driver, in use or free for reuse.
    pub fn reserved_bytes(&self) -> Result<u64> {
        self.get(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)
    }

    /// Bytes allocated from the pool and not yet freed.
    pub fn used_bytes(&self) -> Result<u64> {
        self.get(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)
    }

    /// High-water mark of [`Self::used_bytes`] since the last [`Self::reset_peak`].
    pub fn peak_used_bytes(&self) -> Result<u64> {
        self.get(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH)
    }

    /// Restarts the high-water mark (the driver only accepts 0 here).
    pub fn reset_peak(&self) -> Result<()> {
        self.set(sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0)
    }

    /// Returns the reserved memory nothing uses to the driver (memory freed by queued work stays until that work
    /// has run).
    pub fn trim(&self) -> Result<()> {
        // SAFETY: a live pool handle.
        check("trimming the memory pool", unsafe {
            sys::cuMemPoolTrimTo(self.0, 0)
        })
    }
}

/// The device's graph memory: what the allocations recorded inside CUDA graphs use. It is separate from the pool
/// above, so a stage that replays a graph needs both figures.
#[derive(Clone, Copy, Debug)]
pub struct GraphMemory(sys::CUdevice);

impl GraphMemory {
    pub fn of(ctx: &CudaContext) -> Self {
        Self(ctx.cu_device())
    }

    /// High-water mark of graph allocations since the last [`Self::reset_peak`].
    pub fn peak_used_bytes(&self) -> Result<u64> {
        let mut v: u64 = 0;
        // SAFETY: USED_MEM_HIGH is a cuuint64_t; `v` outlives the call.
        let r = unsafe {
            sys::cuDeviceGetGraphMemAttribute(
                self.0,
                sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH,
                &mut v as *mut u64 as *mut c_void,
            )
        };
        check("reading the graph memory high-water mark", r)?;
        Ok(v)
    }

    pub fn reset_peak(&self) -> Result<()> {
        let mut zero: u64 = 0;
        // SAFETY: as in `peak_used_bytes`; the driver only accepts 0.
        let r = unsafe {
            sys::cuDeviceSetGraphMemAttribute(
                self.0,
                sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_USED_MEM_HIGH,
                &mut zero as *mut u64 as *mut c_void,
            )
        };
        check("resetting the graph memory high-water mark", r)
    }

    /// Returns graph memory no live graph holds to the driver (after the step graph is destroyed, for the decoder).
    pub fn trim(&self) -> Result<()> {
        // SAFETY: a device handle from a live context.
        check("trimming graph memory", unsafe {
            sys::cuDeviceGraphMemTrim(self.0)
        })
    }
}
