//! The CPU reference ops, one file per kernel family (names rhyme with kernels/*.cu and src/launch/*.rs). Simple
//! loops in f32 (f64 where a long reduction decides agreement with PyTorch), multi-threaded by rows.

pub mod attention;
pub mod causal_attention;
pub mod conv;
pub mod elementwise;
pub mod embed;
pub mod layout;
pub mod linear;
pub mod linear_attn;
pub mod norm;
pub mod parallel;
pub mod rotary;
pub mod sampler;
