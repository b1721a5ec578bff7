//! The emulation engine: kernels/*.cu compiled for the host by g++ through kernels/emu/emu.cuh (see build.rs),
//! launched with the same plans (`crate::launch`) and the same packed params structs as the cuda engine, on buffers
//! in the same storage dtypes. It is how CI tests every kernel without a GPU.
//!
//! For now it offers one op as a function; it grows into an `Engine` whose tensor is a shaped [`Storage`].

use std::ffi::c_int;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::launch::norm::{self as norm_plan, LayerNormModulateBuffers, LayerNormModulateParams};
use crate::launch::{DevicePtr, Geometry, Plan};
use crate::tensor::HostTensor;

/// Element type of activations and weights as the kernels store them; arithmetic is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageDtype {
    F32,
    Bf16,
    F16,
}

/// A buffer in a storage dtype: what a device buffer holds on the GPU. Conversions from f32 round to nearest even,
/// as CUDA's `__float2bfloat16_rn` / `__float2half_rn` do.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl Storage {
    pub fn from_f32(dtype: StorageDtype, data: &[f32]) -> Self {
        match dtype {
            StorageDtype::F32 => Storage::F32(data.to_vec()),
            StorageDtype::Bf16 => Storage::Bf16(data.iter().map(|&v| bf16::from_f32(v)).collect()),
            StorageDtype::F16 => Storage::F16(data.iter().map(|&v| f16::from_f32(v)).collect()),
        }
    }

    pub fn zeros(dtype: StorageDtype, len: usize) -> Self {
        match dtype {
            StorageDtype::F32 => Storage::F32(vec![0.0; len]),
            StorageDtype::Bf16 => Storage::Bf16(vec![bf16::ZERO; len]),
            StorageDtype::F16 => Storage::F16(vec![f16::ZERO; len]),
        }
    }

    pub fn dtype(&self) -> StorageDtype {
        match self {
            Storage::F32(_) => StorageDtype::F32,
            Storage::Bf16(_) => StorageDtype::Bf16,
            Storage::F16(_) => StorageDtype::F16,
        }
    }

    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Storage::F32(v) => v.clone(),
            Storage::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Storage::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// Host address of the first element, as a kernel's params struct holds it (read-only use).
    fn ptr(&self) -> DevicePtr {
        match self {
            Storage::F32(v) => v.as_ptr() as DevicePtr,
            Storage::Bf16(v) => v.as_ptr() as DevicePtr,
            Storage::F16(v) => v.as_ptr() as DevicePtr,
        }
    }

    /// Host address of the first element, for a kernel output.
    fn ptr_mut(&mut self) -> DevicePtr {
        match self {
            Storage::F32(v) => v.as_mut_ptr() as DevicePtr,
            Storage::Bf16(v) => v.as_mut_ptr() as DevicePtr,
            Storage::F16(v) => v.as_mut_ptr() as DevicePtr,
        }
    }
}

/// The `extern "C"` entries of the `sana_emu` static library (one `SANA_EMU_ENTRY` per kernel in kernels/*.cu).
mod ffi {
    use super::{c_int, Geometry, LayerNormModulateParams};

    /// `sana_emu_<kernel>(geometry, params)`: runs the whole grid, returns a `sana_emu::Status`.
    pub type Entry<P> = unsafe extern "C" fn(*const Geometry, *const P) -> c_int;

    extern "C" {
        pub fn sana_emu_layer_norm_modulate_f32(
            g: *const Geometry,
            p: *const LayerNormModulateParams,
        ) -> c_int;
        pub fn sana_emu_layer_norm_modulate_bf16(
            g: *const Geometry,
            p: *const LayerNormModulateParams,
        ) -> c_int;
        pub fn sana_emu_layer_norm_modulate_f16(
            g: *const Geometry,
            p: *const LayerNormModulateParams,
        ) -> c_int;
    }
}

/// Runs `plan` through an emulated kernel.
///
/// # Safety
/// Every pointer in `plan.params` must address a live buffer at least as large as the kernel indexes for the
/// validated shapes the plan was made from, with outputs not aliasing inputs.
unsafe fn launch<P>(kernel: &'static str, entry: ffi::Entry<P>, plan: &Plan<P>) -> Result<()> {
    // SAFETY: guaranteed by the caller; the entry copies both structs before running the grid.
    let status = unsafe { entry(&plan.geometry, &plan.params) };
    let reason = match status {
        0 => return Ok(()),
        1 => format!("launch geometry {:?} exceeds CUDA's limits", plan.geometry),
        2 => "could not start the block's threads or allocate its shared memory".to_string(),
        s => format!("unknown emulator status {s}"),
    };
    Err(Error::KernelLaunch {
        engine: "emu",
        kernel,
        reason,
    })
}

/// `LayerNorm(x) · (1 + modulation[b, scale_row]) + modulation[b, shift_row]` through kernels/norm.cu, with `x` and
/// `modulation` first rounded to `dtype` and the result read back as f32. Shapes as
/// [`crate::cpu::norm::layer_norm_modulate`]: `x` [B, N, D], `modulation` [B, K, D].
pub fn layer_norm_modulate(
    x: &HostTensor,
    modulation: &HostTensor,
    shift_row: usize,
    scale_row: usize,
    eps: f32,
    dtype: StorageDtype,
) -> Result<HostTensor> {
    let xs = Storage::from_f32(dtype, x.data());
    let ms = Storage::from_f32(dtype, modulation.data());
    let mut ys = Storage::zeros(dtype, x.len());
    let buffers = LayerNormModulateBuffers {
        y: ys.ptr_mut(),
        x: xs.ptr(),
        modulation: ms.ptr(),
    };
    let plan = norm_plan::layer_norm_modulate(
        x.shape(),
        modulation.shape(),
        shift_row,
        scale_row,
        eps,
        buffers,
    )?;
    let entry: ffi::Entry<LayerNormModulateParams> = match dtype {
        StorageDtype::F32 => ffi::sana_emu_layer_norm_modulate_f32,
        StorageDtype::Bf16 => ffi::sana_emu_layer_norm_modulate_bf16,
        StorageDtype::F16 => ffi::sana_emu_layer_norm_modulate_f16,
    };
    // SAFETY: the plan checked x = [B, N, D] and modulation = [B, K, D] with both rows < K; the buffers hold exactly
    // those element counts (HostTensor guarantees data.len() == product(shape)), y is a fresh buffer of x's size,
    // and all three outlive the call.
    unsafe { launch("layer_norm_modulate", entry, &plan) }?;
    HostTensor::new(x.shape().to_vec(), ys.to_f32())
}
