//! Model code, written once and generic over the `Engine`: configs, shared layers, the Sana DiT.

pub mod config;
pub mod embeddings;
pub mod layers;
pub mod sana_dit;
