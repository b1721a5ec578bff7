//! An instrumented engine: runs every op on an inner engine and tallies its [`Cost`] from the shapes the op
//! actually received. It checks the config-only model of [`crate::cost::stages`] (tests/cost_model.rs) and tells
//! what a real run did (`sana-run bench`).

use std::convert::Infallible;
use std::sync::Mutex;

use crate::cost::Cost;
use crate::engine::{Activation, CausalAttention, Engine};
use crate::error::Result;
use crate::tensor::HostTensor;
use crate::weights::TensorView;

/// An [`Engine`] that forwards every op to `E` and adds the op's flops and elements moved to a
/// running [`Cost`].
pub struct CountingEngine<E: Engine> {
    inner: E,
    tally: Mutex<Cost>,
}

impl<E: Engine> CountingEngine<E> {
    /// Wraps `inner` with an empty tally.
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            tally: Mutex::new(Cost::default()),
        }
    }

    /// The cost since the last `take` (or creation), and a fresh tally.
    pub fn take(&self) -> Cost {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cost> {
        // A panic while counting leaves a valid (partial) tally: keep using it.
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn numel(&self, t: &E::Tensor) -> usize {
        self.inner.shape(t).iter().product()
    }

    fn state_numel(&self, s: &E::State) -> usize {
        self.inner.state_shape(s).iter().product()
    }

    fn dims(&self, t: &E::Tensor) -> Vec<usize> {
        self.inner.shape(t).to_vec()
    }

    /// Tallies a pass over `inputs` producing `out`.
    fn pass(&self, inputs: &[&E::Tensor], out: &E::Tensor) {
        let read = inputs.iter().map(|t| self.numel(t)).sum();
        let written = self.numel(out);
        self.lock().pass(read, written);
    }

    /// Runs a pass-type op and tallies it.
    fn passed(&self, inputs: &[&E::Tensor], out: Result<E::Tensor>) -> Result<E::Tensor> {
        let out = out?;
        self.pass(inputs, &out);
        Ok(out)
    }
}

/// `[.., last]` → (rows, last).
fn rows_last(shape: &[usize]) -> (usize, usize) {
    let last = shape.last().copied().unwrap_or(1);
    (shape.iter().product::<usize>() / last.max(1), last)
}

impl<E: Engine> Engine for CountingEngine<E> {
    type Tensor = E::Tensor;
    type State = E::State;
    // Replaying a kept graph would run steps the tally never sees: each loop captures afresh.
    type StepGraph = Infallible;

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn begin_stage(&self, stage: &'static str, activation_elements: usize) -> Result<()> {
        self.inner.begin_stage(stage, activation_elements)
    }

    fn peak_device_bytes(&self) -> Option<u64> {
        self.inner.peak_device_bytes()
    }

    fn step_graph_report(&self) -> Option<crate::vocabulary::StepGraphReport> {
        self.inner.step_graph_report()
    }

    fn upload(&self, t: &HostTensor) -> Result<E::Tensor> {
        self.inner.upload(t)
    }

    fn load(&self, view: &TensorView<'_>, shape: &[usize]) -> Result<E::Tensor> {
        self.inner.load(view, shape)
    }

    fn download(&self, t: &E::Tensor) -> Result<HostTensor> {
        self.inner.download(t)
    }

    fn shape<'a>(&self, t: &'a E::Tensor) -> &'a [usize] {
        self.inner.shape(t)
    }

    fn reshape(&self, t: E::Tensor, shape: &[usize]) -> Result<E::Tensor> {
        self.inner.reshape(t, shape)
    }

    fn linear(
        &self,
        x: &E::Tensor,
        w: &E::Tensor,
        b: Option<&E::Tensor>,
        act: Activation,
    ) -> Result<E::Tensor> {
        let out = self.inner.linear(x, w, b, act)?;
        let (rows, in_dim) = rows_last(self.inner.shape(x));
        let out_dim = self.inner.shape(w)[0];
        self.lock().linear(rows, in_dim, out_dim, b.is_some());
        Ok(out)
    }

    fn activation(&self, x: &E::Tensor, act: Activation) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.activation(x, act))
    }

    fn add(&self, a: &E::Tensor, b: &E::Tensor) -> Result<E::Tensor> {
        self.passed(&[a, b], self.inner.add(a, b))
    }

    fn modulation(&self, table: &E::Tensor, emb: &E::Tensor) -> Result<E::Tensor> {
        self.passed(&[table, emb], self.inner.modulation(table, emb))
    }

    fn layer_norm_modulate(
        &self,
        x: &E::Tensor,
        m: &E::Tensor,
        shift_row: usize,
        scale_row: usize,
        eps: f32,
    ) -> Result<E::Tensor> {
        self.passed(
            &[x, m],
            self.inner
                .layer_norm_modulate(x, m, shift_row, scale_row, eps),
        )
    }

    fn gated_residual(
        &self,
        x: &E::Tensor,
        y: &E::Tensor,
        m: &E::Tensor,
        gate_row: usize,
    ) -> Result<E::Tensor> {
        self.passed(&[x, y, m], self.inner.gated_residual(x, y, m, gate_row))
    }

    fn residual_layer_norm_modulate(
        &self,
        x: &E::Tensor,
        r: &E::Tensor,
        gate: Option<(&E::Tensor, usize)>,
        m: &E::Tensor,
        rows: (usize, usize),
        eps: f32,
    ) -> Result<(E::Tensor, E::Tensor)> {
        let (x2, z) = self
            .inner
            .residual_layer_norm_modulate(x, r, gate, m, rows, eps)?;
        let read =
            self.numel(x) + self.numel(r) + gate.map_or(0, |(g, _)| self.numel(g)) + self.numel(m);
        let written = self.numel(&x2) + self.numel(&z);
        self.lock().pass(read, written);
        Ok((x2, z))
    }

    fn rms_norm(
        &self,
        x: &E::Tensor,
        w: &E::Tensor,
        b: Option<&E::Tensor>,
        eps: f32,
    ) -> Result<E::Tensor> {
        let out = self.inner.rms_norm(x, w, b, eps)?;
        let inputs: Vec<&E::Tensor> = [Some(x), Some(w), b].into_iter().flatten().collect();
        self.pass(&inputs, &out);
        Ok(out)
    }

    fn linear_attention(
        &self,
        q: &E::Tensor,
        k: &E::Tensor,
        v: &E::Tensor,
        heads: usize,
        eps: f32,
    ) -> Result<E::Tensor> {
        let out = self.inner.linear_attention(q, k, v, heads, eps)?;
        let s = self.dims(q);
        self.lock()
            .linear_attention(s[0], s[1], heads, s[2] / heads.max(1));
        Ok(out)
    }

    fn attention(
        &self,
        q: &E::Tensor,
        k: &E::Tensor,
        v: &E::Tensor,
        key_bias: &E::Tensor,
        heads: usize,
    ) -> Result<E::Tensor> {
        let out = self.inner.attention(q, k, v, key_bias, heads)?;
        let (sq, sk) = (self.dims(q), self.dims(k));
        self.lock()
            .attention(sq[0], (sq[1], sk[1]), heads, sq[2] / heads.max(1));
        Ok(out)
    }

    fn causal_attention(
        &self,
        q: &E::Tensor,
        k: &E::Tensor,
        v: &E::Tensor,
        key_mask: &E::Tensor,
        params: &CausalAttention,
    ) -> Result<E::Tensor> {
        let out = self.inner.causal_attention(q, k, v, key_mask, params)?;
        let s = self.dims(q);
        let d = s[2] / params.heads.max(1);
        self.lock().causal_attention(
            s[0],
            s[1],
            (params.heads, params.kv_heads, d),
            params.window,
        );
        Ok(out)
    }

    fn rotary(
        &self,
        x: &E::Tensor,
        cos: &E::Tensor,
        sin: &E::Tensor,
        heads: usize,
    ) -> Result<E::Tensor> {
        self.passed(&[x, cos, sin], self.inner.rotary(x, cos, sin, heads))
    }

    fn embedding(&self, table: &E::Tensor, ids: &[u32], scale: f32) -> Result<E::Tensor> {
        // A gather reads only the rows it copies.
        let out = self.inner.embedding(table, ids, scale)?;
        let n = self.numel(&out);
        self.lock().pass(n, n);
        Ok(out)
    }

    fn mul(&self, a: &E::Tensor, b: &E::Tensor) -> Result<E::Tensor> {
        self.passed(&[a, b], self.inner.mul(a, b))
    }

    fn rms_norm_plus_one(&self, x: &E::Tensor, w: &E::Tensor, eps: f32) -> Result<E::Tensor> {
        self.passed(&[x, w], self.inner.rms_norm_plus_one(x, w, eps))
    }

    fn dwconv3x3_glu(
        &self,
        x: &E::Tensor,
        w: &E::Tensor,
        b: &E::Tensor,
        h: usize,
        width: usize,
    ) -> Result<E::Tensor> {
        let out = self.inner.dwconv3x3_glu(x, w, b, h, width)?;
        let (rows, channels) = rows_last(self.inner.shape(x));
        self.lock().dwconv3x3_glu(rows, channels);
        Ok(out)
    }

    fn nchw_to_tokens(&self, x: &E::Tensor) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.nchw_to_tokens(x))
    }

    fn tokens_to_nchw(&self, x: &E::Tensor, h: usize, w: usize) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.tokens_to_nchw(x, h, w))
    }

    fn conv3x3(
        &self,
        x: &E::Tensor,
        w: &E::Tensor,
        b: Option<&E::Tensor>,
        grid: (usize, usize),
        stride: usize,
    ) -> Result<E::Tensor> {
        let out = self.inner.conv3x3(x, w, b, grid, stride)?;
        let (sx, so, sw) = (self.dims(x), self.dims(&out), self.dims(w));
        self.lock()
            .conv3x3(sx[0], (sx[1], so[1]), (sw[1], sw[0]), b.is_some());
        Ok(out)
    }

    fn depthwise_conv(
        &self,
        x: &E::Tensor,
        w: &E::Tensor,
        b: Option<&E::Tensor>,
        h: usize,
        width: usize,
    ) -> Result<E::Tensor> {
        let out = self.inner.depthwise_conv(x, w, b, h, width)?;
        let (rows, channels) = rows_last(self.inner.shape(x));
        let k = self.inner.shape(w)[1];
        self.lock().depthwise_conv(rows, channels, k, b.is_some());
        Ok(out)
    }

    fn grouped_linear(&self, x: &E::Tensor, w: &E::Tensor, groups: usize) -> Result<E::Tensor> {
        let out = self.inner.grouped_linear(x, w, groups)?;
        let (rows, cin) = rows_last(self.inner.shape(x));
        let cout = self.inner.shape(w)[0];
        self.lock().grouped_linear(rows, cin, cout, groups);
        Ok(out)
    }

    fn repeat_channels(&self, x: &E::Tensor, r: usize) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.repeat_channels(x, r))
    }

    fn pixel_shuffle(&self, x: &E::Tensor, h: usize, w: usize) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.pixel_shuffle(x, h, w))
    }

    fn repeat_pixel_shuffle(
        &self,
        x: &E::Tensor,
        h: usize,
        w: usize,
        r: usize,
    ) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.repeat_pixel_shuffle(x, h, w, r))
    }

    fn upsample_nearest2x(&self, x: &E::Tensor, h: usize, w: usize) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.upsample_nearest2x(x, h, w))
    }

    fn split_qkv_groups(
        &self,
        t: &E::Tensor,
        head_dim: usize,
    ) -> Result<(E::Tensor, E::Tensor, E::Tensor)> {
        let (q, k, v) = self.inner.split_qkv_groups(t, head_dim)?;
        let written = self.numel(&q) + self.numel(&k) + self.numel(&v);
        self.lock().pass(self.numel(t), written);
        Ok((q, k, v))
    }

    fn pixel_unshuffle(&self, x: &E::Tensor, h: usize, w: usize) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.pixel_unshuffle(x, h, w))
    }

    fn channel_group_mean(&self, x: &E::Tensor, g: usize) -> Result<E::Tensor> {
        self.passed(&[x], self.inner.channel_group_mean(x, g))
    }

    fn concat_channels(&self, a: &E::Tensor, b: &E::Tensor) -> Result<E::Tensor> {
        self.passed(&[a, b], self.inner.concat_channels(a, b))
    }

    fn upload_state(&self, t: &HostTensor) -> Result<E::State> {
        self.inner.upload_state(t)
    }

    fn download_state(&self, s: &E::State) -> Result<HostTensor> {
        self.inner.download_state(s)
    }

    fn state_shape<'a>(&self, s: &'a E::State) -> &'a [usize] {
        self.inner.state_shape(s)
    }

    fn model_input(&self, x: &E::State, copies: usize, schedule: &E::State) -> Result<E::Tensor> {
        let out = self.inner.model_input(x, copies, schedule)?;
        self.lock().pass(self.state_numel(x), self.numel(&out));
        Ok(out)
    }

    fn step_sinusoid(
        &self,
        schedule: &E::State,
        batch: usize,
        channels: usize,
    ) -> Result<E::Tensor> {
        let out = self.inner.step_sinusoid(schedule, batch, channels)?;
        // One timestep read from the schedule.
        self.lock().pass(1, self.numel(&out));
        Ok(out)
    }

    fn flow_step(
        &self,
        schedule: &E::State,
        output: &E::Tensor,
        guidance: crate::vocabulary::Guidance,
        noise: Option<&E::State>,
        x: &mut E::State,
        x0_prev: &mut E::State,
    ) -> Result<()> {
        self.inner
            .flow_step(schedule, output, guidance, noise, x, x0_prev)?;
        // Reads the output, x, x0_prev and (SCM) this step's noise; writes x and x0_prev (the rule's coefficients
        // are not counted).
        let len = self.state_numel(x);
        let noise = if noise.is_some() { len } else { 0 };
        self.lock()
            .pass(self.numel(output) + 2 * len + noise, 2 * len);
        Ok(())
    }

    fn advance_schedule(&self, schedule: &mut E::State) -> Result<()> {
        self.inner.advance_schedule(schedule)?;
        self.lock().pass(1, 1);
        Ok(())
    }

    fn overwrite(&self, dst: &mut E::Tensor, src: &E::Tensor) -> Result<()> {
        self.inner.overwrite(dst, src)
    }

    fn overwrite_state(&self, dst: &mut E::State, src: &HostTensor) -> Result<()> {
        self.inner.overwrite_state(dst, src)
    }

    fn repeat_steps(
        &self,
        n: usize,
        step: &mut dyn FnMut() -> Result<()>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Option<Infallible>> {
        self.inner.repeat_steps(n, step, progress)?;
        Ok(None)
    }
}
