//! The kernel modules of kernels/*.cu on the device: loaded once when the engine starts (the sm_90 cubin on sm_90
//! devices, else the compute_80 PTX, which the driver JIT-compiles and caches), functions looked up by symbol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use crate::engine::emu::StorageDtype;
use crate::error::{Error, Result};
use crate::gpu::kernels::{self, Family};
use crate::launch::Plan;

/// Dynamic shared memory a launch gets without opting in per function.
const DEFAULT_DYNAMIC_SMEM: u32 = 48 * 1024;

pub struct Kernels {
    modules: HashMap<Family, Arc<CudaModule>>,
    /// Functions already looked up by symbol.
    functions: Mutex<HashMap<String, CudaFunction>>,
}

/// The symbol suffix of a storage dtype (`<op>_<dtype>` in kernels/*.cu).
pub fn suffix(dtype: StorageDtype) -> &'static str {
    match dtype {
        StorageDtype::F32 => "f32",
        StorageDtype::Bf16 => "bf16",
        StorageDtype::F16 => "f16",
    }
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>, compute_capability: (i32, i32)) -> Result<Self> {
        let mut modules = HashMap::new();
        for family in Family::ALL {
            let image = match kernels::sm90_cubin(family) {
                Some(cubin) if compute_capability == (9, 0) => Ptx::from_binary(cubin.to_vec()),
                _ => Ptx::from_src(kernels::ptx(family)?),
            };
            let module = ctx.load_module(image).map_err(|e| Error::Cuda {
                during: format!("loading kernels/{}.cu", family.name()),
                detail: e.to_string(),
            })?;
            modules.insert(family, module);
        }
        Ok(Self {
            modules,
            functions: Mutex::new(HashMap::new()),
        })
    }

    fn function(&self, family: Family, symbol: &str) -> Result<CudaFunction> {
        let mut cache = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = cache.get(symbol) {
            return Ok(f.clone());
        }
        let module = self.modules.get(&family).ok_or(Error::KernelsNotBuilt)?;
        let err = |e: cudarc::driver::DriverError| Error::Cuda {
            during: format!(
                "looking up kernel `{symbol}` in kernels/{}.cu",
                family.name()
            ),
            detail: e.to_string(),
        };
        let f = module.load_function(symbol).map_err(err)?;
        cache.insert(symbol.to_string(), f.clone());
        Ok(f)
    }

    /// Launches `symbol` of `family` with `plan`'s geometry and its params struct as the only argument. An empty
    /// grid launches nothing.
    ///
    /// # Safety
    /// Every pointer in `plan.params` must address a live device buffer of the size the plan was made for, outputs
    /// not aliasing inputs, all on `stream`.
    pub unsafe fn launch<P: DeviceRepr>(
        &self,
        stream: &Arc<CudaStream>,
        family: Family,
        symbol: &str,
        plan: &Plan<P>,
    ) -> Result<()> {
        if plan.geometry.is_empty() {
            return Ok(());
        }
        let g = plan.geometry;
        let f = self.function(family, symbol)?;
        if g.shared_mem_bytes > DEFAULT_DYNAMIC_SMEM {
            // The opt-in is per function and per size; launch plans keep within the device's limit (227 KiB on
            // sm_90).
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                g.shared_mem_bytes as i32,
            )
            .map_err(|e| Error::Cuda {
                during: format!(
                    "granting `{symbol}` {} bytes of shared memory",
                    g.shared_mem_bytes
                ),
                detail: e.to_string(),
            })?;
        }
        let cfg = LaunchConfig {
            grid_dim: (g.grid[0], g.grid[1], g.grid[2]),
            block_dim: (g.block[0], g.block[1], g.block[2]),
            shared_mem_bytes: g.shared_mem_bytes,
        };
        let mut builder = stream.launch_builder(&f);
        builder.arg(&plan.params);
        // SAFETY: guaranteed by the caller; the params struct mirrors the kernel's only argument.
        unsafe { builder.launch(cfg) }.map_err(|e| Error::Cuda {
            during: format!("launching `{symbol}`"),
            detail: e.to_string(),
        })?;
        Ok(())
    }
}
