//! The CUDA engine: kernels/*.cu launched through cudarc with the same launch plans the emulation engine runs
//! (`crate::launch`), GEMMs through cuBLASLt, bf16 or f16 storage with f32 accumulation.
//!
//! One context, one non-blocking stream, event tracking off (a single stream needs none, and graph capture forbids it):
//! launches queue without host synchronisation; `download` is the only sync point. Memory comes from the device's
//! stream-ordered pool (pool.rs), which the pipeline sizes per stage through [`Engine::begin_stage`]
//! (src/memory/working_set.rs); a failed allocation is an [`Error::OutOfDeviceMemory`] naming the stage.
//!
//! Every op runs a kernel except linear attention at head widths other than 32 (no published model has one; the tiny
//! test VAE does), which runs the CPU reference on downloaded inputs and uploads the rounded result
//! (`host_fallback.rs`).

mod ceilings;
#[doc(hidden)]
pub mod embedded;
mod gemm;
mod host_fallback;
mod kernels;
mod pool;
#[doc(hidden)]
pub mod probe;
mod sampler;
mod step_graph;
mod tensor;
mod transfer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext, CudaSlice, CudaStream, DriverError};

pub use crate::vocabulary::StepGraphReport;
pub use ceilings::Ceilings;
pub use gemm::LinearShape;
pub use kernels::ImageKind;
pub use sampler::CudaState;
pub use step_graph::CudaStepGraph;
pub use tensor::CudaTensor;

use self::embedded::Family;
use self::kernels::{suffix, Kernels};
use self::pool::{GraphMemory, MemoryPool};
use self::probe::DeviceInfo;
use self::transfer::Staging;
use crate::cpu;
use crate::engine::StorageDtype;
use crate::engine::{Activation, CausalAttention, Engine};
use crate::error::{Error, Result};
use crate::launch::{self, DevicePtr};
use crate::memory::working_set;
use crate::tensor::HostTensor;
use crate::weights::TensorView;

/// The GPU engine: one device, one stream, tensors ([`CudaTensor`]) in bf16 or f16 storage.
pub struct CudaEngine {
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

    /// The device opened: ordinal, name, compute capability, total memory.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The storage dtype of every tensor (bf16 or f16).
    pub fn dtype(&self) -> StorageDtype {
        self.dtype
    }

    /// Which image of the kernels the driver runs: the sm_90 cubin, or the PTX it JIT-compiled (on other devices,
    /// or when it refused the cubin; [`Self::cubin_refused`] says why).
    pub fn kernel_image(&self) -> ImageKind {
        self.kernels.image_kind()
    }

    /// The driver's reason for refusing the sm_90 cubins on an sm_90 device, when it did.
    pub fn cubin_refused(&self) -> Option<&str> {
        self.kernels.cubin_refused()
    }

    /// GEMM problems (shape, dtype, epilogue) whose cuBLASLt descriptors and algorithm are cached.
    pub fn gemm_plans(&self) -> usize {
        self.gemm.plans()
    }

    /// Test hook, not for use otherwise: when on, the next kernel launch made while a denoising step is being
    /// captured first calls `cuStreamSynchronize`, which is illegal during capture (the driver returns
    /// CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture) — a failure inside the step, to show that
    /// the loop falls back to eager steps. It fires once.
    #[doc(hidden)]
    pub fn inject_sync_during_capture(&self, on: bool) {
        self.sync_during_capture.store(on, Ordering::Relaxed);
    }

    /// The hook above, at a launch.
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

    /// Waits for every queued launch and copy.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(probe::driver("synchronising the stream"))
    }

    fn current_stage(&self) -> &'static str {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh, uninitialised tensor; every kernel writes all of its output.
    fn alloc(&self, shape: Vec<usize>) -> Result<CudaTensor> {
        let bytes = shape.iter().product::<usize>() * self.dtype.size();
        // SAFETY: the contents are written by the op that receives the buffer before anything reads them.
        let buf = unsafe { self.stream.alloc::<u8>(bytes.max(1)) }
            .map_err(|e| self.alloc_error(e, bytes))?;
        Ok(CudaTensor { buf, shape })
    }

    /// Copies `src` into `dst` on the stream; the shapes must agree.
    fn copy_tensor(&self, dst: &mut CudaTensor, src: &CudaTensor) -> Result<()> {
        if dst.shape != src.shape {
            return Err(Error::shape(
                "overwrite",
                format!("copying {:?} into {:?}", src.shape, dst.shape),
            ));
        }
        self.stream
            .memcpy_dtod(&src.buf, &mut dst.buf)
            .map_err(probe::driver("copying a tensor on the device"))
    }

    /// An f32 scratch buffer of `len` elements (the linear-attention workspaces).
    fn scratch_f32(&self, len: usize) -> Result<CudaSlice<u8>> {
        let bytes = len.max(1) * 4;
        // SAFETY: the kernels that receive it write each element before reading it.
        unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| self.alloc_error(e, bytes))
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

    fn ptr(&self, t: &CudaTensor) -> DevicePtr {
        t.ptr(&self.stream)
    }

    fn symbol(&self, op: &str) -> String {
        format!("{op}_{}", suffix(self.dtype))
    }

    /// Launches `op_<dtype>` of `family`.
    ///
    /// # Safety
    /// As [`Kernels::launch`]: the plan's pointers address live buffers of the planned sizes.
    unsafe fn launch<P: cudarc::driver::DeviceRepr>(
        &self,
        family: Family,
        op: &str,
        plan: &launch::Plan<P>,
    ) -> Result<()> {
        self.injected_sync()?;
        // SAFETY: forwarded from the caller.
        unsafe {
            self.kernels
                .launch(&self.stream, family, &self.symbol(op), plan)
        }
    }

    fn channel_space(
        &self,
        x: &CudaTensor,
        grid: (usize, usize),
        op: launch::layout::ChannelSpace,
    ) -> Result<CudaTensor> {
        let (_, shape) = launch::layout::channel_space(x.shape(), grid, op, (0, 0))?;
        let out = self.alloc(shape)?;
        let (p, _) =
            launch::layout::channel_space(x.shape(), grid, op, (self.ptr(&out), self.ptr(x)))?;
        // SAFETY: the plan checked x against the grid and sized the output, which `out` holds.
        unsafe { self.launch(Family::Layout, "channel_space", &p) }?;
        Ok(out)
    }

    fn transpose(
        &self,
        x: &CudaTensor,
        shape: Vec<usize>,
        plan: impl FnOnce(
            launch::layout::TransposeBuffers,
        ) -> Result<launch::Plan<launch::layout::TransposeParams>>,
    ) -> Result<CudaTensor> {
        let out = self.alloc(shape)?;
        let p = plan(launch::layout::TransposeBuffers {
            out: self.ptr(&out),
            x: self.ptr(x),
        })?;
        // SAFETY: the plan checked x's shape; out has the same element count.
        unsafe { self.launch(Family::Layout, "transpose", &p) }?;
        Ok(out)
    }
}

impl Engine for CudaEngine {
    type Tensor = CudaTensor;
    type State = CudaState;
    type StepGraph = CudaStepGraph;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn begin_stage(&self, stage: &'static str, activation_elements: usize) -> Result<()> {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = stage;
        let bytes = activation_elements * self.dtype.size();
        let (free, total) = self
            .ctx
            .mem_get_info()
            .map_err(probe::driver("reading free memory"))?;
        // Memory the pool holds but nothing uses (freed by an earlier stage) is available too.
        let idle = self
            .pool
            .reserved_bytes()?
            .saturating_sub(self.pool.used_bytes()?);
        working_set::check_fits(stage, bytes, free + idle as usize, total)?;
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

    fn upload(&self, t: &HostTensor) -> Result<CudaTensor> {
        let bytes = transfer::to_bytes(t.data(), self.dtype);
        let mut out = self.alloc(t.shape().to_vec())?;
        if !bytes.is_empty() {
            self.stream
                .memcpy_htod(&bytes, &mut out.buf)
                .map_err(probe::driver("copying a tensor to the device"))?;
        }
        Ok(out)
    }

    fn load(&self, view: &TensorView<'_>, shape: &[usize]) -> Result<CudaTensor> {
        view.expect_elements_of(shape)?;
        let mut out = self.alloc(shape.to_vec())?;
        self.staging
            .load(&self.stream, view, self.dtype, &mut out.buf)?;
        Ok(out)
    }

    fn download(&self, t: &CudaTensor) -> Result<HostTensor> {
        let mut bytes = vec![0u8; t.len() * self.dtype.size()];
        if !bytes.is_empty() {
            let src = t.buf.slice(0..bytes.len());
            self.stream
                .memcpy_dtoh(&src, &mut bytes)
                .map_err(probe::driver("copying a tensor to the host"))?;
        }
        self.synchronize()?;
        HostTensor::new(t.shape.clone(), transfer::from_bytes(&bytes, self.dtype))
    }

    fn shape<'a>(&self, t: &'a CudaTensor) -> &'a [usize] {
        &t.shape
    }

    fn reshape(&self, t: CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        if shape.iter().product::<usize>() != t.len() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {:?} as {shape:?}", t.shape),
            ));
        }
        Ok(CudaTensor {
            buf: t.buf,
            shape: shape.to_vec(),
        })
    }

    fn linear(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        act: Activation,
    ) -> Result<CudaTensor> {
        const OP: &str = "linear";
        let &[n, k] = w.shape() else {
            return Err(Error::shape(
                OP,
                format!("w must be [out, in], got {:?}", w.shape()),
            ));
        };
        let Some((&xk, lead)) = x.shape().split_last() else {
            return Err(Error::shape(OP, "x must have at least one dimension"));
        };
        if xk != k {
            return Err(Error::shape(
                OP,
                format!(
                    "x {:?} has {xk} inputs, w {:?} expects {k}",
                    x.shape(),
                    w.shape()
                ),
            ));
        }
        if let Some(b) = b {
            if b.shape() != [n] {
                return Err(Error::shape(
                    OP,
                    format!("bias must be [{n}], got {:?}", b.shape()),
                ));
            }
        }
        let m: usize = lead.iter().product();
        let mut shape = lead.to_vec();
        shape.push(n);
        let mut y = self.alloc(shape)?;
        if m == 0 || n == 0 {
            return Ok(y);
        }
        let (fused, rest) = gemm::epilogue(act);
        self.gemm.linear(
            self.dtype,
            LinearShape { m, k, n },
            gemm::Operands {
                x: &x.buf,
                w: &w.buf,
                b: b.map(|b| &b.buf),
            },
            fused,
            &mut y.buf,
        )?;
        match rest {
            Activation::Identity => Ok(y),
            other => self.activation(&y, other),
        }
    }

    fn activation(&self, x: &CudaTensor, act: Activation) -> Result<CudaTensor> {
        let y = self.alloc(x.shape().to_vec())?;
        let p = launch::elementwise::activation(
            x.shape(),
            act,
            self.dtype.size(),
            launch::elementwise::PointwiseBuffers {
                y: self.ptr(&y),
                a: self.ptr(x),
                b: 0,
            },
        )?;
        // SAFETY: y has x's element count.
        unsafe { self.launch(Family::Elementwise, "activation", &p) }?;
        Ok(y)
    }

    fn add(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.binary("add", launch::elementwise::add, a, b)
    }

    fn modulation(&self, table: &CudaTensor, emb: &CudaTensor) -> Result<CudaTensor> {
        let &[k, d] = table.shape() else {
            return Err(Error::shape(
                "modulation",
                format!("table must be [K, D], got {:?}", table.shape()),
            ));
        };
        let b = emb.shape().first().copied().unwrap_or(0);
        let out = self.alloc(vec![b, k, d])?;
        let p = launch::elementwise::modulation(
            table.shape(),
            emb.shape(),
            launch::elementwise::ModulationBuffers {
                out: self.ptr(&out),
                table: self.ptr(table),
                emb: self.ptr(emb),
            },
        )?;
        // SAFETY: the plan checked table = [K, D], emb = [B, K·D] or [B, D]; out holds B·K·D elements.
        unsafe { self.launch(Family::Elementwise, "modulation", &p) }?;
        Ok(out)
    }

    fn layer_norm_modulate(
        &self,
        x: &CudaTensor,
        m: &CudaTensor,
        shift_row: usize,
        scale_row: usize,
        eps: f32,
    ) -> Result<CudaTensor> {
        let y = self.alloc(x.shape().to_vec())?;
        let p = launch::norm::layer_norm_modulate(
            x.shape(),
            m.shape(),
            shift_row,
            scale_row,
            eps,
            launch::norm::LayerNormModulateBuffers {
                y: self.ptr(&y),
                x: self.ptr(x),
                modulation: self.ptr(m),
            },
        )?;
        // SAFETY: the plan checked x = [B, N, D], m = [B, K, D] and the rows; y has x's size.
        unsafe { self.launch(Family::Norm, "layer_norm_modulate", &p) }?;
        Ok(y)
    }

    fn gated_residual(
        &self,
        x: &CudaTensor,
        y: &CudaTensor,
        m: &CudaTensor,
        gate_row: usize,
    ) -> Result<CudaTensor> {
        let out = self.alloc(x.shape().to_vec())?;
        let p = launch::elementwise::gated_residual(
            x.shape(),
            y.shape(),
            m.shape(),
            gate_row,
            self.dtype.size(),
            launch::elementwise::GatedResidualBuffers {
                y: self.ptr(&out),
                x: self.ptr(x),
                r: self.ptr(y),
                modulation: self.ptr(m),
            },
        )?;
        // SAFETY: the plan checked x = y = [B, N, D], m = [B, K, D], gate_row < K; out has x's size.
        unsafe { self.launch(Family::Elementwise, "gated_residual", &p) }?;
        Ok(out)
    }

    fn residual_layer_norm_modulate(
        &self,
        x: &CudaTensor,
        r: &CudaTensor,
        gate: Option<(&CudaTensor, usize)>,
        m: &CudaTensor,
        (shift_row, scale_row): (usize, usize),
        eps: f32,
    ) -> Result<(CudaTensor, CudaTensor)> {
        let x_out = self.alloc(x.shape().to_vec())?;
        let z = self.alloc(x.shape().to_vec())?;
        let p = launch::elementwise::gated_residual_layer_norm_modulate(
            x.shape(),
            r.shape(),
            gate.map(|(g, row)| launch::elementwise::Gate {
                modulation_shape: g.shape(),
                row,
            }),
            m.shape(),
            shift_row,
            scale_row,
            eps,
            launch::elementwise::ResidualNormBuffers {
                x_out: self.ptr(&x_out),
                z: self.ptr(&z),
                x: self.ptr(x),
                r: self.ptr(r),
                gate_modulation: gate.map_or(0, |(g, _)| self.ptr(g)),
                modulation: self.ptr(m),
            },
        )?;
        // SAFETY: the plan checked every shape and row; x_out and z have x's size.
        unsafe {
            self.launch(
                Family::Elementwise,
                "gated_residual_layer_norm_modulate",
                &p,
            )
        }?;
        Ok((x_out, z))
    }

    fn rms_norm(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        eps: f32,
    ) -> Result<CudaTensor> {
        self.rms_norm_any(x, w, b, false, eps)
    }

    fn linear_attention(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        heads: usize,
        eps: f32,
    ) -> Result<CudaTensor> {
        if heads == 0 || q.shape().last() != Some(&(heads * launch::linear_attn::HEAD_DIM)) {
            // The kernels are specialised for head dimension 32 (every published model); others take the reference.
            return self.host(&[q, k, v], |t| {
                cpu::linear_attn::linear_attention(&t[0], &t[1], &t[2], heads, eps)
            });
        }
        let sizes = launch::linear_attn::workspace(q.shape(), heads)?;
        let out = self.alloc(q.shape().to_vec())?;
        let partials = self.scratch_f32(sizes.partials)?;
        let state = self.scratch_f32(sizes.state)?;
        let raw = |s: &CudaSlice<u8>| {
            use cudarc::driver::DevicePtr as _;
            s.device_ptr(&self.stream).0
        };
        let plans = launch::linear_attn::linear_attention(
            q.shape(),
            k.shape(),
            v.shape(),
            heads,
            eps,
            launch::linear_attn::LinearAttentionBuffers {
                out: self.ptr(&out),
                q: self.ptr(q),
                k: self.ptr(k),
                v: self.ptr(v),
                partials: raw(&partials),
                state: raw(&state),
            },
        )?;
        // SAFETY: the plans checked q = k = v = [B, N, heads·32]; out has q's size; the workspaces hold the sizes
        // `workspace` gives (pool allocations are 256-byte aligned); the three launches run in stream order.
        unsafe {
            self.launch(Family::LinearAttn, "linear_attn_state", &plans.state)?;
            self.kernels.launch(
                &self.stream,
                Family::LinearAttn,
                "linear_attn_reduce_f32",
                &plans.reduce,
            )?;
            self.launch(Family::LinearAttn, "linear_attn_apply", &plans.apply)?;
        }
        Ok(out)
    }

    fn attention(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        key_bias: &CudaTensor,
        heads: usize,
    ) -> Result<CudaTensor> {
        let out = self.alloc(q.shape().to_vec())?;
        let p = launch::attention::attention(
            q.shape(),
            k.shape(),
            v.shape(),
            key_bias.shape(),
            heads,
            launch::attention::AttentionBuffers {
                out: self.ptr(&out),
                q: self.ptr(q),
                k: self.ptr(k),
                v: self.ptr(v),
                key_bias: self.ptr(key_bias),
            },
        )?;
        // SAFETY: the plan checked q = [B, N, heads·d], k = v = [B, L, heads·d], key_bias = [B, L]; out has q's size.
        unsafe { self.launch(Family::Attention, p.class.kernel(), &p.plan) }?;
        Ok(out)
    }

    fn causal_attention(
        &self,
        q: &CudaTensor,
        k: &CudaTensor,
        v: &CudaTensor,
        key_mask: &CudaTensor,
        params: &CausalAttention,
    ) -> Result<CudaTensor> {
        let out = self.alloc(q.shape().to_vec())?;
        let p = launch::causal_attention::causal_attention(
            q.shape(),
            k.shape(),
            v.shape(),
            key_mask.shape(),
            params,
            launch::causal_attention::CausalAttentionBuffers {
                out: self.ptr(&out),
                q: self.ptr(q),
                k: self.ptr(k),
                v: self.ptr(v),
                key_mask: self.ptr(key_mask),
            },
        )?;
        // SAFETY: the plan checked q = [B, L, heads·d], k = v = [B, L, kv_heads·d], key_mask = [B, L] with d in the
        // chosen class; out has q's size.
        unsafe { self.launch(Family::CausalAttention, p.class.kernel(), &p.plan) }?;
        Ok(out)
    }

    fn rotary(
        &self,
        x: &CudaTensor,
        cos: &CudaTensor,
        sin: &CudaTensor,
        heads: usize,
    ) -> Result<CudaTensor> {
        let y = self.alloc(x.shape().to_vec())?;
        let p = launch::embed::rotary(
            x.shape(),
            cos.shape(),
            sin.shape(),
            heads,
            launch::embed::RotaryBuffers {
                y: self.ptr(&y),
                x: self.ptr(x),
                cos: self.ptr(cos),
                sin: self.ptr(sin),
            },
        )?;
        // SAFETY: the plan checked x = [B, L, heads·d] (d even) and cos = sin = [L, d]; y has x's size.
        unsafe { self.launch(Family::Embed, "rotary", &p) }?;
        Ok(y)
    }

    fn embedding(&self, table: &CudaTensor, ids: &[u32], scale: f32) -> Result<CudaTensor> {
        let d = table.shape().get(1).copied().unwrap_or(0);
        let out = self.alloc(vec![ids.len(), d])?;
        let device_ids = self
            .stream
            .clone_htod(ids)
            .map_err(probe::driver("copying token ids to the device"))?;
        let ids_ptr = {
            use cudarc::driver::DevicePtr as _;
            device_ids.device_ptr(&self.stream).0
        };
        let p = launch::embed::embedding(
            table.shape(),
            ids,
            scale,
            self.dtype.size(),
            launch::embed::EmbeddingBuffers {
                out: self.ptr(&out),
                table: self.ptr(table),
                ids: ids_ptr,
            },
        )?;
        // SAFETY: the plan checked table = [V, D] and every id < V; the device ids hold ids.len() u32s, out N·D
        // elements; the ids buffer is freed in stream order, after the kernel.
        unsafe { self.launch(Family::Embed, "embedding", &p) }?;
        Ok(out)
    }

    fn mul(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        self.binary("mul", launch::elementwise::mul, a, b)
    }

    fn rms_norm_plus_one(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        self.rms_norm_any(x, w, None, true, eps)
    }

    fn dwconv3x3_glu(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: &CudaTensor,
        h: usize,
        width: usize,
    ) -> Result<CudaTensor> {
        let &[batch, n, c2] = x.shape() else {
            return Err(Error::shape(
                "dwconv3x3_glu",
                format!("x must be [B, h·w, 2F], got {:?}", x.shape()),
            ));
        };
        let out = self.alloc(vec![batch, n, c2 / 2])?;
        let p = launch::conv::dwconv3x3_glu(
            x.shape(),
            w.shape(),
            b.shape(),
            h,
            width,
            launch::conv::DwConvGluBuffers {
                out: self.ptr(&out),
                x: self.ptr(x),
                w: self.ptr(w),
                bias: self.ptr(b),
            },
        )?;
        // SAFETY: the plan checked x = [B, h·w, 2F], w = [2F, 9], b = [2F]; out holds B·h·w·F elements.
        unsafe { self.launch(Family::Conv, "dwconv3x3_glu", &p) }?;
        Ok(out)
    }

    fn nchw_to_tokens(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let s = x.shape().to_vec();
        let shape = match s[..] {
            [b, c, h, w] => vec![b, h * w, c],
            _ => s.clone(),
        };
        self.transpose(x, shape, |buffers| {
            launch::layout::nchw_to_tokens(&s, buffers)
        })
    }

    fn tokens_to_nchw(&self, x: &CudaTensor, h: usize, w: usize) -> Result<CudaTensor> {
        let s = x.shape().to_vec();
        let shape = match s[..] {
            [b, _, c] => vec![b, c, h, w],
            _ => s.clone(),
        };
        self.transpose(x, shape, |buffers| {
            launch::layout::tokens_to_nchw(&s, h, w, buffers)
        })
    }

    fn conv3x3(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        grid: (usize, usize),
        stride: usize,
    ) -> Result<CudaTensor> {
        use launch::conv3x3::{conv3x3, Conv3x3Buffers};
        let bias_shape = b.map(CudaTensor::shape);
        let none = Conv3x3Buffers {
            out: 0,
            x: 0,
            w: 0,
            bias: 0,
        };
        let (_, shape) = conv3x3(x.shape(), w.shape(), bias_shape, grid, stride, none)?;
        let out = self.alloc(shape)?;
        let buffers = Conv3x3Buffers {
            out: self.ptr(&out),
            x: self.ptr(x),
            w: self.ptr(w),
            bias: b.map_or(0, |b| self.ptr(b)),
        };
        let (p, _) = conv3x3(x.shape(), w.shape(), bias_shape, grid, stride, buffers)?;
        // SAFETY: the plan checked x = [B, h·w, Cin], w = [Cout, Cin, 3, 3], the bias [Cout], and sized the output,
        // which `out` holds.
        unsafe { self.launch(Family::Conv3x3, "conv3x3", &p) }?;
        Ok(out)
    }

    fn depthwise_conv(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        h: usize,
        width: usize,
    ) -> Result<CudaTensor> {
        let out = self.alloc(x.shape().to_vec())?;
        let p = launch::conv::depthwise_conv(
            x.shape(),
            w.shape(),
            b.map(CudaTensor::shape),
            (h, width),
            launch::conv::DepthwiseConvBuffers {
                out: self.ptr(&out),
                x: self.ptr(x),
                w: self.ptr(w),
                bias: b.map_or(0, |b| self.ptr(b)),
            },
        )?;
        // SAFETY: the plan checked x = [B, h·w, C], w = [C, k, k] and the bias [C]; out has x's size.
        unsafe { self.launch(Family::Conv, "depthwise_conv", &p) }?;
        Ok(out)
    }

    fn grouped_linear(&self, x: &CudaTensor, w: &CudaTensor, groups: usize) -> Result<CudaTensor> {
        use launch::conv::grouped_linear;
        let (_, shape) = grouped_linear(x.shape(), w.shape(), groups, (0, 0, 0))?;
        let out = self.alloc(shape)?;
        let (p, _) = grouped_linear(
            x.shape(),
            w.shape(),
            groups,
            (self.ptr(&out), self.ptr(x), self.ptr(w)),
        )?;
        // SAFETY: the plan checked x = [.., G·Ci] against w = [Cout, Ci] and sized the output, which `out` holds.
        unsafe { self.launch(Family::Conv, "grouped_linear", &p) }?;
        Ok(out)
    }

    fn repeat_channels(&self, x: &CudaTensor, r: usize) -> Result<CudaTensor> {
        let n = x.shape().get(1).copied().unwrap_or(0);
        self.channel_space(x, (1, n), launch::layout::ChannelSpace::Repeat(r))
    }

    fn pixel_shuffle(&self, x: &CudaTensor, h: usize, w: usize) -> Result<CudaTensor> {
        self.channel_space(x, (h, w), launch::layout::ChannelSpace::Shuffle(1))
    }

    fn repeat_pixel_shuffle(
        &self,
        x: &CudaTensor,
        h: usize,
        w: usize,
        r: usize,
    ) -> Result<CudaTensor> {
        self.channel_space(x, (h, w), launch::layout::ChannelSpace::Shuffle(r))
    }

    fn upsample_nearest2x(&self, x: &CudaTensor, h: usize, w: usize) -> Result<CudaTensor> {
        // Nearest ×2 is the pixel shuffle of every channel repeated four times.
        self.channel_space(x, (h, w), launch::layout::ChannelSpace::Shuffle(4))
    }

    fn split_qkv_groups(
        &self,
        t: &CudaTensor,
        head_dim: usize,
    ) -> Result<(CudaTensor, CudaTensor, CudaTensor)> {
        use launch::layout::{split_qkv_groups, QkvBuffers};
        let none = QkvBuffers { q: 0, k: 0, v: 0 };
        let (_, shape) = split_qkv_groups(t.shape(), head_dim, 0, none)?;
        let (q, k, v) = (
            self.alloc(shape.clone())?,
            self.alloc(shape.clone())?,
            self.alloc(shape)?,
        );
        let buffers = QkvBuffers {
            q: self.ptr(&q),
            k: self.ptr(&k),
            v: self.ptr(&v),
        };
        let (p, _) = split_qkv_groups(t.shape(), head_dim, self.ptr(t), buffers)?;
        // SAFETY: the plan checked t's shape and sized the three outputs, which q, k, v hold.
        unsafe { self.launch(Family::Layout, "split_qkv_groups", &p) }?;
        Ok((q, k, v))
    }

    fn pixel_unshuffle(&self, x: &CudaTensor, h: usize, w: usize) -> Result<CudaTensor> {
        self.channel_space(x, (h, w), launch::layout::ChannelSpace::Unshuffle)
    }

    fn channel_group_mean(&self, x: &CudaTensor, g: usize) -> Result<CudaTensor> {
        use launch::layout::channel_group_mean;
        let (_, shape) = channel_group_mean(x.shape(), g, (0, 0))?;
        let out = self.alloc(shape)?;
        let (p, _) = channel_group_mean(x.shape(), g, (self.ptr(&out), self.ptr(x)))?;
        // SAFETY: the plan checked that g divides x's channels and sized the output, which `out` holds.
        unsafe { self.launch(Family::Layout, "channel_group_mean", &p) }?;
        Ok(out)
    }

    fn concat_channels(&self, a: &CudaTensor, b: &CudaTensor) -> Result<CudaTensor> {
        use launch::layout::concat_channels;
        let (_, shape) = concat_channels(a.shape(), b.shape(), (0, 0, 0))?;
        let out = self.alloc(shape)?;
        let (p, _) = concat_channels(
            a.shape(),
            b.shape(),
            (self.ptr(&out), self.ptr(a), self.ptr(b)),
        )?;
        // SAFETY: the plan checked that a and b share [B, N] and sized the output, which `out` holds.
        unsafe { self.launch(Family::Layout, "concat_channels", &p) }?;
        Ok(out)
    }

    fn upload_state(&self, t: &HostTensor) -> Result<CudaState> {
        self.state_upload(t)
    }

    fn download_state(&self, s: &CudaState) -> Result<HostTensor> {
        self.state_download(s)
    }

    fn state_shape<'a>(&self, s: &'a CudaState) -> &'a [usize] {
        s.shape()
    }

    fn model_input(
        &self,
        x: &CudaState,
        copies: usize,
        schedule: &CudaState,
    ) -> Result<CudaTensor> {
        self.sampler_model_input(x, copies, schedule)
    }

    fn step_sinusoid(
        &self,
        schedule: &CudaState,
        batch: usize,
        channels: usize,
    ) -> Result<CudaTensor> {
        self.sampler_step_sinusoid(schedule, batch, channels)
    }

    fn flow_step(
        &self,
        schedule: &CudaState,
        output: &CudaTensor,
        guidance: crate::vocabulary::Guidance,
        noise: Option<&CudaState>,
        x: &mut CudaState,
        x0_prev: &mut CudaState,
    ) -> Result<()> {
        self.sampler_flow_step(schedule, output, guidance, noise, x, x0_prev)
    }

    fn advance_schedule(&self, schedule: &mut CudaState) -> Result<()> {
        self.sampler_advance(schedule)
    }

    fn overwrite(&self, dst: &mut CudaTensor, src: &CudaTensor) -> Result<()> {
        self.copy_tensor(dst, src)
    }

    fn overwrite_state(&self, dst: &mut CudaState, src: &HostTensor) -> Result<()> {
        self.state_overwrite(dst, src)
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

/// A launch plan of one of elementwise.cu's same-shape binary ops.
type BinaryPlan = fn(
    &[usize],
    &[usize],
    usize,
    launch::elementwise::PointwiseBuffers,
) -> Result<launch::Plan<launch::elementwise::PointwiseParams>>;

impl CudaEngine {
    fn binary(
        &self,
        op: &str,
        plan: BinaryPlan,
        a: &CudaTensor,
        b: &CudaTensor,
    ) -> Result<CudaTensor> {
        let y = self.alloc(a.shape().to_vec())?;
        let p = plan(
            a.shape(),
            b.shape(),
            self.dtype.size(),
            launch::elementwise::PointwiseBuffers {
                y: self.ptr(&y),
                a: self.ptr(a),
                b: self.ptr(b),
            },
        )?;
        // SAFETY: the plan checked a and b have the same shape, which y has.
        unsafe { self.launch(Family::Elementwise, op, &p) }?;
        Ok(y)
    }

    fn rms_norm_any(
        &self,
        x: &CudaTensor,
        w: &CudaTensor,
        b: Option<&CudaTensor>,
        plus_one: bool,
        eps: f32,
    ) -> Result<CudaTensor> {
        let y = self.alloc(x.shape().to_vec())?;
        let p = launch::norm::rms_norm(
            x.shape(),
            w.shape(),
            b.map(CudaTensor::shape),
            plus_one,
            eps,
            (
                self.ptr(&y),
                self.ptr(x),
                self.ptr(w),
                b.map_or(0, |b| self.ptr(b)),
            ),
        )?;
        // SAFETY: the plan checked w (and b) = [D] with D the last dimension of x; y has x's size.
        unsafe { self.launch(Family::Norm, "rms_norm", &p) }?;
        Ok(y)
    }
}
