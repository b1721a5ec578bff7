//! The emulation engine: kernels/*.cu compiled for the host by g++ through kernels/emu/emu.cuh (see build.rs),
//! launched with the same plans (`crate::launch`) and the same packed params structs as the cuda engine, on buffers
//! in the same storage dtypes. It is how CI tests every kernel without a GPU.
//!
//! It offers its ops as functions on host tensors, one module per kernel family (`emu/<family>.rs`
//! ↔ `kernels/<family>.cu` ↔ `src/launch/<family>.rs`), and as an [`EmuEngine`] that model code runs on. Each function rounds its inputs to the storage dtype, launches into output buffers poisoned with NaN
//! (so an element the kernel fails to write shows up in every comparison), and reads the result back as f32.

use std::ffi::c_int;

pub(crate) use crate::engine::{Storage, StorageDtype};
use crate::error::{Error, Result};
use crate::launch::{DevicePtr, Geometry, Plan};

/// Declares the three `sana_emu_<kernel>_{f32,bf16,f16}` entries of one kernel (one `SANA_EMU_ENTRY` each in
/// kernels/*.cu) and a function choosing among them by [`StorageDtype`].
macro_rules! emu_kernel {
    (fn $select:ident($params:ty) = [$f32:ident, $bf16:ident, $f16:ident]) => {
        extern "C" {
            fn $f32(g: *const $crate::launch::Geometry, p: *const $params) -> std::ffi::c_int;
            fn $bf16(g: *const $crate::launch::Geometry, p: *const $params) -> std::ffi::c_int;
            fn $f16(g: *const $crate::launch::Geometry, p: *const $params) -> std::ffi::c_int;
        }

        fn $select(dtype: $crate::engine::StorageDtype) -> $crate::engine::emu::Entry<$params> {
            match dtype {
                $crate::engine::StorageDtype::F32 => $f32,
                $crate::engine::StorageDtype::Bf16 => $bf16,
                $crate::engine::StorageDtype::F16 => $f16,
            }
        }
    };
}

mod attention;
mod causal_attention;
mod conv;
mod conv3x3;
mod elementwise;
mod embed;
mod engine;
mod layout;
mod linear_attn;
mod norm;
mod sampler;

pub use attention::attention;
pub use causal_attention::causal_attention;
pub use conv::{depthwise_conv, dwconv3x3_glu, grouped_linear};
pub use conv3x3::conv3x3;
pub use elementwise::{
    activation, add, gated_residual, gated_residual_layer_norm_modulate, modulation, mul,
};
pub use embed::{embedding, rotary};
pub use engine::EmuEngine;
pub use layout::{
    channel_group_mean, channel_space, concat_channels, nchw_to_tokens, split_qkv_groups,
    tokens_to_nchw,
};
pub use linear_attn::linear_attention;
pub use norm::{layer_norm_modulate, rms_norm};
pub use sampler::{advance_schedule, flow_step, model_input, step_sinusoid};

impl Storage {
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

/// `sana_emu_<kernel>(geometry, params)`: runs the whole grid, returns a `sana_emu::Status`.
type Entry<P> = unsafe extern "C" fn(*const Geometry, *const P) -> c_int;

/// Runs `plan` through an emulated kernel.
///
/// # Safety
/// Every pointer in `plan.params` must address a live buffer at least as large as the kernel indexes for the
/// validated shapes the plan was made from, with outputs not aliasing inputs.
unsafe fn launch<P>(kernel: &'static str, entry: Entry<P>, plan: &Plan<P>) -> Result<()> {
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
