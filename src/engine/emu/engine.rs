//! `EmuEngine`: the [`Engine`] whose ops run the kernels of kernels/*.cu through the host emulator, on values held in
//! a storage dtype. Its tensor is a [`HostTensor`] whose every element is representable in that dtype (each op
//! rounds its output once, as a GPU kernel storing bf16/f16 does), so whole models run on it and can be compared
//! with the CPU engine.
//!
//! Ops without a kernel yet run the CPU reference on the (already rounded) inputs and round the result: `linear`
//! (cuBLASLt's job on the GPU: f32 accumulation, one rounding) and `linear_attention` at head widths other than 32.
//! Gemma-2's ops all run kernels: `embedding` and `rotary` (kernels/embed.cu), `causal_attention`
//! (kernels/causal_attention.cu), `mul` (kernels/elementwise.cu) and `rms_norm_plus_one` (kernels/norm.cu). The
//! DC-AE's ops all run kernels: `conv3x3` (kernels/conv3x3.cu, tensor cores for bf16/f16), `depthwise_conv` and
//! `grouped_linear` (kernels/conv.cu), the channel/space shuffles (`channel_space`) and channel groupings
//! (`split_qkv_groups`, `concat_channels`, `channel_group_mean`) of kernels/layout.cu.

use std::convert::Infallible;

use super::{Storage, StorageDtype};
use crate::cpu;
use crate::engine::{Activation, CausalAttention, Engine};
use crate::error::Result;
use crate::launch::layout::ChannelSpace;
use crate::tensor::HostTensor;
use crate::weights::TensorView;

/// The emulation engine: kernels/*.cu run on the host, on [`HostTensor`]s whose values are rounded to `dtype`.
#[derive(Clone, Copy, Debug)]
pub struct EmuEngine {
    dtype: StorageDtype,
}

impl EmuEngine {
    /// An engine storing activations and weights in `dtype`.
    pub fn new(dtype: StorageDtype) -> Self {
        Self { dtype }
    }

    /// The storage dtype every op rounds its output to.
    pub fn dtype(&self) -> StorageDtype {
        self.dtype
    }

    /// Rounds every element to the storage dtype.
    fn round(&self, t: HostTensor) -> Result<HostTensor> {
        let data = Storage::from_f32(self.dtype, t.data()).to_f32();
        HostTensor::new(t.shape().to_vec(), data)
    }
}

impl Engine for EmuEngine {
    type Tensor = HostTensor;
    type State = HostTensor;
    type StepGraph = Infallible;

    fn name(&self) -> &'static str {
        "emu"
    }

    fn non_finite_in_state(&self, state: &HostTensor) -> Option<usize> {
        Some(state.data().iter().filter(|v| !v.is_finite()).count())
    }

    fn check_fits(&self, stage: &'static str, activation_elements: usize) -> Result<()> {
        // Activations are f32 host tensors.
        crate::memory::check_host_fits(self.name(), stage, 4 * activation_elements as u64)
    }

    fn upload(&self, t: &HostTensor) -> Result<HostTensor> {
        self.round(t.clone())
    }

    fn load(&self, view: &TensorView<'_>, shape: &[usize]) -> Result<HostTensor> {
        view.expect_elements_of(shape)?;
        self.round(HostTensor::new(shape.to_vec(), view.to_f32()?)?)
    }

    fn download(&self, t: &HostTensor) -> Result<HostTensor> {
        Ok(t.clone())
    }

    fn shape<'a>(&self, t: &'a HostTensor) -> &'a [usize] {
        t.shape()
    }

    fn reshape(&self, t: HostTensor, shape: &[usize]) -> Result<HostTensor> {
        t.reshape(shape.to_vec())
    }

    fn linear(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        act: Activation,
    ) -> Result<HostTensor> {
        self.round(cpu::linear::linear(x, w, b, act)?)
    }

    fn activation(&self, x: &HostTensor, act: Activation) -> Result<HostTensor> {
        super::activation(x, act, self.dtype)
    }

    fn add(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        super::add(a, b, self.dtype)
    }

    fn modulation(&self, table: &HostTensor, emb: &HostTensor) -> Result<HostTensor> {
        super::modulation(table, emb, self.dtype)
    }

    fn layer_norm_modulate(
        &self,
        x: &HostTensor,
        m: &HostTensor,
        shift_row: usize,
        scale_row: usize,
        eps: f32,
    ) -> Result<HostTensor> {
        super::layer_norm_modulate(x, m, shift_row, scale_row, eps, self.dtype)
    }

    fn gated_residual(
        &self,
        x: &HostTensor,
        y: &HostTensor,
        m: &HostTensor,
        gate_row: usize,
    ) -> Result<HostTensor> {
        super::gated_residual(x, y, m, gate_row, self.dtype)
    }

    fn residual_layer_norm_modulate(
        &self,
        x: &HostTensor,
        r: &HostTensor,
        gate: Option<(&HostTensor, usize)>,
        m: &HostTensor,
        rows: (usize, usize),
        eps: f32,
    ) -> Result<(HostTensor, HostTensor)> {
        super::gated_residual_layer_norm_modulate(x, r, gate, m, rows, eps, self.dtype)
    }

    fn rms_norm(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        eps: f32,
    ) -> Result<HostTensor> {
        super::rms_norm(x, w, b, false, eps, self.dtype)
    }

    fn linear_attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        heads: usize,
        eps: f32,
    ) -> Result<HostTensor> {
        // The kernels are specialised for head dimension 32 (every published DiT and DC-AE); other widths (the tiny
        // test VAE's 8) take the reference.
        if heads > 0 && q.last_dim() == heads * crate::launch::linear_attn::HEAD_DIM {
            super::linear_attention(q, k, v, heads, eps, self.dtype)
        } else {
            self.round(cpu::linear_attn::linear_attention(q, k, v, heads, eps)?)
        }
    }

    fn attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        key_bias: &HostTensor,
        heads: usize,
    ) -> Result<HostTensor> {
        super::attention(q, k, v, key_bias, heads, self.dtype)
    }

    fn causal_attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        key_mask: &HostTensor,
        params: &CausalAttention,
    ) -> Result<HostTensor> {
        super::causal_attention(q, k, v, key_mask, params, self.dtype)
    }

    fn rotary(
        &self,
        x: &HostTensor,
        cos: &HostTensor,
        sin: &HostTensor,
        heads: usize,
    ) -> Result<HostTensor> {
        super::rotary(x, cos, sin, heads, self.dtype)
    }

    fn embedding(&self, table: &HostTensor, ids: &[u32], scale: f32) -> Result<HostTensor> {
        super::embedding(table, ids, scale, self.dtype)
    }

    fn mul(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        super::mul(a, b, self.dtype)
    }

    fn rms_norm_plus_one(&self, x: &HostTensor, w: &HostTensor, eps: f32) -> Result<HostTensor> {
        super::rms_norm(x, w, None, true, eps, self.dtype)
    }

    fn dwconv3x3_glu(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: &HostTensor,
        h: usize,
        width: usize,
    ) -> Result<HostTensor> {
        super::dwconv3x3_glu(x, w, b, h, width, self.dtype)
    }

    fn nchw_to_tokens(&self, x: &HostTensor) -> Result<HostTensor> {
        super::nchw_to_tokens(x, self.dtype)
    }

    fn tokens_to_nchw(&self, x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
        super::tokens_to_nchw(x, h, w, self.dtype)
    }

    fn conv3x3(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        grid: (usize, usize),
        stride: usize,
    ) -> Result<HostTensor> {
        super::conv3x3(x, w, b, grid, stride, self.dtype)
    }

    fn depthwise_conv(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        h: usize,
        width: usize,
    ) -> Result<HostTensor> {
        super::depthwise_conv(x, w, b, h, width, self.dtype)
    }

    fn grouped_linear(&self, x: &HostTensor, w: &HostTensor, groups: usize) -> Result<HostTensor> {
        super::grouped_linear(x, w, groups, self.dtype)
    }

    fn repeat_channels(&self, x: &HostTensor, r: usize) -> Result<HostTensor> {
        let n = x.shape().get(1).copied().unwrap_or(0);
        super::channel_space(x, (1, n), ChannelSpace::Repeat(r), self.dtype)
    }

    fn pixel_shuffle(&self, x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
        super::channel_space(x, (h, w), ChannelSpace::Shuffle(1), self.dtype)
    }

    fn repeat_pixel_shuffle(
        &self,
        x: &HostTensor,
        h: usize,
        w: usize,
        r: usize,
    ) -> Result<HostTensor> {
        super::channel_space(x, (h, w), ChannelSpace::Shuffle(r), self.dtype)
    }

    fn upsample_nearest2x(&self, x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
        // Nearest ×2 is the pixel shuffle of every channel repeated four times.
        super::channel_space(x, (h, w), ChannelSpace::Shuffle(4), self.dtype)
    }

    fn split_qkv_groups(
        &self,
        t: &HostTensor,
        head_dim: usize,
    ) -> Result<(HostTensor, HostTensor, HostTensor)> {
        super::split_qkv_groups(t, head_dim, self.dtype)
    }

    fn pixel_unshuffle(&self, x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
        super::channel_space(x, (h, w), ChannelSpace::Unshuffle, self.dtype)
    }

    fn channel_group_mean(&self, x: &HostTensor, g: usize) -> Result<HostTensor> {
        super::channel_group_mean(x, g, self.dtype)
    }

    fn concat_channels(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        super::concat_channels(a, b, self.dtype)
    }

    fn upload_state(&self, t: &HostTensor) -> Result<HostTensor> {
        Ok(t.clone())
    }

    fn download_state(&self, s: &HostTensor) -> Result<HostTensor> {
        Ok(s.clone())
    }

    fn state_shape<'a>(&self, s: &'a HostTensor) -> &'a [usize] {
        s.shape()
    }

    fn model_input(
        &self,
        x: &HostTensor,
        copies: usize,
        schedule: &HostTensor,
    ) -> Result<HostTensor> {
        super::model_input(x, copies, schedule, self.dtype)
    }

    fn step_sinusoid(
        &self,
        schedule: &HostTensor,
        batch: usize,
        channels: usize,
    ) -> Result<HostTensor> {
        super::step_sinusoid(schedule, batch, channels, self.dtype)
    }

    fn flow_step(
        &self,
        schedule: &HostTensor,
        output: &HostTensor,
        guidance: crate::vocabulary::Guidance,
        noise: Option<&HostTensor>,
        x: &mut HostTensor,
        x0_prev: &mut HostTensor,
    ) -> Result<()> {
        super::flow_step(schedule, output, guidance, noise, x, x0_prev, self.dtype)
    }

    fn advance_schedule(&self, schedule: &mut HostTensor) -> Result<()> {
        super::advance_schedule(schedule, self.dtype)
    }

    fn overwrite(&self, dst: &mut HostTensor, src: &HostTensor) -> Result<()> {
        dst.copy_from("overwrite", src)
    }

    fn overwrite_state(&self, dst: &mut HostTensor, src: &HostTensor) -> Result<()> {
        dst.copy_from("overwrite_state", src)
    }
}
