//! Activation working set per pipeline stage, from the model configs and the resolution: what the device's memory pool
//! is told to keep reserved (src/engine/cuda/pool.rs) and what a stage is checked against before it starts, so that a
//! run that cannot fit stops with an error naming the stage and the bytes instead of failing midway.
//!
//! Each figure counts the tensors alive at the widest point of one layer (weights are counted where they are
//! loaded); it is an estimate of the live set, not a bound on fragmentation.

use crate::error::{Error, Result};
use crate::model::config::{TransformerConfig, VaeConfig};
use crate::model::gemma2::GemmaConfig;

/// Live activations of one Gemma-2 layer over `batch` prompts of `tokens` tokens, in elements: the residual stream
/// and its norm, plus the larger of attention (q, k, v, output) and the GeGLU MLP (gate, up, product).
pub fn text_encode_elements(cfg: &GemmaConfig, batch: usize, tokens: usize) -> usize {
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    let attention = 2 * q + 2 * kv;
    let mlp = 3 * cfg.intermediate_size;
    batch * tokens * (2 * cfg.hidden_size + attention.max(mlp))
}

/// Live activations of one DiT block for one denoising step, in elements: `batch` includes both CFG halves. Per
/// image token: the residual stream and its modulated norm, plus the larger of self-attention (q, k, v, output) and
/// the Mix-FFN (inverted conv output 2F, gated output F); per text token: the caption embedding and its projection
/// with its cross-attention keys and values.
pub fn denoise_step_elements(
    cfg: &TransformerConfig,
    batch: usize,
    latent_h: usize,
    latent_w: usize,
    text_tokens: usize,
) -> usize {
    let d = cfg.dim();
    let tokens = (latent_h / cfg.patch_size) * (latent_w / cfg.patch_size);
    let image = tokens * (2 * d + (4 * d).max(3 * cfg.ffn_dim()));
    let text = text_tokens * (cfg.caption_channels + 3 * d);
    batch * (image + text)
}

/// Live activations of the DC-AE decoder on an `h × w` latent (one tile when tiling), in elements: the widest
/// stage's feature map times the five maps a block holds at once (input, two conv outputs, norm, residual sum).
pub fn decode_elements(cfg: &VaeConfig, latent_h: usize, latent_w: usize) -> usize {
    const LIVE_MAPS: usize = 5;
    let mut scale = cfg.spatial_factor();
    let mut widest = 0;
    for (i, stage) in cfg.stages.iter().enumerate() {
        widest = widest.max(stage.channels * latent_h * latent_w * scale * scale);
        if cfg.has_upsampler(i) {
            scale /= 2;
        }
    }
    widest * LIVE_MAPS
}

/// Fails with [`Error::OutOfDeviceMemory`] when `stage` needs `needed` bytes and only `free` of `total` are free.
pub fn check_fits(stage: &str, needed: usize, free: usize, total: usize) -> Result<()> {
    if needed <= free {
        return Ok(());
    }
    const MIB: usize = 1 << 20;
    Err(Error::OutOfDeviceMemory {
        stage: stage.to_string(),
        needed_mib: (needed - free).div_ceil(MIB),
        free_mib: free / MIB,
        total_mib: total / MIB,
        hint: hint(stage),
    })
}

/// The lower-memory options that help `stage`.
fn hint(stage: &str) -> &'static str {
    if stage.starts_with("decode") {
        "tile the VAE decode (512-px tiles or smaller), or generate a smaller image"
    } else if stage.starts_with("text") {
        "free other GPU memory, or encode the prompt on another engine"
    } else {
        "lower the batch or generate a smaller image (the text encoder is already freed before denoising unless it \
         was asked to stay)"
    }
}
