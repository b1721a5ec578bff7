//! The CUDA engine: the kernel engine ([`KernelEngine`], whose op bodies the emulation engine shares) on the GPU —
//! kernels/*.cu launched through cudarc, GEMMs through cuBLASLt, bf16 or f16 storage with f32 accumulation.
//!
//! One context, one non-blocking stream, event tracking off (a single stream needs none, and graph capture forbids it):
//! launches queue without host synchronisation; `download` is the only sync point. Memory comes from the device's
//! stream-ordered pool (pool.rs), which the pipeline sizes per stage through [`crate::engine::Engine::begin_stage`]
//! (src/memory/working_set.rs); a failed allocation is an [`Error::OutOfDeviceMemory`] naming the stage.

mod ceilings;
#[doc(hidden)]
pub mod embedded;
mod gemm;
mod kernels;
mod pool;
#[doc(hidden)]
pub mod probe;
mod step_graph;
mod transfer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DevicePtr as _, DriverError};

pub use crate::engine::kernel::LinearShape;
pub use crate::vocabulary::StepGraphReport;
pub use ceilings::Ceilings;
pub use kernels::ImageKind;
pub use step_graph::CudaStepGraph;

use self::kernels::Kernels;
use self::pool::{GraphMemory, MemoryPool};
use self::probe::DeviceInfo;
use self::transfer::Staging;
use crate::engine::kernel::{
    DeviceState, DeviceTensor, KernelDevice, KernelEngine, LinearOperands,
};
use crate::engine::{Activation, StorageDtype};
use crate::error::{Error, Result};
use crate::launch::{DevicePtr, Kernel, Plan};
use crate::memory::working_set;
use crate::weights::TensorView;

/// The GPU engine: one device, one stream, tensors ([`CudaTensor`]) in bf16 or f16 storage.
pub type CudaEngine = KernelEngine<CudaDevice>;

/// A tensor of the [`CudaEngine`]: a device buffer in the storage dtype.
pub type CudaTensor = DeviceTensor<CudaSlice<u8>>;

/// Sampler state of the [`CudaEngine`]: an f32 device buffer.
pub type CudaState = DeviceState<CudaSlice<u8>>;

/// One GPU as a [`KernelDevice`]: its context, one non-blocking stream, the loaded kernels, cuBLASLt, the memory
/// pool and the step-graph machinery.
pub struct CudaDevice {
    dtype: StorageDtype,
    info: DeviceInfo,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    gemm: gemm::Gemm,
    pool: MemoryPool,
    graph_memory: GraphMemory,
    /// Peak device memory of the step graphs replayed since the last `begin_stage` (pool memory in use plus the
    /// graph's own), which the pool's high-water mark does not see.
    graph_peak: Mutex<u64>,
    step_graph: Mutex<Option<StepGraphReport>>,
    /// Capture and replay denoising steps (on by default; off queues every step op by op).
    step_graphs: AtomicBool,
    staging: Staging,
    /// The pipeline stage running now, for out-of-memory messages.
    stage: Mutex<&'static str>,
    /// Test hook: the next kernel launch inside a step capture first synchronises the stream, an illegal call there.
    sync_during_capture: AtomicBool,
}

impl CudaEngine {
    /// Opens GPU `ordinal` with `dtype` storage (bf16 or f16). Fails with [`Error::EngineUnavailable`] when there is
    /// no driver, device or cuBLASLt, and [`Error::KernelsNotBuilt`] when the build had no nvcc.
    pub fn new(ordinal: usize, dtype: StorageDtype) -> Result<Self> {
        CudaDevice::open(ordinal, dtype).map(KernelEngine::on)
    }

    /// The device opened: ordinal, name, compute capability, total memory.
    pub fn info(&self) -> &DeviceInfo {
        &self.device().info
    }

    /// Which image of the kernels the driver runs: the sm_90 cubin, or the PTX it JIT-compiled (on other devices,
    /// or when it refused the cubin; [`Self::cubin_refused`] says why).
    pub fn kernel_image(&self) -> ImageKind {
        self.device().kernels.image_kind()
    }

    /// The driver's reason for refusing the sm_90 cubins on an sm_90 device, when it did.
    pub fn cubin_refused(&self) -> Option<&str> {
        self.device().kernels.cubin_refused()
    }

    /// GEMM problems (shape, dtype, epilogue) whose cuBLASLt descriptors and algorithm are cached.
    pub fn gemm_plans(&self) -> usize {
        self.device().gemm.plans()
    }

    /// Test hook, not for use otherwise: when on, the next kernel launch made while a denoising step is being
    /// captured first calls `cuStreamSynchronize`, which is illegal during capture (the driver returns
    /// CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture) — a failure inside the step, to show that
    /// the loop falls back to eager steps. It fires once.
    #[doc(hidden)]
    pub fn inject_sync_during_capture(&self, on: bool) {
        self.device()
            .sync_during_capture
            .store(on, Ordering::Relaxed);
    }

    /// Waits for every queued launch and copy.
    pub fn synchronize(&self) -> Result<()> {
        self.device().synchronize()
    }

    /// Whether denoising loops capture their step as a CUDA graph (the default) or queue every step op by op — the
    /// same kernels, so the results are identical; for comparison and debugging.
    pub fn use_step_graphs(&self, on: bool) {
        self.device().step_graphs.store(on, Ordering::Relaxed);
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal` with `dtype` storage (bf16 or f16). Fails with [`Error::EngineUnavailable`] when there is
    /// no driver, device or cuBLASLt, and [`Error::KernelsNotBuilt`] when the build had no nvcc.
    fn open(ordinal: usize, dtype: StorageDtype) -> Result<Self> {
        if dtype == StorageDtype::F32 {
            return Err(Error::EngineUnavailable {
                engine: "cuda",
                reason: "the cuda engine stores bf16 or f16; f32 is the cpu engine's".into(),
            });
        }
        let (ctx, info) = probe::open(ordinal)?;
        // SAFETY: no buffer exists yet; every later one lives on the single stream below.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(probe::driver("creating the stream"))?;
        let kernels = Kernels::load(&ctx, info.compute_capability)?;
        let gemm = gemm::Gemm::new(&stream, info.compute_capability)?;
        let pool = MemoryPool::default_of(&ctx)?;
        pool.keep_freed_memory()?;
        let staging = Staging::new(&ctx)?;
        let graph_memory = GraphMemory::of(&ctx);
        Ok(Self {
            dtype,
            info,
            ctx,
            stream,
            kernels,
            gemm,
            pool,
            graph_memory,
            graph_peak: Mutex::new(0),
            step_graph: Mutex::new(None),
            step_graphs: AtomicBool::new(true),
            staging,
            stage: Mutex::new("loading"),
            sync_during_capture: AtomicBool::new(false),
        })
    }

    /// The test hook [`CudaEngine::inject_sync_during_capture`], at a launch.
    fn injected_sync(&self) -> Result<()> {
        if !self.sync_during_capture.load(Ordering::Relaxed) {
            return Ok(());
        }
        let status = self
            .stream
            .capture_status()
            .map_err(probe::driver("querying the capture status"))?;
        if status == sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
            return Ok(());
        }
        self.sync_during_capture.store(false, Ordering::Relaxed);
        self.synchronize()
    }

    fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(probe::driver("synchronising the stream"))
    }

    fn current_stage(&self) -> &'static str {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alloc_error(&self, e: DriverError, bytes: usize) -> Error {
        if e.0 != sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            return probe::driver(format!("allocating {bytes} bytes"))(e);
        }
        let (free, total) = self
            .ctx
            .mem_get_info()
            .unwrap_or((0, self.info.total_bytes));
        match working_set::check_fits(self.current_stage(), bytes, free, total) {
            Err(oom) => oom,
            // The driver refused although the figures say it fits: fragmentation; report the request itself.
            Ok(()) => working_set::check_fits(self.current_stage(), bytes, 0, total)
                .err()
                .unwrap_or_else(|| probe::driver("allocating")(e)),
        }
    }
}

impl KernelDevice for CudaDevice {
    type Buffer = CudaSlice<u8>;
    type StepGraph = CudaStepGraph;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn dtype(&self) -> StorageDtype {
        self.dtype
    }

    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        // SAFETY: the contents are written by the op that receives the buffer before anything reads them.
        unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| self.alloc_error(e, bytes))
    }

    fn address(&self, buf: &CudaSlice<u8>) -> DevicePtr {
        // Event tracking is off (one stream), so the guard cudarc returns records nothing and can be dropped.
        let (p, _guard) = buf.device_ptr(&self.stream);
        p
    }

    fn write(&self, dst: &mut CudaSlice<u8>, bytes: &[u8]) -> Result<()> {
        let mut head = dst.slice_mut(0..bytes.len());
        self.stream
            .memcpy_htod(bytes, &mut head)
            .map_err(probe::driver("copying to the device"))
    }

    fn read(&self, src: &CudaSlice<u8>, len: usize) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; len];
        if len > 0 {
            self.stream
                .memcpy_dtoh(&src.slice(0..len), &mut bytes)
                .map_err(probe::driver("copying to the host"))?;
        }
        self.synchronize()?;
        Ok(bytes)
    }

    fn copy(&self, dst: &mut CudaSlice<u8>, src: &CudaSlice<u8>) -> Result<()> {
        self.stream
            .memcpy_dtod(src, dst)
            .map_err(probe::driver("copying a tensor on the device"))
    }

    fn load(&self, view: &TensorView<'_>, dst: &mut CudaSlice<u8>) -> Result<()> {
        self.staging.load(&self.stream, view, self.dtype, dst)
    }

    unsafe fn launch<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: Kernel<P>,
        dtype: StorageDtype,
        plan: &Plan<P>,
    ) -> Result<()> {
        self.injected_sync()?;
        // SAFETY: forwarded from the caller.
        unsafe { self.kernels.launch(&self.stream, kernel.id, dtype, plan) }
    }

    fn linear(
        &self,
        shape: LinearShape,
        LinearOperands { x, w, b }: LinearOperands<'_, CudaSlice<u8>>,
        act: Activation,
        y: &mut CudaSlice<u8>,
    ) -> Result<Activation> {
        let (fused, rest) = gemm::epilogue(act);
        self.gemm
            .linear(self.dtype, shape, gemm::Operands { x, w, b }, fused, y)?;
        Ok(rest)
    }

    fn begin_stage(&self, stage: &'static str, activation_bytes: usize) -> Result<()> {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = stage;
        let (free, total) = self
            .ctx
            .mem_get_info()
            .map_err(probe::driver("reading free memory"))?;
        // Memory the pool holds but nothing uses (freed by an earlier stage) is available too.
        let idle = self
            .pool
            .reserved_bytes()?
            .saturating_sub(self.pool.used_bytes()?);
        working_set::check_fits(stage, activation_bytes, free + idle as usize, total)?;
        *self.graph_peak.lock().unwrap_or_else(|p| p.into_inner()) = 0;
        self.graph_memory.reset_peak()?;
        self.pool.reset_peak()
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        let graphs = *self.graph_peak.lock().unwrap_or_else(|p| p.into_inner());
        self.pool
            .peak_used_bytes()
            .ok()
            .map(|pool| pool.max(graphs))
    }

    fn step_graph_report(&self) -> Option<StepGraphReport> {
        self.step_graph
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn repeat_steps(
        &self,
        n: usize,
        step: &mut dyn FnMut() -> Result<()>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Option<CudaStepGraph>> {
        self.replay_steps(n, step, progress)
    }

    fn replay_step_graph(
        &self,
        graph: &CudaStepGraph,
        n: usize,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<()> {
        self.replay_kept_steps(graph, n, progress)
    }
}
