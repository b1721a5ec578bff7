//! The kernel modules of kernels/*.cu on the device, loaded once when the engine starts with every function looked
//! up there and then (no lookup at a first launch to stall the first step). On sm_90 the sm_90 cubins are loaded;
//! if the driver refuses one, or on any other device, the compute_80 PTX, which the driver JIT-compiles and caches.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use super::embedded;
use crate::engine::StorageDtype;
use crate::error::{Error, Result};
use crate::launch::{Family, KernelId, Plan};

/// Dynamic shared memory a launch gets without opting in per function.
const DEFAULT_DYNAMIC_SMEM: u32 = 48 * 1024;

/// Which image of the kernels the driver runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// nvcc's sm_90 SASS, as compiled.
    Cubin,
    /// compute_80 PTX, JIT-compiled by the driver at load.
    Ptx,
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageKind::Cubin => "cubin",
            ImageKind::Ptx => "ptx",
        })
    }
}

pub struct Kernels {
    /// Every function of every family, by symbol; each keeps its module loaded.
    functions: HashMap<String, CudaFunction>,
    kind: ImageKind,
    /// Why the cubins were not used on an sm_90 device that has them (the driver's refusal).
    cubin_refused: Option<String>,
}

/// Loads one family's module and looks up each of its functions.
fn load_family(
    ctx: &Arc<CudaContext>,
    family: Family,
    image: Ptx,
    kind: ImageKind,
) -> Result<Vec<(String, CudaFunction)>> {
    let module: Arc<CudaModule> = ctx.load_module(image).map_err(|e| Error::Cuda {
        during: format!("loading kernels/{}.cu ({kind})", family.name()),
        detail: e.to_string(),
    })?;
    family
        .symbols()
        .into_iter()
        .map(|symbol| {
            let f = module.load_function(&symbol).map_err(|e| Error::Cuda {
                during: format!(
                    "looking up kernel `{symbol}` in kernels/{}.cu ({kind})",
                    family.name()
                ),
                detail: e.to_string(),
            })?;
            Ok((symbol, f))
        })
        .collect()
}

/// Every family from `image`.
fn load_all(
    ctx: &Arc<CudaContext>,
    kind: ImageKind,
    image: impl Fn(Family) -> Result<Ptx>,
) -> Result<HashMap<String, CudaFunction>> {
    let mut functions = HashMap::new();
    for family in Family::ALL {
        functions.extend(load_family(ctx, family, image(family)?, kind)?);
    }
    Ok(functions)
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>, compute_capability: (i32, i32)) -> Result<Self> {
        let have_cubins = Family::ALL
            .iter()
            .all(|&f| embedded::sm90_cubin(f).is_some());
        let mut cubin_refused = None;
        if have_cubins && compute_capability == (9, 0) {
            let cubin = |family| {
                embedded::sm90_cubin(family)
                    .map(|c| Ptx::from_binary(c.to_vec()))
                    .ok_or(Error::KernelsNotBuilt)
            };
            match load_all(ctx, ImageKind::Cubin, cubin) {
                Ok(functions) => {
                    return Ok(Self {
                        functions,
                        kind: ImageKind::Cubin,
                        cubin_refused: None,
                    })
                }
                // The driver may refuse SASS it cannot run (CUDA_ERROR_NO_BINARY_FOR_GPU, CUDA_ERROR_INVALID_IMAGE,
                // …): the PTX serves instead, and the reason is kept for the report.
                Err(e) => cubin_refused = Some(e.to_string()),
            }
        }
        let ptx = |family| Ok(Ptx::from_src(embedded::ptx(family)?));
        let functions = load_all(ctx, ImageKind::Ptx, ptx).map_err(|e| match &cubin_refused {
            Some(refused) => Error::Cuda {
                during: "loading the kernels as PTX after the sm_90 cubins were refused".into(),
                detail: format!("{e} (cubin: {refused})"),
            },
            None => e,
        })?;
        Ok(Self {
            functions,
            kind: ImageKind::Ptx,
            cubin_refused,
        })
    }

    /// Which image the driver runs.
    pub fn image_kind(&self) -> ImageKind {
        self.kind
    }

    /// Why the sm_90 cubins were not loaded on a device that could have run them, if they were refused.
    pub fn cubin_refused(&self) -> Option<&str> {
        self.cubin_refused.as_deref()
    }

    fn function(&self, family: Family, symbol: &str) -> Result<&CudaFunction> {
        self.functions.get(symbol).ok_or_else(|| Error::Cuda {
            during: format!("launching `{symbol}`"),
            detail: format!(
                "kernels/{}.cu has no such kernel (its kernels are listed in launch::kernel::KERNELS)",
                family.name()
            ),
        })
    }

    /// Launches `kernel` in `dtype` with `plan`'s geometry and its params struct as the only argument. An empty grid
    /// launches nothing.
    ///
    /// # Safety
    /// Every pointer in `plan.params` must address a live device buffer of the size the plan was made for, outputs
    /// not aliasing inputs, all on `stream`.
    pub unsafe fn launch<P: DeviceRepr>(
        &self,
        stream: &Arc<CudaStream>,
        kernel: KernelId,
        dtype: StorageDtype,
        plan: &Plan<P>,
    ) -> Result<()> {
        if plan.geometry.is_empty() {
            return Ok(());
        }
        let g = plan.geometry;
        let symbol = kernel.symbol(dtype);
        let f = self.function(kernel.family, &symbol)?;
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
        let mut builder = stream.launch_builder(f);
        builder.arg(&plan.params);
        // SAFETY: guaranteed by the caller; the params struct mirrors the kernel's only argument.
        unsafe { builder.launch(cfg) }.map_err(|e| Error::Cuda {
            during: format!("launching `{symbol}`"),
            detail: e.to_string(),
        })?;
        Ok(())
    }
}
