//! The kernels nvcc compiled at build time (build.rs), embedded in the binary: PTX for compute_80, which the driver
//! JIT-compiles for any GPU from sm_80 on, and an sm_90 cubin where nvcc produced one. Built without nvcc, every
//! constant is `None` and `ptx` returns `Error::KernelsNotBuilt`.

use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

pub use crate::launch::kernel::{Family, DTYPE_SUFFIXES};

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
