//! The CPU engine: the pure-Rust reference in f32, the numerical oracle every other engine is tested against.

use std::convert::Infallible;

use crate::cpu;
use crate::engine::{Activation, CausalAttention, Engine};
use crate::error::Result;
use crate::tensor::HostTensor;
use crate::weights::TensorView;

/// The f32 reference engine: tensors are [`HostTensor`]s and every op runs the Rust code of `crate::cpu`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuEngine;

impl Engine for CpuEngine {
    type Tensor = HostTensor;
    type State = HostTensor;
    type StepGraph = Infallible;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn non_finite_in_state(&self, state: &HostTensor) -> Option<usize> {
        Some(state.data().iter().filter(|v| !v.is_finite()).count())
    }

    fn check_fits(&self, stage: &'static str, activation_elements: usize) -> Result<()> {
        // Activations are f32 host tensors.
        crate::memory::check_host_fits(self.name(), stage, 4 * activation_elements as u64)
    }

    fn upload(&self, t: &HostTensor) -> Result<HostTensor> {
        Ok(t.clone())
    }

    fn load(&self, view: &TensorView<'_>, shape: &[usize]) -> Result<HostTensor> {
        view.expect_elements_of(shape)?;
        // 16-bit weights stay 16-bit (half the host memory); the ops widen them per tile, exactly.
        match view.to_half() {
            Some(half) => HostTensor::from_half(shape.to_vec(), half),
            None => HostTensor::new(shape.to_vec(), view.to_f32()?),
        }
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
        cpu::linear::linear(x, w, b, act)
    }

    fn activation(&self, x: &HostTensor, act: Activation) -> Result<HostTensor> {
        cpu::elementwise::activation(x, act)
    }

    fn add(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        cpu::elementwise::add(a, b)
    }

    fn modulation(&self, table: &HostTensor, emb: &HostTensor) -> Result<HostTensor> {
        cpu::elementwise::modulation(table, emb)
    }

    fn layer_norm_modulate(
        &self,
        x: &HostTensor,
        m: &HostTensor,
        shift_row: usize,
        scale_row: usize,
        eps: f32,
    ) -> Result<HostTensor> {
        cpu::norm::layer_norm_modulate(x, m, shift_row, scale_row, eps)
    }

    fn gated_residual(
        &self,
        x: &HostTensor,
        y: &HostTensor,
        m: &HostTensor,
        gate_row: usize,
    ) -> Result<HostTensor> {
        cpu::elementwise::gated_residual(x, y, m, gate_row)
    }

    fn residual_layer_norm_modulate(
        &self,
        x: &HostTensor,
        r: &HostTensor,
        gate: Option<(&HostTensor, usize)>,
        m: &HostTensor,
        (shift_row, scale_row): (usize, usize),
        eps: f32,
    ) -> Result<(HostTensor, HostTensor)> {
        cpu::norm::residual_layer_norm_modulate(x, r, gate, m, (shift_row, scale_row), eps)
    }

    fn rms_norm(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        eps: f32,
    ) -> Result<HostTensor> {
        cpu::norm::rms_norm(x, w, b, eps)
    }

    fn linear_attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        heads: usize,
        eps: f32,
    ) -> Result<HostTensor> {
        cpu::linear_attn::linear_attention(q, k, v, heads, eps)
    }

    fn attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        key_bias: &HostTensor,
        heads: usize,
    ) -> Result<HostTensor> {
        cpu::attention::attention(q, k, v, key_bias, heads)
    }

    fn causal_attention(
        &self,
        q: &HostTensor,
        k: &HostTensor,
        v: &HostTensor,
        key_mask: &HostTensor,
        params: &CausalAttention,
    ) -> Result<HostTensor> {
        cpu::causal_attention::causal_attention(q, k, v, key_mask, params)
    }

    fn rotary(
        &self,
        x: &HostTensor,
        cos: &HostTensor,
        sin: &HostTensor,
        heads: usize,
    ) -> Result<HostTensor> {
        cpu::rotary::rotary(x, cos, sin, heads)
    }

    fn embedding(&self, table: &HostTensor, ids: &[u32], scale: f32) -> Result<HostTensor> {
        cpu::embed::embedding(table, ids, scale)
    }

    fn mul(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        cpu::elementwise::mul(a, b)
    }

    fn rms_norm_plus_one(&self, x: &HostTensor, w: &HostTensor, eps: f32) -> Result<HostTensor> {
        cpu::norm::rms_norm_plus_one(x, w, eps)
    }

    fn dwconv3x3_glu(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: &HostTensor,
        h: usize,
        width: usize,
    ) -> Result<HostTensor> {
        cpu::conv::dwconv3x3_glu(x, w, b, h, width)
    }

    fn nchw_to_tokens(&self, x: &HostTensor) -> Result<HostTensor> {
        cpu::layout::nchw_to_tokens(x)
    }

    fn tokens_to_nchw(&self, x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
        cpu::layout::tokens_to_nchw(x, h, w)
    }

    fn conv3x3(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        grid: (usize, usize),
        stride: usize,
    ) -> Result<HostTensor> {
        // Winograd where it pays (the DC-AE's stage convolutions); elsewhere the direct product, whose order the
        // other engines' kernels share and are checked against.
        if cpu::winograd::pays(x, w, grid, stride) {
            cpu::winograd::conv3x3(x, w, b, grid)
        } else {
            cpu::conv::conv3x3(x, w, b, grid, stride)
        }
    }

    fn depthwise_conv(
        &self,
        x: &HostTensor,
        w: &HostTensor,
        b: Option<&HostTensor>,
        h: usize,
        width: usize,
    ) -> Result<HostTensor> {
        cpu::conv::depthwise_conv(x, w, b, h, width)
    }

    fn grouped_linear(&self, x: &HostTensor, w: &HostTensor, groups: usize) -> Result<HostTensor> {
        cpu::linear::grouped_linear(x, w, groups)
    }

    fn repeat_channels(&self, x: &HostTensor, r: usize) -> Result<HostTensor> {
        cpu::layout::repeat_channels(x, r)
    }

    fn pixel_shuffle(&self, x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
        cpu::layout::pixel_shuffle(x, h, w)
    }

    fn repeat_pixel_shuffle(
        &self,
        x: &HostTensor,
        h: usize,
        w: usize,
        r: usize,
    ) -> Result<HostTensor> {
        cpu::layout::pixel_shuffle(&cpu::layout::repeat_channels(x, r)?, h, w)
    }

    fn upsample_nearest2x(&self, x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
        cpu::layout::upsample_nearest2x(x, h, w)
    }

    fn split_qkv_groups(
        &self,
        t: &HostTensor,
        head_dim: usize,
    ) -> Result<(HostTensor, HostTensor, HostTensor)> {
        cpu::layout::split_qkv_groups(t, head_dim)
    }

    fn pixel_unshuffle(&self, x: &HostTensor, h: usize, w: usize) -> Result<HostTensor> {
        cpu::layout::pixel_unshuffle(x, h, w)
    }

    fn channel_group_mean(&self, x: &HostTensor, g: usize) -> Result<HostTensor> {
        cpu::layout::channel_group_mean(x, g)
    }

    fn concat_channels(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        cpu::layout::concat_channels(a, b)
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
        cpu::sampler::model_input(x, copies, schedule)
    }

    fn step_sinusoid(
        &self,
        schedule: &HostTensor,
        batch: usize,
        channels: usize,
    ) -> Result<HostTensor> {
        cpu::sampler::step_sinusoid(schedule, batch, channels)
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
        cpu::sampler::flow_step(schedule, output, guidance, noise, x, x0_prev)
    }

    fn advance_schedule(&self, schedule: &mut HostTensor) -> Result<()> {
        cpu::sampler::advance_schedule(schedule)
    }

    fn overwrite(&self, dst: &mut HostTensor, src: &HostTensor) -> Result<()> {
        dst.copy_from("overwrite", src)
    }

    fn overwrite_state(&self, dst: &mut HostTensor, src: &HostTensor) -> Result<()> {
        dst.copy_from("overwrite_state", src)
    }
}
