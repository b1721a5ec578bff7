//! The kernels of kernels/*.cu, each named once by a typed constant ([`Kernel`]): its family (the `.cu` module the
//! cuda device loads it from), its symbol stem, the params struct its plan fills, and, in the emulation build, its
//! three host entries. The cuda module table ([`Family::ops`]) and the emulation table are both read from here, so
//! a kernel added to a `.cu` file is added to the engines by one line below.

use std::marker::PhantomData;

use super::attention::{self, AttentionParams};
use super::causal_attention::{self, CausalAttentionParams};
use super::conv::{DepthwiseConvParams, DwConvGluParams, GroupedLinearParams};
use super::conv3x3::Conv3x3Params;
use super::elementwise::{
    GatedResidualParams, ModulationParams, PointwiseParams, ResidualNormParams,
};
use super::embed::{EmbeddingParams, RotaryParams};
use super::layout::{
    ChannelSpaceParams, ConcatParams, GroupMeanParams, SplitQkvParams, TransposeParams,
};
use super::linear_attn::LinearAttentionParams;
use super::norm::{LayerNormModulateParams, RmsNormParams};
use super::sampler::{AdvanceParams, FlowStepParams, ModelInputParams, SinusoidParams};
use crate::vocabulary::StorageDtype;

/// One `kernels/*.cu` file: a module of related kernels loaded together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// kernels/norm.cu.
    Norm,
    /// kernels/elementwise.cu.
    Elementwise,
    /// kernels/linear_attn.cu.
    LinearAttn,
    /// kernels/attention.cu (one kernel per head-dimension class).
    Attention,
    /// kernels/conv.cu.
    Conv,
    /// kernels/conv3x3.cu (implicit GEMM, tensor cores for bf16/f16).
    Conv3x3,
    /// kernels/embed.cu (Gemma-2's token and position embeddings).
    Embed,
    /// kernels/causal_attention.cu (one kernel per head-dimension class).
    CausalAttention,
    /// kernels/layout.cu.
    Layout,
    /// kernels/sampler.cu (the device-resident denoising loop).
    Sampler,
}

/// The dtype suffixes of per-dtype kernels (`SANA_KERNEL_PER_DTYPE` in kernels/common.cuh).
pub const DTYPE_SUFFIXES: [&str; 3] = ["f32", "bf16", "f16"];

impl Family {
    /// Every family, in load order.
    pub const ALL: [Family; 10] = [
        Family::Norm,
        Family::Elementwise,
        Family::LinearAttn,
        Family::Attention,
        Family::Conv,
        Family::Conv3x3,
        Family::Layout,
        Family::Embed,
        Family::CausalAttention,
        Family::Sampler,
    ];

    /// The family's kernels compiled once per storage dtype (`<op>_f32`, `<op>_bf16`, `<op>_f16`), from [`KERNELS`].
    pub fn ops(self) -> Vec<&'static str> {
        KERNELS
            .iter()
            .filter(|k| k.family == self && k.per_dtype)
            .map(|k| k.op)
            .collect()
    }

    /// Every kernel symbol of the family, as the cuda device loads them: [`Self::ops`] in each dtype, then the
    /// kernels compiled in one dtype only, named in full.
    pub fn symbols(self) -> Vec<String> {
        let of_family = KERNELS.iter().filter(|k| k.family == self);
        let per_dtype = of_family
            .clone()
            .filter(|k| k.per_dtype)
            .flat_map(|k| DTYPE_SUFFIXES.iter().map(move |d| format!("{}_{d}", k.op)));
        let fixed = of_family.filter(|k| !k.per_dtype).map(|k| k.op.to_string());
        per_dtype.chain(fixed).collect()
    }

    /// The file stem under kernels/.
    pub fn name(self) -> &'static str {
        match self {
            Family::Norm => "norm",
            Family::Elementwise => "elementwise",
            Family::LinearAttn => "linear_attn",
            Family::Attention => "attention",
            Family::Conv => "conv",
            Family::Conv3x3 => "conv3x3",
            Family::Layout => "layout",
            Family::Embed => "embed",
            Family::CausalAttention => "causal_attention",
            Family::Sampler => "sampler",
        }
    }
}

/// A kernel's name, without its params type: what the cuda module table lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelId {
    /// The `.cu` file it is in.
    pub family: Family,
    /// The symbol stem (`layer_norm_modulate`), or the whole symbol of a one-dtype kernel.
    pub op: &'static str,
    /// Compiled once per storage dtype as `<op>_<dtype>`; false for a kernel compiled in one dtype only.
    pub per_dtype: bool,
}

impl KernelId {
    /// The symbol that runs on buffers of `dtype`.
    pub fn symbol(&self, dtype: StorageDtype) -> String {
        if self.per_dtype {
            format!("{}_{}", self.op, DTYPE_SUFFIXES[dtype_index(dtype)])
        } else {
            self.op.to_string()
        }
    }
}

/// `sana_emu_<symbol>(geometry, params)` of the emulation build: runs the whole grid, returns a `sana_emu::Status`.
#[cfg(feature = "emu")]
pub type EmuEntry<P> = unsafe extern "C" fn(*const super::Geometry, *const P) -> std::ffi::c_int;

/// A kernel taking a `P` params struct by value as its only argument.
pub struct Kernel<P: 'static> {
    /// Its name in the cuda module table.
    pub id: KernelId,
    /// Its host entries in the emulation build, by storage dtype (f32, bf16, f16).
    #[cfg(feature = "emu")]
    pub emu: [EmuEntry<P>; 3],
    params: PhantomData<fn(&P)>,
}

impl<P> Clone for Kernel<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for Kernel<P> {}

impl<P> std::fmt::Debug for Kernel<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.id.fmt(f)
    }
}

/// Index of `dtype` in [`DTYPE_SUFFIXES`] and [`Kernel::emu`].
pub fn dtype_index(dtype: StorageDtype) -> usize {
    match dtype {
        StorageDtype::F32 => 0,
        StorageDtype::Bf16 => 1,
        StorageDtype::F16 => 2,
    }
}

/// Declares each kernel's typed constant, [`KERNELS`], and (emulation build) its three host entries
/// `sana_emu_<op>_{f32,bf16,f16}` (one `SANA_EMU_ENTRY` each in kernels/*.cu).
macro_rules! kernels {
    ($(
        $(#[$doc:meta])*
        $name:ident: $family:ident $op:literal ($params:ty) = [$f32:ident, $bf16:ident, $f16:ident];
    )*) => {
        #[cfg(feature = "emu")]
        extern "C" {
            $(
                fn $f32(g: *const super::Geometry, p: *const $params) -> std::ffi::c_int;
                fn $bf16(g: *const super::Geometry, p: *const $params) -> std::ffi::c_int;
                fn $f16(g: *const super::Geometry, p: *const $params) -> std::ffi::c_int;
            )*
        }

        $(
            $(#[$doc])*
            pub const $name: Kernel<$params> = Kernel {
                id: KernelId { family: Family::$family, op: $op, per_dtype: true },
                #[cfg(feature = "emu")]
                emu: [$f32, $bf16, $f16],
                params: PhantomData,
            };
        )*

        /// Every kernel of kernels/*.cu, in the order the families list them.
        pub const KERNELS: &[KernelId] = &[$($name.id,)* LINEAR_ATTN_REDUCE.id];
    };
}

kernels! {
    /// `LayerNorm(x)·(1 + scale) + shift` rows.
    LAYER_NORM_MODULATE: Norm "layer_norm_modulate" (LayerNormModulateParams) =
        [sana_emu_layer_norm_modulate_f32, sana_emu_layer_norm_modulate_bf16, sana_emu_layer_norm_modulate_f16];
    /// diffusers' and Gemma's RMSNorm.
    RMS_NORM: Norm "rms_norm" (RmsNormParams) =
        [sana_emu_rms_norm_f32, sana_emu_rms_norm_bf16, sana_emu_rms_norm_f16];
    /// AdaLN-single modulation rows.
    MODULATION: Elementwise "modulation" (ModulationParams) =
        [sana_emu_modulation_f32, sana_emu_modulation_bf16, sana_emu_modulation_f16];
    /// `a + b`.
    ADD: Elementwise "add" (PointwiseParams) = [sana_emu_add_f32, sana_emu_add_bf16, sana_emu_add_f16];
    /// `a · b`.
    MUL: Elementwise "mul" (PointwiseParams) = [sana_emu_mul_f32, sana_emu_mul_bf16, sana_emu_mul_f16];
    /// `act(x)`.
    ACTIVATION: Elementwise "activation" (PointwiseParams) =
        [sana_emu_activation_f32, sana_emu_activation_bf16, sana_emu_activation_f16];
    /// `x + gate · r`.
    GATED_RESIDUAL: Elementwise "gated_residual" (GatedResidualParams) =
        [sana_emu_gated_residual_f32, sana_emu_gated_residual_bf16, sana_emu_gated_residual_f16];
    /// The residual add fused with the next LayerNorm-modulate.
    GATED_RESIDUAL_LAYER_NORM_MODULATE: Elementwise "gated_residual_layer_norm_modulate" (ResidualNormParams) = [
        sana_emu_gated_residual_layer_norm_modulate_f32,
        sana_emu_gated_residual_layer_norm_modulate_bf16,
        sana_emu_gated_residual_layer_norm_modulate_f16
    ];
    /// Linear attention, pass 1: per-chunk partial `Σ v kᵀ` and `Σ k`.
    LINEAR_ATTN_STATE: LinearAttn "linear_attn_state" (LinearAttentionParams) =
        [sana_emu_linear_attn_state_f32, sana_emu_linear_attn_state_bf16, sana_emu_linear_attn_state_f16];
    /// Linear attention, pass 2: each query against the reduced state.
    LINEAR_ATTN_APPLY: LinearAttn "linear_attn_apply" (LinearAttentionParams) =
        [sana_emu_linear_attn_apply_f32, sana_emu_linear_attn_apply_bf16, sana_emu_linear_attn_apply_f16];
    /// Softmax attention with a key bias, head dimensions up to 32.
    ATTENTION_D32: Attention "attention_d32" (AttentionParams) =
        [sana_emu_attention_d32_f32, sana_emu_attention_d32_bf16, sana_emu_attention_d32_f16];
    /// … up to 72 (Sana 0.6B).
    ATTENTION_D72: Attention "attention_d72" (AttentionParams) =
        [sana_emu_attention_d72_f32, sana_emu_attention_d72_bf16, sana_emu_attention_d72_f16];
    /// … up to 112 (Sana 1.6B).
    ATTENTION_D112: Attention "attention_d112" (AttentionParams) =
        [sana_emu_attention_d112_f32, sana_emu_attention_d112_bf16, sana_emu_attention_d112_f16];
    /// … up to 128.
    ATTENTION_D128: Attention "attention_d128" (AttentionParams) =
        [sana_emu_attention_d128_f32, sana_emu_attention_d128_bf16, sana_emu_attention_d128_f16];
    /// Mix-FFN's depthwise 3×3 conv and GLU.
    DWCONV3X3_GLU: Conv "dwconv3x3_glu" (DwConvGluParams) =
        [sana_emu_dwconv3x3_glu_f32, sana_emu_dwconv3x3_glu_bf16, sana_emu_dwconv3x3_glu_f16];
    /// Depthwise k×k conv.
    DEPTHWISE_CONV: Conv "depthwise_conv" (DepthwiseConvParams) =
        [sana_emu_depthwise_conv_f32, sana_emu_depthwise_conv_bf16, sana_emu_depthwise_conv_f16];
    /// Grouped 1×1 conv.
    GROUPED_LINEAR: Conv "grouped_linear" (GroupedLinearParams) =
        [sana_emu_grouped_linear_f32, sana_emu_grouped_linear_bf16, sana_emu_grouped_linear_f16];
    /// Dense 3×3 conv.
    CONV3X3: Conv3x3 "conv3x3" (Conv3x3Params) =
        [sana_emu_conv3x3_f32, sana_emu_conv3x3_bf16, sana_emu_conv3x3_f16];
    /// NCHW ↔ tokens.
    TRANSPOSE: Layout "transpose" (TransposeParams) =
        [sana_emu_transpose_f32, sana_emu_transpose_bf16, sana_emu_transpose_f16];
    /// Channel repeats and pixel (un)shuffles.
    CHANNEL_SPACE: Layout "channel_space" (ChannelSpaceParams) =
        [sana_emu_channel_space_f32, sana_emu_channel_space_bf16, sana_emu_channel_space_f16];
    /// LiteMLA's q/k/v split.
    SPLIT_QKV_GROUPS: Layout "split_qkv_groups" (SplitQkvParams) =
        [sana_emu_split_qkv_groups_f32, sana_emu_split_qkv_groups_bf16, sana_emu_split_qkv_groups_f16];
    /// Channel concatenation.
    CONCAT_CHANNELS: Layout "concat_channels" (ConcatParams) =
        [sana_emu_concat_channels_f32, sana_emu_concat_channels_bf16, sana_emu_concat_channels_f16];
    /// Mean of channel groups.
    CHANNEL_GROUP_MEAN: Layout "channel_group_mean" (GroupMeanParams) = [
        sana_emu_channel_group_mean_f32, sana_emu_channel_group_mean_bf16, sana_emu_channel_group_mean_f16
    ];
    /// Token embedding rows.
    EMBEDDING: Embed "embedding" (EmbeddingParams) =
        [sana_emu_embedding_f32, sana_emu_embedding_bf16, sana_emu_embedding_f16];
    /// Rotary position embedding.
    ROTARY: Embed "rotary" (RotaryParams) = [sana_emu_rotary_f32, sana_emu_rotary_bf16, sana_emu_rotary_f16];
    /// Causal GQA attention, head dimensions up to 64.
    CAUSAL_ATTENTION_D64: CausalAttention "causal_attention_d64" (CausalAttentionParams) = [
        sana_emu_causal_attention_d64_f32, sana_emu_causal_attention_d64_bf16, sana_emu_causal_attention_d64_f16
    ];
    /// … up to 128.
    CAUSAL_ATTENTION_D128: CausalAttention "causal_attention_d128" (CausalAttentionParams) = [
        sana_emu_causal_attention_d128_f32, sana_emu_causal_attention_d128_bf16, sana_emu_causal_attention_d128_f16
    ];
    /// … up to 256 (Gemma-2).
    CAUSAL_ATTENTION_D256: CausalAttention "causal_attention_d256" (CausalAttentionParams) = [
        sana_emu_causal_attention_d256_f32, sana_emu_causal_attention_d256_bf16, sana_emu_causal_attention_d256_f16
    ];
    /// The transformer's input from the f32 sample.
    MODEL_INPUT: Sampler "model_input" (ModelInputParams) =
        [sana_emu_model_input_f32, sana_emu_model_input_bf16, sana_emu_model_input_f16];
    /// The current step's timestep sinusoid.
    STEP_SINUSOID: Sampler "step_sinusoid" (SinusoidParams) =
        [sana_emu_step_sinusoid_f32, sana_emu_step_sinusoid_bf16, sana_emu_step_sinusoid_f16];
    /// One sampler step in place.
    FLOW_STEP: Sampler "flow_step" (FlowStepParams) =
        [sana_emu_flow_step_f32, sana_emu_flow_step_bf16, sana_emu_flow_step_f16];
    /// The schedule's next row.
    ADVANCE_SCHEDULE: Sampler "advance_schedule" (AdvanceParams) =
        [sana_emu_advance_schedule_f32, sana_emu_advance_schedule_bf16, sana_emu_advance_schedule_f16];
}

#[cfg(feature = "emu")]
extern "C" {
    fn sana_emu_linear_attn_reduce_f32(
        g: *const super::Geometry,
        p: *const LinearAttentionParams,
    ) -> std::ffi::c_int;
}

/// Linear attention, between the passes: the f32 reduction of the partial states, whatever the storage dtype.
pub const LINEAR_ATTN_REDUCE: Kernel<LinearAttentionParams> = Kernel {
    id: KernelId {
        family: Family::LinearAttn,
        op: "linear_attn_reduce_f32",
        per_dtype: false,
    },
    #[cfg(feature = "emu")]
    emu: [
        sana_emu_linear_attn_reduce_f32,
        sana_emu_linear_attn_reduce_f32,
        sana_emu_linear_attn_reduce_f32,
    ],
    params: PhantomData,
};

/// The attention kernel compiled for head-dimension class `class`.
pub fn attention_kernel(class: attention::HeadDimClass) -> Kernel<AttentionParams> {
    use attention::HeadDimClass::*;
    match class {
        D32 => ATTENTION_D32,
        D72 => ATTENTION_D72,
        D112 => ATTENTION_D112,
        D128 => ATTENTION_D128,
    }
}

/// The causal attention kernel compiled for head-dimension class `class`.
pub fn causal_attention_kernel(
    class: causal_attention::HeadDimClass,
) -> Kernel<CausalAttentionParams> {
    use causal_attention::HeadDimClass::*;
    match class {
        D64 => CAUSAL_ATTENTION_D64,
        D128 => CAUSAL_ATTENTION_D128,
        D256 => CAUSAL_ATTENTION_D256,
    }
}
