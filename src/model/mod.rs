//! Model code, written once and generic over the `Engine`: configs, shared layers, the Gemma-2 text encoder,
//! the Sana DiT, the DC-AE decoder.

pub mod config;
pub mod dc_ae;
pub mod embeddings;
pub mod gemma2;
pub mod layers;
pub mod sana_dit;
pub mod vae_tiling;
