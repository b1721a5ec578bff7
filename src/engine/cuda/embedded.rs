//! The kernels nvcc compiled at build time (build.rs), embedded in the binary: PTX for compute_80, which the driver
//! JIT-compiles for any GPU from sm_80 on, and an sm_90 cubin where nvcc produced one. Built without nvcc, every
//! constant is `None` and `ptx` returns `Error::KernelsNotBuilt`.

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// One `kernels/*.cu` file: a module of related kernels loaded together. Kernel symbols are `<op>_<dtype>` with
/// dtype `f32`, `bf16` or `f16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// kernels/norm.cu: `layer_norm_modulate`.
    Norm,
    /// kernels/elementwise.cu: `modulation`, `add`, `mul`, `activation`, `gated_residual`,
    /// `gated_residual_layer_norm_modulate`.
    Elementwise,
    /// kernels/linear_attn.cu: `linear_attn_state`, `linear_attn_reduce_f32`, `linear_attn_apply`.
    LinearAttn,
    /// kernels/attention.cu: `attention_d{32,72,112,128}` (by head-dimension class).
    Attention,
    /// kernels/conv.cu: `dwconv3x3_glu`, `depthwise_conv`, `grouped_linear`.
    Conv,
    /// kernels/conv3x3.cu: `conv3x3` (implicit GEMM, tensor cores for bf16/f16).
    Conv3x3,
    /// kernels/embed.cu: `embedding`, `rotary` (Gemma-2's token and position embeddings).
    Embed,
    /// kernels/causal_attention.cu: `causal_attention_d{64,128,256}` (by head-dimension class).
    CausalAttention,
    /// kernels/layout.cu: `transpose` (NCHW ↔ tokens), `channel_space`, `split_qkv_groups`, `concat_channels`,
    /// `channel_group_mean`.
    Layout,
    /// kernels/sampler.cu: `model_input`, `step_sinusoid`, `flow_step`, `advance_schedule` (the device-resident
    /// denoising loop).
    Sampler,
}

/// The dtype suffixes of per-dtype kernels (`SANA_KERNEL_PER_DTYPE` in kernels/common.cuh).
pub const DTYPE_SUFFIXES: [&str; 3] = ["f32", "bf16", "f16"];

impl Family {
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

    /// The kernels of the family, each compiled once per storage dtype as `<op>_f32`, `<op>_bf16` and `<op>_f16`.
    /// The engine loads every one when it loads the module (a missing one is an error there, naming it);
    /// tests/cuda_engine.rs checks this list against the `.entry` names of the PTX.
    pub fn ops(self) -> &'static [&'static str] {
        match self {
            Family::Norm => &["layer_norm_modulate", "rms_norm"],
            Family::Elementwise => &[
                "modulation",
                "add",
                "mul",
                "activation",
                "gated_residual",
                "gated_residual_layer_norm_modulate",
            ],
            Family::LinearAttn => &["linear_attn_state", "linear_attn_apply"],
            Family::Attention => &[
                "attention_d32",
                "attention_d72",
                "attention_d112",
                "attention_d128",
            ],
            Family::Conv => &["dwconv3x3_glu", "depthwise_conv", "grouped_linear"],
            Family::Conv3x3 => &["conv3x3"],
            Family::Layout => &[
                "transpose",
                "channel_space",
                "split_qkv_groups",
                "concat_channels",
                "channel_group_mean",
            ],
            Family::Embed => &["embedding", "rotary"],
            Family::CausalAttention => &[
                "causal_attention_d64",
                "causal_attention_d128",
                "causal_attention_d256",
            ],
            Family::Sampler => &[
                "model_input",
                "step_sinusoid",
                "flow_step",
                "advance_schedule",
            ],
        }
    }

    /// Kernels compiled in one dtype only, named in full (the f32 reduction between linear attention's passes).
    pub fn fixed_symbols(self) -> &'static [&'static str] {
        match self {
            Family::LinearAttn => &["linear_attn_reduce_f32"],
            _ => &[],
        }
    }

    /// Every kernel symbol of the family: [`Self::ops`] in each dtype, then [`Self::fixed_symbols`].
    pub fn symbols(self) -> Vec<String> {
        let per_dtype = self
            .ops()
            .iter()
            .flat_map(|op| DTYPE_SUFFIXES.iter().map(move |d| format!("{op}_{d}")));
        per_dtype
            .chain(self.fixed_symbols().iter().map(|s| s.to_string()))
            .collect()
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

/// PTX text of `family`.
pub fn ptx(family: Family) -> Result<&'static str> {
    match family {
        Family::Norm => NORM_PTX,
        Family::Elementwise => ELEMENTWISE_PTX,
        Family::LinearAttn => LINEAR_ATTN_PTX,
        Family::Attention => ATTENTION_PTX,
        Family::Conv => CONV_PTX,
        Family::Conv3x3 => CONV3X3_PTX,
        Family::Layout => LAYOUT_PTX,
        Family::Embed => EMBED_PTX,
        Family::CausalAttention => CAUSAL_ATTENTION_PTX,
        Family::Sampler => SAMPLER_PTX,
    }
    .ok_or(Error::KernelsNotBuilt)
}

/// sm_90 cubin of `family`, when nvcc produced one (load it on sm_90 devices to skip the PTX JIT).
pub fn sm90_cubin(family: Family) -> Option<&'static [u8]> {
    match family {
        Family::Norm => NORM_SM90_CUBIN,
        Family::Elementwise => ELEMENTWISE_SM90_CUBIN,
        Family::LinearAttn => LINEAR_ATTN_SM90_CUBIN,
        Family::Attention => ATTENTION_SM90_CUBIN,
        Family::Conv => CONV_SM90_CUBIN,
        Family::Conv3x3 => CONV3X3_SM90_CUBIN,
        Family::Layout => LAYOUT_SM90_CUBIN,
        Family::Embed => EMBED_SM90_CUBIN,
        Family::CausalAttention => CAUSAL_ATTENTION_SM90_CUBIN,
        Family::Sampler => SAMPLER_SM90_CUBIN,
    }
}
