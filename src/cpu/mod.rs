//! The CPU reference ops, one file per kernel family (names rhyme with kernels/*.cu and src/launch/*.rs): every
//! GEMM-shaped op on one packed, cache-blocked f32 GEMM ([`gemm`]), the rest loops in f32 (f64 where a long
//! reduction decides agreement with PyTorch), multi-threaded by rows.

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
pub mod parallel;
pub mod rotary;
pub mod sampler;
pub mod tanh;
pub mod weight_gemm;
