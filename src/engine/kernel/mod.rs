//! `KernelEngine<D>`: the [`Engine`] whose ops run kernels/*.cu through their launch plans (`crate::launch`) on a
//! [`KernelDevice`] — the GPU (`cuda::CudaEngine`) or the host emulation of the same kernels (`emu::EmuEngine`).
//! Each op's body is written once here: allocate the outputs, plan from the shapes and the buffers' addresses,
//! launch. The devices differ only in memory, copies, how a kernel is started and who runs the GEMM.
//!
//! Linear attention at head widths other than 32 (no published model has one; the tiny test VAE does) runs the CPU
//! reference on downloaded inputs and uploads the rounded result.

mod device;
mod tensor;

pub use device::{KernelDevice, LinearOperands, LinearShape};
pub use tensor::{DeviceState, DeviceTensor};

use crate::cpu;
use crate::engine::storage::{from_bytes, to_bytes};
use crate::engine::{Activation, CausalAttention, Engine, StorageDtype};
use crate::error::{Error, Result};
use crate::launch::{self, kernel, DevicePtr, Kernel, Plan};
use crate::tensor::HostTensor;
use crate::vocabulary::{schedule as table, Guidance, StepGraphReport, StepRule};
use crate::weights::TensorView;

/// An engine running the kernels of kernels/*.cu on device `D`.
pub struct KernelEngine<D> {
    device: D,
}

/// The tensor of a `KernelEngine<D>`.
type Tensor<D> = DeviceTensor<<D as KernelDevice>::Buffer>;
/// The sampler state of a `KernelEngine<D>`.
type State<D> = DeviceState<<D as KernelDevice>::Buffer>;

impl<D: KernelDevice> KernelEngine<D> {
    /// The engine running on `device`.
    pub fn on(device: D) -> Self {
        Self { device }
    }

    /// The device the kernels run on.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The storage dtype of every tensor.
    pub fn dtype(&self) -> StorageDtype {
        self.device.dtype()
    }

    /// A fresh tensor of `shape`; the op that receives it writes all of it.
    fn alloc(&self, shape: Vec<usize>) -> Result<Tensor<D>> {
        let bytes = shape.iter().product::<usize>() * self.dtype().size();
        let buf = self.device.alloc(bytes.max(1))?;
        Ok(DeviceTensor { buf, shape })
    }

    /// An f32 buffer of `len` elements (sampler state, the linear-attention workspaces).
    fn alloc_f32(&self, len: usize) -> Result<D::Buffer> {
        self.device.alloc(len.max(1) * 4)
    }

    fn ptr(&self, t: &Tensor<D>) -> DevicePtr {
        self.device.address(&t.buf)
    }

    fn state_ptr(&self, s: &State<D>) -> DevicePtr {
        self.device.address(&s.buf)
    }

    /// Launches `kernel` in the storage dtype.
    ///
    /// # Safety
    /// As [`KernelDevice::launch`].
    unsafe fn run<P: cudarc::driver::DeviceRepr>(
        &self,
        kernel: Kernel<P>,
        plan: &Plan<P>,
    ) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.device.launch(kernel, self.dtype(), plan) }
    }

    /// `op` of the CPU reference on the downloaded inputs, its result uploaded (rounded to the storage dtype).
    fn on_host(
        &self,
        inputs: &[&Tensor<D>],
        op: impl FnOnce(&[HostTensor]) -> Result<HostTensor>,
    ) -> Result<Tensor<D>> {
        let host = inputs
            .iter()
            .map(|t| self.download(t))
            .collect::<Result<Vec<_>>>()?;
        self.upload(&op(&host)?)
    }

    /// The schedule as a host tensor, where the device lets the host read it without a transfer.
    fn host_schedule(&self, schedule: &State<D>) -> Result<Option<HostTensor>> {
        self.device
            .host_bytes(&schedule.buf)
            .map(|b| {
                HostTensor::new(
                    schedule.shape.clone(),
                    from_bytes(&b[..schedule.len() * 4], StorageDtype::F32),
                )
            })
            .transpose()
    }

    fn binary(
        &self,
        kernel: Kernel<launch::elementwise::PointwiseParams>,
        plan: launch::elementwise::BinaryPlan,
        a: &Tensor<D>,
        b: &Tensor<D>,
    ) -> Result<Tensor<D>> {
        let y = self.alloc(a.shape().to_vec())?;
        let p = plan(
            a.shape(),
            b.shape(),
            self.dtype().size(),
            launch::elementwise::PointwiseBuffers {
                y: self.ptr(&y),
                a: self.ptr(a),
                b: self.ptr(b),
            },
        )?;
        // SAFETY: the plan checked a and b have the same shape, which y has.
        unsafe { self.run(kernel, &p) }?;
        Ok(y)
    }

    fn rms_norm_any(
        &self,
        x: &Tensor<D>,
        w: &Tensor<D>,
        b: Option<&Tensor<D>>,
        plus_one: bool,
        eps: f32,
    ) -> Result<Tensor<D>> {
        let y = self.alloc(x.shape().to_vec())?;
        let p = launch::norm::rms_norm(
            x.shape(),
            w.shape(),
            b.map(DeviceTensor::shape),
            plus_one,
            eps,
            launch::norm::RmsNormBuffers {
                y: self.ptr(&y),
                x: self.ptr(x),
                w: self.ptr(w),
                b: b.map_or(0, |b| self.ptr(b)),
            },
        )?;
        // SAFETY: the plan checked w (and b) = [D] with D the last dimension of x; y has x's size.
        unsafe { self.run(kernel::RMS_NORM, &p) }?;
        Ok(y)
    }

    fn channel_space(
        &self,
        x: &Tensor<D>,
        grid: (usize, usize),
        op: launch::layout::ChannelSpace,
    ) -> Result<Tensor<D>> {
        let (plan, shape) = launch::layout::channel_space(x.shape(), grid, op)?;
        let out = self.alloc(shape)?;
        let p = plan.bind(launch::layout::PairBuffers {
            out: self.ptr(&out),
            x: self.ptr(x),
        });
        // SAFETY: the plan checked x against the grid and sized the output, which `out` holds.
        unsafe { self.run(kernel::CHANNEL_SPACE, &p) }?;
        Ok(out)
    }

    fn transpose(
        &self,
        x: &Tensor<D>,
        shape: Vec<usize>,
        plan: impl FnOnce(launch::layout::PairBuffers) -> Result<Plan<launch::layout::TransposeParams>>,
    ) -> Result<Tensor<D>> {
        let out = self.alloc(shape)?;
        let p = plan(launch::layout::PairBuffers {
            out: self.ptr(&out),
            x: self.ptr(x),
        })?;
        // SAFETY: the plan checked x's shape; out has the same element count.
        unsafe { self.run(kernel::TRANSPOSE, &p) }?;
        Ok(out)
    }
}

impl<D: KernelDevice> Engine for KernelEngine<D> {
    type Tensor = Tensor<D>;
    type State = State<D>;
    type StepGraph = D::StepGraph;

    fn name(&self) -> &'static str {
        self.device.name()
    }

    fn begin_stage(&self, stage: &'static str, activation_elements: usize) -> Result<()> {
        self.device
            .begin_stage(stage, activation_elements * self.dtype().size())
    }

    fn check_fits(&self, stage: &'static str, activation_elements: usize) -> Result<()> {
        self.device
            .check_fits(stage, activation_elements * self.dtype().size())
    }

    fn non_finite_in_state(&self, state: &State<D>) -> Option<usize> {
        let bytes = self.device.host_bytes(&state.buf)?;
        // Counted in place: this runs after every step of a host engine's loop.
        let values = bytes[..state.len() * 4].chunks_exact(4);
        Some(
            values
                .filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
                .count(),
        )
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        self.device.peak_device_bytes()
    }

    fn step_graph_report(&self) -> Option<StepGraphReport> {
        self.device.step_graph_report()
    }

    fn upload(&self, t: &HostTensor) -> Result<Tensor<D>> {
        let mut out = self.alloc(t.shape().to_vec())?;
        if !t.is_empty() {
            self.device
                .write(&mut out.buf, &to_bytes(t.data(), self.dtype()))?;
        }
        Ok(out)
    }

    fn load(&self, view: &TensorView<'_>, shape: &[usize]) -> Result<Tensor<D>> {
        view.expect_elements_of(shape)?;
        let mut out = self.alloc(shape.to_vec())?;
        self.device.load(view, &mut out.buf)?;
        Ok(out)
    }

    fn download(&self, t: &Tensor<D>) -> Result<HostTensor> {
        let bytes = self.device.read(&t.buf, t.len() * self.dtype().size())?;
        HostTensor::new(t.shape.clone(), from_bytes(&bytes, self.dtype()))
    }

    fn shape<'a>(&self, t: &'a Tensor<D>) -> &'a [usize] {
        &t.shape
    }

    fn reshape(&self, t: Tensor<D>, shape: &[usize]) -> Result<Tensor<D>> {
        if shape.iter().product::<usize>() != t.len() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {:?} as {shape:?}", t.shape),
            ));
        }
        Ok(DeviceTensor {
            buf: t.buf,
            shape: shape.to_vec(),
        })
    }

    fn linear(
        &self,
        x: &Tensor<D>,
        w: &Tensor<D>,
        b: Option<&Tensor<D>>,
        act: Activation,
    ) -> Result<Tensor<D>> {
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
        let operands = LinearOperands {
            x: &x.buf,
            w: &w.buf,
            b: b.map(|b| &b.buf),
        };
        match self
            .device
            .linear(LinearShape { m, k, n }, operands, act, &mut y.buf)?
        {
            Activation::Identity => Ok(y),
            rest => self.activation(&y, rest),
        }
    }

    fn activation(&self, x: &Tensor<D>, act: Activation) -> Result<Tensor<D>> {
        let y = self.alloc(x.shape().to_vec())?;
        let p = launch::elementwise::activation(
            x.shape(),
            act,
            self.dtype().size(),
            launch::elementwise::PointwiseBuffers {
                y: self.ptr(&y),
                a: self.ptr(x),
                b: 0,
            },
        )?;
        // SAFETY: y has x's element count.
        unsafe { self.run(kernel::ACTIVATION, &p) }?;
        Ok(y)
    }

    fn add(&self, a: &Tensor<D>, b: &Tensor<D>) -> Result<Tensor<D>> {
        self.binary(kernel::ADD, launch::elementwise::add, a, b)
    }

    fn modulation(&self, table: &Tensor<D>, emb: &Tensor<D>) -> Result<Tensor<D>> {
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
        unsafe { self.run(kernel::MODULATION, &p) }?;
        Ok(out)
    }

    fn layer_norm_modulate(
        &self,
        x: &Tensor<D>,
        m: &Tensor<D>,
        shift_row: usize,
        scale_row: usize,
        eps: f32,
    ) -> Result<Tensor<D>> {
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
        unsafe { self.run(kernel::LAYER_NORM_MODULATE, &p) }?;
        Ok(y)
    }

    fn gated_residual(
        &self,
        x: &Tensor<D>,
        y: &Tensor<D>,
        m: &Tensor<D>,
        gate_row: usize,
    ) -> Result<Tensor<D>> {
        let out = self.alloc(x.shape().to_vec())?;
        let p = launch::elementwise::gated_residual(
            x.shape(),
            y.shape(),
            m.shape(),
            gate_row,
            self.dtype().size(),
            launch::elementwise::GatedResidualBuffers {
                y: self.ptr(&out),
                x: self.ptr(x),
                r: self.ptr(y),
                modulation: self.ptr(m),
            },
        )?;
        // SAFETY: the plan checked x = y = [B, N, D], m = [B, K, D], gate_row < K; out has x's size.
        unsafe { self.run(kernel::GATED_RESIDUAL, &p) }?;
        Ok(out)
    }

    fn residual_layer_norm_modulate(
        &self,
        x: &Tensor<D>,
        r: &Tensor<D>,
        gate: Option<(&Tensor<D>, usize)>,
        m: &Tensor<D>,
        (shift_row, scale_row): (usize, usize),
        eps: f32,
    ) -> Result<(Tensor<D>, Tensor<D>)> {
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
        unsafe { self.run(kernel::GATED_RESIDUAL_LAYER_NORM_MODULATE, &p) }?;
        Ok((x_out, z))
    }

    fn rms_norm(
        &self,
        x: &Tensor<D>,
        w: &Tensor<D>,
        b: Option<&Tensor<D>>,
        eps: f32,
    ) -> Result<Tensor<D>> {
        self.rms_norm_any(x, w, b, false, eps)
    }

    fn linear_attention(
        &self,
        q: &Tensor<D>,
        k: &Tensor<D>,
        v: &Tensor<D>,
        heads: usize,
        eps: f32,
    ) -> Result<Tensor<D>> {
        if heads == 0 || q.shape().last() != Some(&(heads * launch::linear_attn::HEAD_DIM)) {
            // The kernels are specialised for head dimension 32 (every published model); others take the reference.
            return self.on_host(&[q, k, v], |t| {
                cpu::linear_attn::linear_attention(&t[0], &t[1], &t[2], heads, eps)
            });
        }
        let sizes = launch::linear_attn::workspace(q.shape(), heads)?;
        let out = self.alloc(q.shape().to_vec())?;
        let partials = self.alloc_f32(sizes.partials)?;
        let state = self.alloc_f32(sizes.state)?;
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
                partials: self.device.address(&partials),
                state: self.device.address(&state),
            },
        )?;
        // SAFETY: the plans checked q = k = v = [B, N, heads·32]; out has q's size; the workspaces hold the sizes
        // `workspace` gives, 16-byte aligned by every device; the three launches run in order (pass 1 writes the
        // partials, the reduction reads them and writes the state, pass 2 reads the state).
        unsafe {
            self.run(kernel::LINEAR_ATTN_STATE, &plans.state)?;
            self.run(kernel::LINEAR_ATTN_REDUCE, &plans.reduce)?;
            self.run(kernel::LINEAR_ATTN_APPLY, &plans.apply)?;
        }
        Ok(out)
    }

    fn attention(
        &self,
        q: &Tensor<D>,
        k: &Tensor<D>,
        v: &Tensor<D>,
        key_bias: &Tensor<D>,
        heads: usize,
    ) -> Result<Tensor<D>> {
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
        unsafe { self.run(kernel::attention_kernel(p.class), &p.plan) }?;
        Ok(out)
    }

    fn causal_attention(
        &self,
        q: &Tensor<D>,
        k: &Tensor<D>,
        v: &Tensor<D>,
        key_mask: &Tensor<D>,
        params: &CausalAttention,
    ) -> Result<Tensor<D>> {
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
        unsafe { self.run(kernel::causal_attention_kernel(p.class), &p.plan) }?;
        Ok(out)
    }

    fn rotary(
        &self,
        x: &Tensor<D>,
        cos: &Tensor<D>,
        sin: &Tensor<D>,
        heads: usize,
    ) -> Result<Tensor<D>> {
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
        unsafe { self.run(kernel::ROTARY, &p) }?;
        Ok(y)
    }

    fn embedding(&self, table: &Tensor<D>, ids: &[u32], scale: f32) -> Result<Tensor<D>> {
        let d = table.shape().get(1).copied().unwrap_or(0);
        let out = self.alloc(vec![ids.len(), d])?;
        let mut device_ids = self.device.alloc((ids.len() * 4).max(1))?;
        if !ids.is_empty() {
            self.device
                .write(&mut device_ids, bytemuck::cast_slice(ids))?;
        }
        let p = launch::embed::embedding(
            table.shape(),
            ids,
            scale,
            self.dtype().size(),
            launch::embed::EmbeddingBuffers {
                out: self.ptr(&out),
                table: self.ptr(table),
                ids: self.device.address(&device_ids),
            },
        )?;
        // SAFETY: the plan checked table = [V, D] and every id < V; the device ids hold ids.len() u32s, out N·D
        // elements; the ids buffer is freed in stream order, after the kernel.
        unsafe { self.run(kernel::EMBEDDING, &p) }?;
        Ok(out)
    }

    fn mul(&self, a: &Tensor<D>, b: &Tensor<D>) -> Result<Tensor<D>> {
        self.binary(kernel::MUL, launch::elementwise::mul, a, b)
    }

    fn rms_norm_plus_one(&self, x: &Tensor<D>, w: &Tensor<D>, eps: f32) -> Result<Tensor<D>> {
        self.rms_norm_any(x, w, None, true, eps)
    }

    fn dwconv3x3_glu(
        &self,
        x: &Tensor<D>,
        w: &Tensor<D>,
        b: &Tensor<D>,
        h: usize,
        width: usize,
    ) -> Result<Tensor<D>> {
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
            launch::conv::ConvBuffers {
                out: self.ptr(&out),
                x: self.ptr(x),
                w: self.ptr(w),
                bias: self.ptr(b),
            },
        )?;
        // SAFETY: the plan checked x = [B, h·w, 2F], w = [2F, 9], b = [2F]; out holds B·h·w·F elements.
        unsafe { self.run(kernel::DWCONV3X3_GLU, &p) }?;
        Ok(out)
    }

    fn nchw_to_tokens(&self, x: &Tensor<D>) -> Result<Tensor<D>> {
        let s = x.shape().to_vec();
        let shape = match s[..] {
            [b, c, h, w] => vec![b, h * w, c],
            _ => s.clone(),
        };
        self.transpose(x, shape, |buffers| {
            launch::layout::nchw_to_tokens(&s, buffers)
        })
    }

    fn tokens_to_nchw(&self, x: &Tensor<D>, h: usize, w: usize) -> Result<Tensor<D>> {
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
        x: &Tensor<D>,
        w: &Tensor<D>,
        b: Option<&Tensor<D>>,
        grid: (usize, usize),
        stride: usize,
    ) -> Result<Tensor<D>> {
        let (plan, shape) = launch::conv3x3::conv3x3(
            x.shape(),
            w.shape(),
            b.map(DeviceTensor::shape),
            grid,
            stride,
        )?;
        let out = self.alloc(shape)?;
        let p = plan.bind(launch::conv::ConvBuffers {
            out: self.ptr(&out),
            x: self.ptr(x),
            w: self.ptr(w),
            bias: b.map_or(0, |b| self.ptr(b)),
        });
        // SAFETY: the plan checked x = [B, h·w, Cin], w = [Cout, Cin, 3, 3], the bias [Cout], and sized the output,
        // which `out` holds.
        unsafe { self.run(kernel::CONV3X3, &p) }?;
        Ok(out)
    }

    fn depthwise_conv(
        &self,
        x: &Tensor<D>,
        w: &Tensor<D>,
        b: Option<&Tensor<D>>,
        h: usize,
        width: usize,
    ) -> Result<Tensor<D>> {
        let out = self.alloc(x.shape().to_vec())?;
        let p = launch::conv::depthwise_conv(
            x.shape(),
            w.shape(),
            b.map(DeviceTensor::shape),
            (h, width),
            launch::conv::ConvBuffers {
                out: self.ptr(&out),
                x: self.ptr(x),
                w: self.ptr(w),
                bias: b.map_or(0, |b| self.ptr(b)),
            },
        )?;
        // SAFETY: the plan checked x = [B, h·w, C], w = [C, k, k] and the bias [C]; out has x's size.
        unsafe { self.run(kernel::DEPTHWISE_CONV, &p) }?;
        Ok(out)
    }

    fn grouped_linear(&self, x: &Tensor<D>, w: &Tensor<D>, groups: usize) -> Result<Tensor<D>> {
        let (plan, shape) = launch::conv::grouped_linear(x.shape(), w.shape(), groups)?;
        let out = self.alloc(shape)?;
        let p = plan.bind(launch::conv::ConvBuffers {
            out: self.ptr(&out),
            x: self.ptr(x),
            w: self.ptr(w),
            bias: 0,
        });
        // SAFETY: the plan checked x = [.., G·Ci] against w = [Cout, Ci] and sized the output, which `out` holds.
        unsafe { self.run(kernel::GROUPED_LINEAR, &p) }?;
        Ok(out)
    }

    fn repeat_channels(&self, x: &Tensor<D>, r: usize) -> Result<Tensor<D>> {
        let n = x.shape().get(1).copied().unwrap_or(0);
        self.channel_space(x, (1, n), launch::layout::ChannelSpace::Repeat(r))
    }

    fn pixel_shuffle(&self, x: &Tensor<D>, h: usize, w: usize) -> Result<Tensor<D>> {
        self.channel_space(x, (h, w), launch::layout::ChannelSpace::Shuffle(1))
    }

    fn repeat_pixel_shuffle(
        &self,
        x: &Tensor<D>,
        h: usize,
        w: usize,
        r: usize,
    ) -> Result<Tensor<D>> {
        self.channel_space(x, (h, w), launch::layout::ChannelSpace::Shuffle(r))
    }

    fn upsample_nearest2x(&self, x: &Tensor<D>, h: usize, w: usize) -> Result<Tensor<D>> {
        // Nearest ×2 is the pixel shuffle of every channel repeated four times.
        self.channel_space(x, (h, w), launch::layout::ChannelSpace::Shuffle(4))
    }

    fn split_qkv_groups(
        &self,
        t: &Tensor<D>,
        head_dim: usize,
    ) -> Result<(Tensor<D>, Tensor<D>, Tensor<D>)> {
        let (plan, shape) = launch::layout::split_qkv_groups(t.shape(), head_dim)?;
        let (q, k, v) = (
            self.alloc(shape.clone())?,
            self.alloc(shape.clone())?,
            self.alloc(shape)?,
        );
        let p = plan.bind(launch::layout::QkvBuffers {
            x: self.ptr(t),
            q: self.ptr(&q),
            k: self.ptr(&k),
            v: self.ptr(&v),
        });
        // SAFETY: the plan checked t's shape and sized the three outputs, which q, k, v hold.
        unsafe { self.run(kernel::SPLIT_QKV_GROUPS, &p) }?;
        Ok((q, k, v))
    }

    fn pixel_unshuffle(&self, x: &Tensor<D>, h: usize, w: usize) -> Result<Tensor<D>> {
        self.channel_space(x, (h, w), launch::layout::ChannelSpace::Unshuffle)
    }

    fn channel_group_mean(&self, x: &Tensor<D>, g: usize) -> Result<Tensor<D>> {
        let (plan, shape) = launch::layout::channel_group_mean(x.shape(), g)?;
        let out = self.alloc(shape)?;
        let p = plan.bind(launch::layout::PairBuffers {
            out: self.ptr(&out),
            x: self.ptr(x),
        });
        // SAFETY: the plan checked that g divides x's channels and sized the output, which `out` holds.
        unsafe { self.run(kernel::CHANNEL_GROUP_MEAN, &p) }?;
        Ok(out)
    }

    fn concat_channels(&self, a: &Tensor<D>, b: &Tensor<D>) -> Result<Tensor<D>> {
        let (plan, shape) = launch::layout::concat_channels(a.shape(), b.shape())?;
        let out = self.alloc(shape)?;
        let p = plan.bind(launch::layout::ConcatBuffers {
            out: self.ptr(&out),
            a: self.ptr(a),
            b: self.ptr(b),
        });
        // SAFETY: the plan checked that a and b share [B, N] and sized the output, which `out` holds.
        unsafe { self.run(kernel::CONCAT_CHANNELS, &p) }?;
        Ok(out)
    }

    fn upload_state(&self, t: &HostTensor) -> Result<State<D>> {
        let mut buf = self.alloc_f32(t.len())?;
        if !t.is_empty() {
            self.device
                .write(&mut buf, &to_bytes(t.data(), StorageDtype::F32))?;
        }
        Ok(DeviceState {
            buf,
            shape: t.shape().to_vec(),
        })
    }

    fn download_state(&self, s: &State<D>) -> Result<HostTensor> {
        let bytes = self.device.read(&s.buf, s.len() * 4)?;
        HostTensor::new(s.shape.clone(), from_bytes(&bytes, StorageDtype::F32))
    }

    fn state_shape<'a>(&self, s: &'a State<D>) -> &'a [usize] {
        &s.shape
    }

    fn model_input(&self, x: &State<D>, copies: usize, schedule: &State<D>) -> Result<Tensor<D>> {
        let steps = table::steps_of(&schedule.shape)?;
        if let Some(s) = self.host_schedule(schedule)? {
            table::step_index(&s)?;
        }
        let mut shape = x.shape.clone();
        let first = shape
            .first_mut()
            .ok_or_else(|| Error::shape("model_input", "a 0-d sample"))?;
        *first *= copies;
        let out = self.alloc(shape)?;
        let p = launch::sampler::model_input(
            x.len(),
            copies,
            steps,
            launch::sampler::ModelInputBuffers {
                out: self.ptr(&out),
                x: self.state_ptr(x),
                schedule: self.state_ptr(schedule),
            },
        )?;
        // SAFETY: x holds len f32 values and out copies·len storage elements; the schedule holds `steps` rows.
        unsafe { self.run(kernel::MODEL_INPUT, &p) }?;
        Ok(out)
    }

    fn step_sinusoid(
        &self,
        schedule: &State<D>,
        batch: usize,
        channels: usize,
    ) -> Result<Tensor<D>> {
        let steps = table::steps_of(&schedule.shape)?;
        if let Some(s) = self.host_schedule(schedule)? {
            table::step_index(&s)?;
        }
        let out = self.alloc(vec![batch, channels])?;
        let p = launch::sampler::step_sinusoid(
            batch,
            channels,
            steps,
            launch::sampler::SinusoidBuffers {
                out: self.ptr(&out),
                schedule: self.state_ptr(schedule),
            },
        )?;
        // SAFETY: the schedule holds 1 + steps·ROW values (the kernel reads a row only below `steps`); out holds
        // batch·channels elements.
        unsafe { self.run(kernel::STEP_SINUSOID, &p) }?;
        Ok(out)
    }

    fn flow_step(
        &self,
        schedule: &State<D>,
        output: &Tensor<D>,
        guidance: Guidance,
        noise: Option<&State<D>>,
        x: &mut State<D>,
        x0_prev: &mut State<D>,
    ) -> Result<()> {
        if x.shape != x0_prev.shape {
            return Err(Error::shape(
                "flow_step",
                format!(
                    "sample {:?} and x0_prev {:?} differ",
                    x.shape, x0_prev.shape
                ),
            ));
        }
        let steps = table::steps_of(&schedule.shape)?;
        // Where the host can read the schedule, an SCM row without noise is refused here; on a GPU the rows live on
        // the device, and the pipeline passes noise with every SCM schedule.
        if let Some(s) = self.host_schedule(schedule)? {
            let (_, rule) = table::decode_row(&s, table::step_index(&s)?)?;
            if matches!(rule, StepRule::Scm { .. }) && noise.is_none() {
                return Err(Error::shape(
                    "flow_step",
                    "an SCM step needs the noise of every step",
                ));
            }
        }
        let buffers = launch::sampler::FlowStepBuffers {
            x: self.state_ptr(x),
            x0_prev: self.state_ptr(x0_prev),
            output: self.ptr(output),
            schedule: self.state_ptr(schedule),
            noise: noise.map(|n| (self.state_ptr(n), n.len())),
        };
        let p = launch::sampler::flow_step(&x.shape, output.shape(), guidance, steps, buffers)?;
        // SAFETY: the plan checked the output against the sample and the noise (when given) against steps × the
        // sample; x0_prev has the sample's shape; the schedule holds `steps` rows; x and x0_prev are borrowed
        // mutably, so nothing else reads them during the launch.
        unsafe { self.run(kernel::FLOW_STEP, &p) }
    }

    fn advance_schedule(&self, schedule: &mut State<D>) -> Result<()> {
        table::steps_of(&schedule.shape)?;
        if let Some(s) = self.host_schedule(schedule)? {
            table::step_index(&s)?;
        }
        let p = launch::sampler::advance_schedule(self.state_ptr(schedule));
        // SAFETY: the schedule holds at least its index element, borrowed mutably.
        unsafe { self.run(kernel::ADVANCE_SCHEDULE, &p) }
    }

    fn overwrite(&self, dst: &mut Tensor<D>, src: &Tensor<D>) -> Result<()> {
        if dst.shape != src.shape {
            return Err(Error::shape(
                "overwrite",
                format!("copying {:?} into {:?}", src.shape, dst.shape),
            ));
        }
        self.device.copy(&mut dst.buf, &src.buf)
    }

    fn overwrite_state(&self, dst: &mut State<D>, src: &HostTensor) -> Result<()> {
        if dst.shape != src.shape() {
            return Err(Error::shape(
                "overwrite_state",
                format!("copying {:?} into {:?}", src.shape(), dst.shape),
            ));
        }
        if src.is_empty() {
            return Ok(());
        }
        self.device
            .write(&mut dst.buf, &to_bytes(src.data(), StorageDtype::F32))
    }

    fn repeat_steps(
        &self,
        n: usize,
        step: &mut dyn FnMut() -> Result<()>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Option<D::StepGraph>> {
        self.device.repeat_steps(n, step, progress)
    }

    fn replay_step_graph(
        &self,
        graph: &D::StepGraph,
        n: usize,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<()> {
        self.device.replay_step_graph(graph, n, progress)
    }
}
