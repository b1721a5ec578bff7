//! Modules and launches. A module image (PTX text, or a cubin when the device's SM matches) is checked as the
//! driver would check it and its kernels are bound to their host builds; a launch is checked against sm_90's
//! limits with the driver's error codes, its parameter bytes are copied at the call (as the driver does), and the
//! host kernel runs when the stream gets to it.

use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cubin;
use crate::device::{self, REGISTERS_PER_BLOCK, SMEM_DEFAULT, SMEM_OPTIN};
use crate::kernel_table::{self, Geometry, KernelInfo, ENTRY_INVALID_GEOMETRY, ENTRY_OK};
use crate::ptx;
use crate::status::{CUresult, Fault};
use crate::stream::{self, next_id};
use crate::work::Work;

/// Newest PTX ISA a CUDA 13.0 driver compiles.
const PTX_ISA: (u32, u32) = (9, 0);

struct Function {
    kernel: &'static KernelInfo,
    module: u64,
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
    max_dynamic_smem: u32,
}

#[derive(Default)]
struct Registry {
    /// Module → its kernels by name → function id.
    modules: HashMap<u64, HashMap<String, u64>>,
    functions: HashMap<u64, Function>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    let mut r: MutexGuard<'_, Option<Registry>> =
        REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    f(r.get_or_insert_with(Registry::default))
}

fn fault(code: CUresult, detail: impl Into<String>) -> Fault {
    Fault::new(code, detail)
}

/// The kernel names of a PTX module, after the checks the driver's JIT makes.
fn ptx_kernels(text: &str) -> Result<Vec<String>, Fault> {
    let header = ptx::header(text).map_err(|e| fault(CUresult::CUDA_ERROR_INVALID_PTX, e))?;
    if header.version > PTX_ISA {
        return Err(fault(
            CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
            format!(
                "PTX ISA {}.{} is newer than this driver's {}.{}",
                header.version.0, header.version.1, PTX_ISA.0, PTX_ISA.1
            ),
        ));
    }
    let sm = (device::COMPUTE_CAPABILITY.0 * 10 + device::COMPUTE_CAPABILITY.1) as u32;
    if header.target_sm > sm {
        return Err(fault(
            CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU,
            format!("PTX for sm_{} cannot run on sm_{sm}", header.target_sm),
        ));
    }
    let entries = ptx::entries(text).map_err(|e| fault(CUresult::CUDA_ERROR_INVALID_PTX, e))?;
    entries
        .into_iter()
        .map(|e| {
            let k = kernel_table::find(&e.name).ok_or_else(|| {
                fault(CUresult::CUDA_ERROR_INVALID_IMAGE, format!("kernel `{}` has no host build", e.name))
            })?;
            if e.param_bytes() != k.param_bytes || e.params.len() != 1 {
                return Err(fault(
                    CUresult::CUDA_ERROR_INVALID_IMAGE,
                    format!(
                        "kernel `{}` declares {} parameter(s) of {} bytes; its host build takes one struct of {}",
                        e.name,
                        e.params.len(),
                        e.param_bytes(),
                        k.param_bytes
                    ),
                ));
            }
            Ok(e.name)
        })
        .collect()
}

fn cubin_kernels(elf: &[u8]) -> Result<Vec<String>, Fault> {
    if std::env::var("SOFTGPU_CUBIN").is_ok_and(|v| v == "reject") {
        return Err(fault(
            CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU,
            "this device refuses cubins (SOFTGPU_CUBIN=reject), as a driver that cannot load them would",
        ));
    }
    let c = cubin::parse(elf).map_err(|e| fault(CUresult::CUDA_ERROR_INVALID_IMAGE, e))?;
    let sm = (device::COMPUTE_CAPABILITY.0 * 10 + device::COMPUTE_CAPABILITY.1) as u32;
    if c.sm != sm {
        return Err(fault(
            CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU,
            format!("the cubin is for sm_{}, the device is sm_{sm}", c.sm),
        ));
    }
    for k in &c.kernels {
        kernel_table::find(k).ok_or_else(|| {
            fault(
                CUresult::CUDA_ERROR_INVALID_IMAGE,
                format!("kernel `{k}` has no host build"),
            )
        })?;
    }
    Ok(c.kernels)
}

/// `cuModuleLoadData`: `image` is PTX text (NUL-terminated) or a cubin.
///
/// # Safety
/// `image` points at a complete image, as the driver requires.
pub unsafe fn load(image: *const c_void) -> Result<u64, Fault> {
    if image.is_null() {
        return Err(fault(CUresult::CUDA_ERROR_INVALID_VALUE, "null image"));
    }
    // SAFETY: every image is at least 4 bytes (an ELF magic or PTX text).
    let head = unsafe { std::slice::from_raw_parts(image.cast::<u8>(), 4) };
    let names = if cubin::is_elf(head) {
        // SAFETY: the caller passes a whole image; its headers give its length.
        let len = unsafe { cubin::image_len(image.cast()) }
            .ok_or_else(|| fault(CUresult::CUDA_ERROR_INVALID_IMAGE, "malformed ELF headers"))?;
        // SAFETY: as above.
        cubin_kernels(unsafe { std::slice::from_raw_parts(image.cast(), len) })?
    } else {
        // SAFETY: PTX is passed as a NUL-terminated string.
        let text = unsafe { CStr::from_ptr(image.cast()) }
            .to_str()
            .map_err(|_| fault(CUresult::CUDA_ERROR_INVALID_PTX, "PTX is not UTF-8"))?;
        ptx_kernels(text)?
    };
    let module = next_id();
    with(|r| {
        let mut functions = HashMap::new();
        for name in names {
            let id = next_id();
            let kernel = kernel_table::find(&name).expect("checked at load");
            r.functions.insert(
                id,
                Function {
                    kernel,
                    module,
                    max_dynamic_smem: SMEM_DEFAULT,
                },
            );
            functions.insert(name, id);
        }
        r.modules.insert(module, functions);
    });
    Ok(module)
}

pub fn unload(module: u64) -> Result<(), Fault> {
    with(|r| {
        r.modules
            .remove(&module)
            .ok_or_else(|| fault(CUresult::CUDA_ERROR_INVALID_HANDLE, "not a loaded module"))?;
        r.functions.retain(|_, f| f.module != module);
        Ok(())
    })
}

pub fn function(module: u64, name: &str) -> Result<u64, Fault> {
    with(|r| {
        let m = r
            .modules
            .get(&module)
            .ok_or_else(|| fault(CUresult::CUDA_ERROR_INVALID_HANDLE, "not a loaded module"))?;
        m.get(name).copied().ok_or_else(|| {
            fault(
                CUresult::CUDA_ERROR_NOT_FOUND,
                format!("the module has no kernel `{name}`"),
            )
        })
    })
}

fn invalid_function() -> Fault {
    fault(CUresult::CUDA_ERROR_INVALID_HANDLE, "not a live function")
}

/// `cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)`.
pub fn set_max_dynamic_smem(f: u64, bytes: i32) -> Result<(), Fault> {
    with(|r| {
        let func = r.functions.get_mut(&f).ok_or_else(invalid_function)?;
        let limit = SMEM_OPTIN - func.kernel.static_smem;
        match u32::try_from(bytes) {
            Ok(b) if b <= limit => {
                func.max_dynamic_smem = b;
                Ok(())
            }
            _ => Err(fault(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!(
                    "`{}`: {bytes} bytes of dynamic shared memory exceed the opt-in limit ({limit} besides its {} static)",
                    func.kernel.name, func.kernel.static_smem
                ),
            )),
        }
    })
}

/// `cuFuncGetAttribute` for what this device knows of a kernel.
pub fn attribute(f: u64, attr: cudarc::driver::sys::CUfunction_attribute) -> Result<i32, Fault> {
    use cudarc::driver::sys::CUfunction_attribute as A;
    with(|r| {
        let func = r.functions.get(&f).ok_or_else(invalid_function)?;
        let k = func.kernel;
        Ok(match attr {
            A::CU_FUNC_ATTRIBUTE_NUM_REGS => k.registers as i32,
            A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES => k.static_smem as i32,
            A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES => func.max_dynamic_smem as i32,
            A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK => k.max_threads.unwrap_or(1024) as i32,
            A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES | A::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES => 0,
            A::CU_FUNC_ATTRIBUTE_PTX_VERSION | A::CU_FUNC_ATTRIBUTE_BINARY_VERSION => 90,
            other => {
                return Err(fault(
                    CUresult::CUDA_ERROR_NOT_SUPPORTED,
                    format!("function attribute {other:?} is not modelled"),
                ))
            }
        })
    })
}

/// One launch's request, as `cuLaunchKernel` receives it.
pub struct Launch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
}

/// Checks a launch against the device's limits: the error code the driver returns, and why.
fn check_limits(k: &KernelInfo, max_dynamic_smem: u32, l: &Launch) -> Result<(), Fault> {
    let invalid = |why: String| {
        Err(fault(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("`{}`: {why}", k.name),
        ))
    };
    let [gx, gy, gz] = l.grid;
    let [bx, by, bz] = l.block;
    if gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 {
        return invalid(format!(
            "zero dimension in grid {:?} or block {:?}",
            l.grid, l.block
        ));
    }
    if gx > i32::MAX as u32 || gy > 65_535 || gz > 65_535 {
        return invalid(format!("grid {:?} exceeds (2³¹−1, 65535, 65535)", l.grid));
    }
    let threads = u64::from(bx) * u64::from(by) * u64::from(bz);
    if bx > 1024 || by > 1024 || bz > 64 || threads > 1024 {
        return invalid(format!(
            "block {:?} exceeds (1024, 1024, 64) or 1024 threads",
            l.block
        ));
    }
    if let Some(max) = k.max_threads.filter(|&m| threads > u64::from(m)) {
        return invalid(format!(
            "{threads} threads exceed the kernel's .maxntid of {max}"
        ));
    }
    if l.shared_mem_bytes > max_dynamic_smem {
        return invalid(format!(
            "{} bytes of dynamic shared memory exceed the function's limit of {max_dynamic_smem} (above {SMEM_DEFAULT} \
             needs cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) first)",
            l.shared_mem_bytes
        ));
    }
    if l.shared_mem_bytes + k.static_smem > SMEM_OPTIN {
        return invalid(format!(
            "{} dynamic + {} static bytes of shared memory exceed sm_90's {SMEM_OPTIN}",
            l.shared_mem_bytes, k.static_smem
        ));
    }
    // Registers are allocated per warp in units of 256.
    let per_warp = (k.registers * 32).div_ceil(256) * 256;
    let warps = (threads as u32).div_ceil(32);
    if per_warp * warps > REGISTERS_PER_BLOCK {
        return Err(fault(
            CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
            format!(
                "`{}`: {} registers × {threads} threads need {} of the block's {REGISTERS_PER_BLOCK} registers",
                k.name,
                k.registers,
                per_warp * warps
            ),
        ));
    }
    Ok(())
}

/// `cuLaunchKernel` with the project's one-struct ABI: checks, copies the parameter bytes, queues the host kernel.
///
/// # Safety
/// `params` is the driver's `kernelParams`: for our kernels, one pointer to the parameter struct.
pub unsafe fn launch(
    f: u64,
    l: Launch,
    stream: cudarc::driver::sys::CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> Result<(), Fault> {
    let (k, max_dynamic_smem) = with(|r| {
        r.functions
            .get(&f)
            .map(|func| (func.kernel, func.max_dynamic_smem))
            .ok_or_else(invalid_function)
    })?;
    if !extra.is_null() {
        return Err(fault(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("`{}`: `extra` parameters are not the project's launch ABI (one struct in kernelParams)", k.name),
        ));
    }
    // SAFETY: kernelParams holds one pointer per parameter (one here), checked non-null before reading.
    let first = if params.is_null() {
        std::ptr::null_mut()
    } else {
        unsafe { *params }
    };
    if first.is_null() {
        return Err(fault(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("`{}`: no kernel parameters", k.name),
        ));
    }
    check_limits(k, max_dynamic_smem, &l)?;
    // The driver copies the parameters at the launch call; the struct may be gone when the kernel runs. u64
    // storage keeps the copy aligned for the host kernel's struct.
    let mut bytes = vec![0u64; k.param_bytes.div_ceil(8)];
    // SAFETY: the PTX declares `param_bytes` bytes of parameters; the caller's struct has that size.
    unsafe {
        std::ptr::copy_nonoverlapping(
            first.cast::<u8>(),
            bytes.as_mut_ptr().cast::<u8>(),
            k.param_bytes,
        )
    };
    let geometry = Arc::new(Geometry {
        grid: l.grid,
        block: l.block,
        shared_mem_bytes: l.shared_mem_bytes,
    });
    let work = Work::new(
        format!("kernel {} grid {:?} block {:?}", k.name, l.grid, l.block),
        move || {
            // SAFETY: the host build of the kernel with its geometry and parameter bytes; its memory accesses are
            // confined by guard pages and canaries (src/memory.rs).
            match unsafe { (k.entry)(&*geometry, bytes.as_ptr().cast()) } {
                ENTRY_OK => Ok(()),
                ENTRY_INVALID_GEOMETRY => Err(fault(
                    CUresult::CUDA_ERROR_INVALID_VALUE,
                    "the emulator refused the geometry",
                )),
                _ => Err(fault(
                    CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                    "the emulator could not start the block's threads",
                )),
            }
        },
    );
    let s = stream::get(stream)?;
    s.submit(work).map(|_| ())
}
