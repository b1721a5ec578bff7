//! The CPU reference ops, one file per kernel family (names rhyme with kernels/*.cu and src/launch/*.rs): products
//! against a weight (linear layers, 1×1 and 3×3 convolutions) on [`weight_gemm`], the
//! larger stride-1 3×3 convolutions by [`winograd`], the other GEMM-shaped ops on
//! [`gemm`], the rest loops in f32 (f64 where a long reduction decides agreement with PyTorch), multi-threaded by rows.

pub mod attention;
pub mod causal_attention;
pub mod conv;
#[cfg(target_arch = "x86_64")]
mod dot_kernel;
pub mod elementwise;
pub mod embed;
pub mod exp;
pub mod gemm;
pub mod layout;
pub mod linear;
pub mod linear_attn;
pub mod norm;
pub mod panel_gemm;
#[cfg(target_arch = "x86_64")]
mod panel_kernel;
pub mod parallel;
pub mod rotary;
pub mod sampler;
pub mod tanh;
pub mod weight_gemm;
pub mod winograd;
