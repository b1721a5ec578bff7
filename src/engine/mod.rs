//! The `Engine` trait: the op vocabulary that model code is written in. Model code never sees a device pointer;
//! each engine decides storage (f32 on the CPU, bf16/f16 on the GPU and in emulation) and how ops are fused.
//!
//! Layout conventions, shared by every engine:
//! - tensors are dense and row-major; the last dimension is contiguous;
//! - image features inside the DiT are tokens `[B, N, C]` with `N = h·w`, token `n = i·w + j` (channels-last), so
//!   1×1 convolutions are `linear` and the depthwise 3×3 conv reads a `[B, h, w, C]` view;
//! - linear weights are PyTorch's `[out, in]` (a 1×1 conv weight `[out, in, 1, 1]` is loaded as `[out, in]`).
//! - the samplers' state (`Engine::State`: latents, clean estimate, step schedule, Sprint's noise) is f32 in every
//!   engine, in that token layout, and updated in place, so a step captured as a CUDA graph keeps its addresses.

pub mod counting;
pub mod cpu;
pub mod cuda;
#[cfg(feature = "emu")]
pub mod emu;
pub mod kernel;
mod storage;

pub use crate::vocabulary::{Activation, CausalAttention, StorageDtype};
pub use storage::Storage;

use crate::error::Result;
use crate::tensor::HostTensor;
use crate::vocabulary::StepGraphReport;
use crate::weights::TensorView;

/// A backend that stores tensors and runs the model's ops on them: [`cpu::CpuEngine`] (the f32 reference), or the
/// [`kernel::KernelEngine`] of kernels/*.cu on a device — [`cuda::CudaEngine`] (the GPU) or, with the `emu`
/// feature, `emu::EmuEngine` (the GPU kernels run on the host).
/// Model code is generic over it; the layout conventions are in the module docs.
pub trait Engine: Send + Sync {
    /// The engine's tensor: dense, row-major, in the engine's storage dtype.
    type Tensor: Send + Sync;
    /// An f32 tensor of the sampler (the latents, the previous clean estimate and the step schedule of
    /// src/launch/sampler.rs): diffusers keeps latents in f32 whatever the model's dtype.
    type State: Send + Sync;
    /// A denoising step captured by a device engine and kept by its caller ([`Self::repeat_steps`]), to replay in a
    /// later loop whose inputs are written into the same buffers ([`Self::replay_step_graph`]). Host engines never
    /// make one (`std::convert::Infallible`).
    type StepGraph: Send + Sync;

    /// Short name used in messages and on the command line (`cpu`, `emu`, `cuda`).
    fn name(&self) -> &'static str;

    /// Called by the pipeline before each stage with the activation working set it expects, in elements
    /// (src/memory/working_set.rs). A device engine checks that it fits, failing with [`crate::Error::OutOfDeviceMemory`]
    /// before any work is queued, and keeps that much memory reserved; host engines need nothing.
    fn begin_stage(&self, _stage: &'static str, _activation_elements: usize) -> Result<()> {
        Ok(())
    }

    /// Checks, before a generation allocates anything, that `stage`'s activation working set (in elements, as for
    /// [`Self::begin_stage`]) can fit at all: host engines compare it with the memory the process can still get
    /// ([`crate::Error::OutOfHostMemory`]); a device engine checks in [`Self::begin_stage`], when it knows what is
    /// resident.
    fn check_fits(&self, _stage: &'static str, _activation_elements: usize) -> Result<()> {
        Ok(())
    }

    /// How many values of `state` are NaN or infinite, where the engine can count them without a transfer or a
    /// wait (host engines: the denoising loop then names the first step that produced them); `None` on a device,
    /// whose final latents are checked once after the loop.
    fn non_finite_in_state(&self, _state: &Self::State) -> Option<usize> {
        None
    }

    /// Peak device memory in use since the last [`Self::begin_stage`], for engines with a device.
    fn peak_device_bytes(&self) -> Option<u64> {
        None
    }

    /// How the last denoising loop ran on a device that captures steps as graphs (see [`Self::repeat_steps`]).
    fn step_graph_report(&self) -> Option<StepGraphReport> {
        None
    }

    /// Copies a host tensor in, converting to the engine's storage dtype.
    fn upload(&self, t: &HostTensor) -> Result<Self::Tensor>;

    /// Loads a checkpoint tensor with `shape` (a reshape of the stored shape with the same element count, e.g.
    /// a 1×1 conv weight `[o, i, 1, 1]` as `[o, i]`).
    fn load(&self, view: &TensorView<'_>, shape: &[usize]) -> Result<Self::Tensor>;

    /// Copies a tensor out as f32.
    fn download(&self, t: &Self::Tensor) -> Result<HostTensor>;

    /// The tensor's shape, outermost axis first.
    fn shape<'a>(&self, t: &'a Self::Tensor) -> &'a [usize];

    /// Same data, new shape (element counts must agree).
    fn reshape(&self, t: Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// `act(x · wᵀ + b)` over the last dimension; `x`: `[.., in]`, `w`: `[out, in]`, `b`: `[out]`.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// `act(x)` elementwise, same shape.
    fn activation(&self, x: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;

    /// `a + b`, same shapes.
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// AdaLN-single modulation rows: `table[None] + emb.reshape(B, K, D)`; `table`: [K, D]; `emb`: [B, K·D], or
    /// [B, D] broadcast to every row (the final layer). Result [B, K, D].
    fn modulation(&self, table: &Self::Tensor, emb: &Self::Tensor) -> Result<Self::Tensor>;

    /// `LayerNorm(x) · (1 + m[b, scale_row]) + m[b, shift_row]`, non-affine LayerNorm over the last dim.
    /// `x`: [B, N, D]; `m`: [B, K, D].
    fn layer_norm_modulate(
        &self,
        x: &Self::Tensor,
        m: &Self::Tensor,
        shift_row: usize,
        scale_row: usize,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// `x + m[b, gate_row] · y`; `x`, `y`: [B, N, D]; `m`: [B, K, D].
    fn gated_residual(
        &self,
        x: &Self::Tensor,
        y: &Self::Tensor,
        m: &Self::Tensor,
        gate_row: usize,
    ) -> Result<Self::Tensor>;

    /// Residual add fused with the next norm: `x' = x + m_gate[b, gate_row] · r` (`x + r` when `gate` is `None`),
    /// `z = LayerNorm(x') · (1 + m[b, scale_row]) + m[b, shift_row]`; returns `(x', z)`. `x`, `r`: [B, N, D];
    /// `m`, `m_gate`: [B, K, D]. Equal to `gated_residual`/`add` then `layer_norm_modulate`, in one pass on a GPU.
    fn residual_layer_norm_modulate(
        &self,
        x: &Self::Tensor,
        r: &Self::Tensor,
        gate: Option<(&Self::Tensor, usize)>,
        m: &Self::Tensor,
        rows: (usize, usize),
        eps: f32,
    ) -> Result<(Self::Tensor, Self::Tensor)>;

    /// diffusers `RMSNorm` over the last dim: `x · rsqrt(mean(x²) + eps) · w (+ b)`; in 16-bit storage the
    /// normalised value is rounded before the weight multiply and again before the bias add, as diffusers does.
    fn rms_norm(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// Sana's ReLU linear attention (docs/numerics/transformer.md §8): per head of `q`,`k`,`v` [B, N, heads·d], with
    /// `q, k ← ReLU`, `out_n = (Σ_m v_m k_mᵀ) q_n / ((Σ_m k_m)·q_n + eps)`, accumulated in f32.
    fn linear_attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        heads: usize,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// Softmax attention with an additive key bias: `q` [B, N, heads·d], `k`,`v` [B, L, heads·d], `key_bias` [B, L];
    /// scale `1/√d`.
    fn attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        key_bias: &Self::Tensor,
        heads: usize,
    ) -> Result<Self::Tensor>;

    /// Causal softmax self-attention: `q` [B, L, heads·d], `k`, `v` [B, L, kv_heads·d] (token-major, heads
    /// contiguous within a token), `key_mask` [B, L] (1 = real token, 0 = padding). Query `i` attends key `j` iff
    /// `j ≤ i`, `key_mask[j] ≠ 0` and `j` is inside the window; softmax in f32 over `scale·q·k` (soft-capped
    /// first when asked). A query with no key left returns the mean of all `L` values, as transformers' eager
    /// `finfo.min` mask gives. Out [B, L, heads·d].
    fn causal_attention(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        key_mask: &Self::Tensor,
        params: &CausalAttention,
    ) -> Result<Self::Tensor>;

    /// Rotary position embedding, rotate-half layout: per head of `x` [B, L, heads·d],
    /// `x·cos[l] + rotate_half(x)·sin[l]` with `rotate_half(u) = [−u[d/2..], u[..d/2]]`; `cos`, `sin` [L, d] are
    /// the full-width tables (`cat(freqs, freqs)`) already in storage dtype, as transformers casts them.
    fn rotary(
        &self,
        x: &Self::Tensor,
        cos: &Self::Tensor,
        sin: &Self::Tensor,
        heads: usize,
    ) -> Result<Self::Tensor>;

    /// Row gather `table[ids[i]] · scale` → [ids.len(), D]; `table` [V, D]; an id ≥ V is an error. `scale` is
    /// rounded to the storage dtype first (transformers casts Gemma's `√hidden` normalizer to the weight dtype).
    fn embedding(&self, table: &Self::Tensor, ids: &[u32], scale: f32) -> Result<Self::Tensor>;

    /// `a · b` elementwise, same shapes.
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Gemma's RMSNorm over the last dim: `x · rsqrt(mean(x²) + eps) · (1 + w)`, `w`: `[D]`, stored as an offset from 1.
    /// Statistics, `1 + w` and both products in f32, one rounding to storage at the end (diffusers' `rms_norm`
    /// rounds before the weight multiply, so the two differ in 16-bit storage).
    fn rms_norm_plus_one(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;

    /// Mix-FFN middle (docs/numerics/transformer.md §11): depthwise 3×3 conv (zero padding 1) plus bias over `x` seen
    /// as [B, h, w, 2F], then `value · SiLU(gate)` with value = channels [0, F), gate = [F, 2F). `w`: [2F, 9];
    /// out [B, h·w, F].
    fn dwconv3x3_glu(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        h: usize,
        width: usize,
    ) -> Result<Self::Tensor>;

    /// `[B, C, h, w]` → tokens `[B, h·w, C]`.
    fn nchw_to_tokens(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Tokens `[B, h·w, C]` → `[B, C, h, w]`.
    fn tokens_to_nchw(&self, x: &Self::Tensor, h: usize, w: usize) -> Result<Self::Tensor>;

    /// 3×3 convolution, zero padding 1, stride 1 or 2, over `x` `[B, h·w, Cin]` seen as `[B, h, w, Cin]`; `w`
    /// `[Cout, Cin, 3, 3]` (PyTorch's layout), optional bias `[Cout]`; out `[B, h'·w', Cout]` with
    /// `h' = (h − 1)/stride + 1`.
    fn conv3x3(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        grid: (usize, usize),
        stride: usize,
    ) -> Result<Self::Tensor>;

    /// Depthwise k×k convolution (k odd), zero padding k/2, over `x` `[B, h·w, C]` seen as `[B, h, w, C]`; `w`
    /// `[C, k, k]`, optional bias `[C]`; out `[B, h·w, C]`.
    fn depthwise_conv(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: Option<&Self::Tensor>,
        h: usize,
        width: usize,
    ) -> Result<Self::Tensor>;

    /// Grouped 1×1 convolution without bias: `x` [.., Cin], `w` [Cout, Cin/groups]; group `g` maps its slice of
    /// input channels to its slice of output channels.
    fn grouped_linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        groups: usize,
    ) -> Result<Self::Tensor>;

    /// `[B, N, C]` → `[B, N, C·r]`, each channel repeated `r` times consecutively (PyTorch `repeat_interleave`).
    fn repeat_channels(&self, x: &Self::Tensor, r: usize) -> Result<Self::Tensor>;

    /// Pixel shuffle by 2: `[B, h·w, 4C]` → `[B, 2h·2w, C]`, `out[c, 2i+a, 2j+b] = x[4c+2a+b, i, j]`.
    fn pixel_shuffle(&self, x: &Self::Tensor, h: usize, w: usize) -> Result<Self::Tensor>;

    /// The DC-AE up-block shortcut: pixel shuffle by 2 of the channels each repeated `r` times, in one pass —
    /// `[B, h·w, 4C/r]` → `[B, 2h·2w, C]`, `out[c, 2i+a, 2j+b] = x[(4c+2a+b)/r, i, j]`.
    fn repeat_pixel_shuffle(
        &self,
        x: &Self::Tensor,
        h: usize,
        w: usize,
        r: usize,
    ) -> Result<Self::Tensor>;

    /// Nearest-neighbour upsampling by 2: `[B, h·w, C]` → `[B, 2h·2w, C]`.
    fn upsample_nearest2x(&self, x: &Self::Tensor, h: usize, w: usize) -> Result<Self::Tensor>;

    /// Splits `[B, N, G·3d]` (groups of `[query d | key d | value d]`, the DC-AE's LiteMLA layout) into q, k, v of
    /// `[B, N, G·d]` each, group-major.
    fn split_qkv_groups(
        &self,
        t: &Self::Tensor,
        head_dim: usize,
    ) -> Result<(Self::Tensor, Self::Tensor, Self::Tensor)>;

    /// Pixel unshuffle by 2: `[B, h·w, C]` → `[B, (h/2)·(w/2), 4C]`, `out[4c+2a+b, i, j] = x[c, 2i+a, 2j+b]`.
    fn pixel_unshuffle(&self, x: &Self::Tensor, h: usize, w: usize) -> Result<Self::Tensor>;

    /// Mean of each run of `g` consecutive channels: `[B, N, C]` → `[B, N, C/g]`.
    fn channel_group_mean(&self, x: &Self::Tensor, g: usize) -> Result<Self::Tensor>;

    /// `[B, N, Ca]`, `[B, N, Cb]` → `[B, N, Ca + Cb]`.
    fn concat_channels(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Copies a host tensor in as sampler state (f32, unrounded).
    fn upload_state(&self, t: &HostTensor) -> Result<Self::State>;

    /// Copies sampler state out (f32, exact).
    fn download_state(&self, s: &Self::State) -> Result<HostTensor>;

    /// The state's shape, outermost axis first.
    fn state_shape<'a>(&self, s: &'a Self::State) -> &'a [usize];

    /// The transformer's input: `copies` copies of the f32 sample along the batch (`[x; x]` under CFG), in the
    /// storage dtype; for an SCM step of `schedule`, of the TrigFlow input `(x / σ_d)·k`.
    fn model_input(
        &self,
        x: &Self::State,
        copies: usize,
        schedule: &Self::State,
    ) -> Result<Self::Tensor>;

    /// The `[batch, channels]` sinusoid of the current step's timestep in `schedule`.
    fn step_sinusoid(
        &self,
        schedule: &Self::State,
        batch: usize,
        channels: usize,
    ) -> Result<Self::Tensor>;

    /// One sampler step in place, by the current row of `schedule`: `x` (and `x0_prev`, the clean estimate, for
    /// the DPM-Solver and SCM) advance given the model output, whose batch chunks `guidance` names (`[uncond;
    /// cond]` under CFG, a perturbed-attention copy last under PAG). The output has the sample's layout. SCM schedules also read this step's slice of
    /// `noise` (every step's draw, `[steps, …x]`).
    fn flow_step(
        &self,
        schedule: &Self::State,
        output: &Self::Tensor,
        guidance: crate::vocabulary::Guidance,
        noise: Option<&Self::State>,
        x: &mut Self::State,
        x0_prev: &mut Self::State,
    ) -> Result<()>;

    /// Moves `schedule` to its next step.
    fn advance_schedule(&self, schedule: &mut Self::State) -> Result<()>;

    /// Copies `src` into `dst`'s storage (same shapes): an input of a kept step graph takes a new value at the
    /// address the graph reads.
    fn overwrite(&self, dst: &mut Self::Tensor, src: &Self::Tensor) -> Result<()>;

    /// Copies a host tensor into sampler state of the same shape, in place (as [`Self::overwrite`]).
    fn overwrite_state(&self, dst: &mut Self::State, src: &HostTensor) -> Result<()>;

    /// Runs `step` `n` times, calling `progress(i, n)` as step `i` completes; an error from `progress` (a
    /// cancellation) stops the loop at that step boundary and is returned. `step` must queue the same work every
    /// call, reading whatever changes between steps from state (the schedule), and must not read results back: a
    /// device engine runs the first call, captures the second as a graph and replays it for the rest, then returns
    /// the graph. The caller may keep it, with every buffer the step reads, for [`Self::replay_step_graph`].
    fn repeat_steps(
        &self,
        n: usize,
        step: &mut dyn FnMut() -> Result<()>,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Option<Self::StepGraph>> {
        eager_steps(n, step, progress)?;
        Ok(None)
    }

    /// Runs `n` steps by replaying `graph` alone (no eager step, no capture), reporting as [`Self::repeat_steps`]
    /// does. The buffers it was captured with must be alive and hold this loop's inputs. Engines that never return
    /// a graph keep this default, which no caller can reach.
    fn replay_step_graph(
        &self,
        _graph: &Self::StepGraph,
        _n: usize,
        _progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<()> {
        Err(no_step_graphs(self.name()))
    }
}

/// Runs `step` `n` times, calling `progress(i, n)` after step `i`: the loop of an engine that captures nothing.
pub(crate) fn eager_steps(
    n: usize,
    step: &mut dyn FnMut() -> Result<()>,
    progress: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<()> {
    for i in 0..n {
        step()?;
        progress(i + 1, n)?;
    }
    Ok(())
}

/// What replaying a step graph on an engine that never makes one returns (no caller can reach it).
pub(crate) fn no_step_graphs(engine: &str) -> crate::error::Error {
    crate::error::Error::InvalidInput(format!(
        "the {engine} engine keeps no step graphs to replay"
    ))
}
