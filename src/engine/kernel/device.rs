//! What a [`super::KernelEngine`] needs of the machine it runs kernels on: memory, copies, a kernel launch by its
//! typed handle, a GEMM, and the hooks of the engine that only a device can answer (memory budget, step graphs).
//! Implemented by the GPU (`crate::engine::cuda::CudaDevice`) and by the host emulation of the same kernels
//! (`crate::engine::emu::EmuDevice`).

use crate::engine::{Activation, StorageDtype};
use crate::error::Result;
use crate::launch::{DevicePtr, Kernel, Plan};
use crate::vocabulary::StepGraphReport;
use crate::weights::TensorView;

/// Problem size of one linear: `m` rows of `x`, `k` inputs, `n` outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearShape {
    /// Rows of `x` (all axes but the last, flattened).
    pub m: usize,
    /// Input features: the last axis of `x`, and of the `[n, k]` weight.
    pub k: usize,
    /// Output features: the last axis of the result.
    pub n: usize,
}

/// The buffers of one linear `y = act(x · wᵀ + b)`: `x` `[m, k]`, `w` `[n, k]`, optional bias `[n]`, in the storage
/// dtype.
pub struct LinearOperands<'a, B> {
    /// The input rows.
    pub x: &'a B,
    /// The weight, PyTorch's `[out, in]`.
    pub w: &'a B,
    /// The bias, if any.
    pub b: Option<&'a B>,
}

/// A device that runs kernels/*.cu on its own buffers.
pub trait KernelDevice: Send + Sync {
    /// A block of device memory, freed when dropped.
    type Buffer: Send + Sync;
    /// A captured denoising step (see [`crate::engine::Engine::StepGraph`]).
    type StepGraph: Send + Sync;

    /// The engine's name in messages and on the command line.
    fn name(&self) -> &'static str;

    /// The storage dtype of activations and weights.
    fn dtype(&self) -> StorageDtype;

    /// A buffer of `bytes` whose contents are not to be read before a kernel or copy writes them (the emulation
    /// fills it with NaN so an element a kernel fails to write shows in every comparison).
    fn alloc(&self, bytes: usize) -> Result<Self::Buffer>;

    /// The buffer's address as a kernel's params struct holds it.
    fn address(&self, buf: &Self::Buffer) -> DevicePtr;

    /// Copies `bytes` into the start of `dst`, in stream order.
    fn write(&self, dst: &mut Self::Buffer, bytes: &[u8]) -> Result<()>;

    /// The first `len` bytes of `src`, once every queued write to it is done.
    fn read(&self, src: &Self::Buffer, len: usize) -> Result<Vec<u8>>;

    /// Copies all of `src` into `dst` (same size), in stream order.
    fn copy(&self, dst: &mut Self::Buffer, src: &Self::Buffer) -> Result<()>;

    /// Fills `dst` with a checkpoint tensor converted to the storage dtype.
    fn load(&self, view: &TensorView<'_>, dst: &mut Self::Buffer) -> Result<()>;

    /// The buffer's bytes when the host can read them without a copy (the emulation), for checks a GPU engine
    /// cannot make without a transfer.
    fn host_bytes<'a>(&self, _buf: &'a Self::Buffer) -> Option<&'a [u8]> {
        None
    }

    /// Runs `kernel` on buffers of `dtype` with `plan`'s geometry and params; an empty grid runs nothing.
    ///
    /// # Safety
    /// Every pointer in `plan.params` must address a live buffer of this device at least as large as the kernel
    /// indexes for the shapes the plan was made from, outputs not aliasing inputs.
    unsafe fn launch<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: Kernel<P>,
        dtype: StorageDtype,
        plan: &Plan<P>,
    ) -> Result<()>;

    /// Writes `act(x · wᵀ + b)` of `shape` into `y`, applying as much of `act` as the GEMM fuses; returns what is
    /// left for an activation kernel.
    fn linear(
        &self,
        shape: LinearShape,
        operands: LinearOperands<'_, Self::Buffer>,
        act: Activation,
        y: &mut Self::Buffer,
    ) -> Result<Activation>;

    /// As [`crate::engine::Engine::begin_stage`].
    fn begin_stage(&self, _stage: &'static str, _activation_bytes: usize) -> Result<()> {
        Ok(())
    }

    /// As [`crate::engine::Engine::check_fits`].
    fn check_fits(&self, _stage: &'static str, _activation_bytes: usize) -> Result<()> {
        Ok(())
    }

    /// As [`crate::engine::Engine::peak_device_bytes`].
    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }

    /// As [`crate::engine::Engine::step_graph_report`].
    fn step_graph_report(&self) -> Option<StepGraphReport> {
        None
    }

    /// As [`crate::engine::Engine::repeat_steps`]: by default every step eagerly.
    fn repeat_steps(
        &self,
        n: usize,
        step: &mut dyn FnMut() -> Result<()>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Option<Self::StepGraph>> {
        crate::engine::eager_steps(n, step, progress)?;
        Ok(None)
    }

    /// As [`crate::engine::Engine::replay_step_graph`]; a device that never captures keeps this default.
    fn replay_step_graph(
        &self,
        _graph: &Self::StepGraph,
        _n: usize,
        _progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<()> {
        Err(crate::engine::no_step_graphs(self.name()))
    }
}
