//! Model code, written once and generic over the `Engine`: configs, shared layers, the Gemma-2 text encoder,
//! the Sana DiT, the DC-AE decoder.

pub mod config;
pub mod dc_ae;
pub mod embeddings;
pub mod gemma2;
pub mod layers;
pub mod sana_dit;
pub mod vae_tiling;

/// Receives a model's named intermediates, for golden tests and debugging: the DiT's (`patch_embed`,
/// `blocks.3.attn1`, …), Gemma's (`hidden_states.{i}`, transformers' `output_hidden_states` numbering), the DC-AE's
/// (`decoder.conv_in`, `decoder.up_blocks.{i}`, …).
pub type Trace<'a, T> = &'a mut dyn FnMut(&str, &T) -> crate::error::Result<()>;
