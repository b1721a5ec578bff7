//! `EmuDevice`: host memory as the device, and kernels/*.cu compiled for the host (build.rs, through
//! kernels/emu/emu.cuh) as its kernels, started with the same plans and params structs the GPU receives.

use std::cell::UnsafeCell;
use std::convert::Infallible;

use crate::cpu;
use crate::engine::kernel::{KernelDevice, LinearOperands, LinearShape};
use crate::engine::storage::{from_bytes, to_bytes};
use crate::engine::{Activation, StorageDtype};
use crate::error::{Error, Result};
use crate::launch::kernel::dtype_index;
use crate::launch::{DevicePtr, Kernel, Plan};
use crate::tensor::HostTensor;
use crate::weights::TensorView;

/// Sixteen bytes on a 16-byte boundary: buffers built from these satisfy the kernels' 128-bit loads and stores, as
/// the GPU pool's 256-byte alignment does.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Chunk([u8; 16]);

/// A block of host memory that kernels write through its address (hence the cells).
pub struct HostBuffer {
    chunks: Box<[UnsafeCell<Chunk>]>,
    len: usize,
}

// SAFETY: the engine writes a buffer only through a launch whose outputs it allocated for that launch, or through
// `&mut` (state updates, copies); a launch runs to completion before the call returns, so no two threads touch the
// same bytes at once.
unsafe impl Sync for HostBuffer {}
// SAFETY: plain host memory, owned.
unsafe impl Send for HostBuffer {}

impl HostBuffer {
    /// `len` bytes of NaN in every storage dtype (all ones: an f32, bf16 or f16 NaN).
    fn poisoned(len: usize) -> Self {
        let chunks = (0..len.div_ceil(16).max(1))
            .map(|_| UnsafeCell::new(Chunk([0xFF; 16])))
            .collect();
        Self { chunks, len }
    }

    fn as_mut_ptr(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.chunks.as_ptr()).cast()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes lie inside the chunks; nothing writes them while this borrow lives (see `Sync`).
        unsafe { std::slice::from_raw_parts(self.as_mut_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, with the buffer borrowed exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.len) }
    }
}

/// The host as a [`KernelDevice`], storing tensors in `dtype`.
#[derive(Clone, Copy, Debug)]
pub struct EmuDevice {
    dtype: StorageDtype,
}

impl EmuDevice {
    /// A device storing activations and weights in `dtype`.
    pub fn new(dtype: StorageDtype) -> Self {
        Self { dtype }
    }
}

impl KernelDevice for EmuDevice {
    type Buffer = HostBuffer;
    type StepGraph = Infallible;

    fn name(&self) -> &'static str {
        "emu"
    }

    fn dtype(&self) -> StorageDtype {
        self.dtype
    }

    fn alloc(&self, bytes: usize) -> Result<HostBuffer> {
        Ok(HostBuffer::poisoned(bytes))
    }

    fn address(&self, buf: &HostBuffer) -> DevicePtr {
        buf.as_mut_ptr() as DevicePtr
    }

    fn write(&self, dst: &mut HostBuffer, bytes: &[u8]) -> Result<()> {
        let room = dst.len;
        let head = dst.bytes_mut().get_mut(..bytes.len()).ok_or_else(|| {
            Error::shape(
                "write",
                format!("{} bytes into a {room}-byte buffer", bytes.len()),
            )
        })?;
        head.copy_from_slice(bytes);
        Ok(())
    }

    fn read(&self, src: &HostBuffer, len: usize) -> Result<Vec<u8>> {
        src.bytes().get(..len).map(<[u8]>::to_vec).ok_or_else(|| {
            Error::shape("read", format!("{len} bytes of a {}-byte buffer", src.len))
        })
    }

    fn copy(&self, dst: &mut HostBuffer, src: &HostBuffer) -> Result<()> {
        self.write(dst, src.bytes())
    }

    fn load(&self, view: &TensorView<'_>, dst: &mut HostBuffer) -> Result<()> {
        self.write(dst, &to_bytes(&view.to_f32()?, self.dtype))
    }

    fn host_bytes<'a>(&self, buf: &'a HostBuffer) -> Option<&'a [u8]> {
        Some(buf.bytes())
    }

    unsafe fn launch<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: Kernel<P>,
        dtype: StorageDtype,
        plan: &Plan<P>,
    ) -> Result<()> {
        if plan.geometry.is_empty() {
            return Ok(());
        }
        let entry = kernel.emu[dtype_index(dtype)];
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
            kernel: kernel.id.op,
            reason,
        })
    }

    fn linear(
        &self,
        LinearShape { m, k, n }: LinearShape,
        LinearOperands { x, w, b }: LinearOperands<'_, HostBuffer>,
        act: Activation,
        y: &mut HostBuffer,
    ) -> Result<Activation> {
        // cuBLASLt's job on the GPU: the CPU reference's f32 GEMM on the stored values, the activation applied
        // before the one rounding.
        let size = self.dtype.size();
        let host = |buf: &HostBuffer, shape: Vec<usize>| {
            let len = shape.iter().product::<usize>() * size;
            HostTensor::new(shape, from_bytes(&buf.bytes()[..len], self.dtype))
        };
        let x = host(x, vec![m, k])?;
        let w = host(w, vec![n, k])?;
        let b = b.map(|b| host(b, vec![n])).transpose()?;
        let out = cpu::linear::linear(&x, &w, b.as_ref(), act)?;
        self.write(y, &to_bytes(out.data(), self.dtype))?;
        Ok(Activation::Identity)
    }

    fn check_fits(&self, stage: &'static str, activation_bytes: usize) -> Result<()> {
        crate::memory::check_host_fits(self.name(), stage, activation_bytes as u64)
    }
}
