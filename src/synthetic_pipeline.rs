//! A diffusers-layout folder for a published variant whose checkpoints are synthetic ([`crate::weights::synthetic`]):
//! the real configs (the variant's transformer, Gemma-2-2B, DC-AE f32c32), key lists built by
//! the inspector's key tables (src/inspect/keys.rs) from those configs, and a tokenizer taken from elsewhere (the real Gemma tokenizer is
//! not shipped; the caller supplies one). `Pipeline::load` opens it like any folder; only kilobytes are written.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::inspect::{text_encoder_keys, transformer_keys, vae_decoder_keys, KeySet, Variant};
use crate::model::config::{TransformerConfig, VaeConfig};
use crate::model::gemma2::GemmaConfig;
use crate::weights::synthetic::{self, SyntheticSpec};

/// Uniform weights in ±0.02: near the checkpoints' typical scale, so activations stay finite and normal.
const SCALE: f32 = 0.02;

/// `gemma-2-2b` (`text_encoder/config.json` of every Sana repository).
fn gemma_config() -> Value {
    json!({
        "architectures": ["Gemma2Model"],
        "attention_bias": false,
        "attn_logit_softcapping": 50.0,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_attention_heads": 8,
        "num_hidden_layers": 26,
        "num_key_value_heads": 4,
        "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "vocab_size": 256000
    })
}

/// `dc-ae-f32c32-sana-1.x` (docs/numerics/dc-ae.md §2).
fn vae_config() -> Value {
    let blocks = [
        "ResBlock",
        "ResBlock",
        "ResBlock",
        "EfficientViTBlock",
        "EfficientViTBlock",
        "EfficientViTBlock",
    ];
    let channels = [128, 256, 512, 512, 1024, 1024];
    let scales: [&[usize]; 6] = [&[], &[], &[], &[5], &[5], &[5]];
    json!({
        "_class_name": "AutoencoderDC",
        "attention_head_dim": 32,
        "decoder_act_fns": "silu",
        "decoder_block_out_channels": channels,
        "decoder_block_types": blocks,
        "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
        "decoder_norm_types": "rms_norm",
        "decoder_qkv_multiscales": scales,
        "downsample_block_type": "Conv",
        "encoder_block_out_channels": channels,
        "encoder_block_types": blocks,
        "encoder_layers_per_block": [2, 2, 2, 3, 3, 3],
        "encoder_qkv_multiscales": scales,
        "in_channels": 3,
        "latent_channels": 32,
        "scaling_factor": 0.41407,
        "upsample_block_type": "interpolate"
    })
}

/// Sana's Flow-DPM-Solver (docs/numerics/sampling.md §5), or Sprint's SCM sampler.
fn scheduler_config(sprint: bool) -> Value {
    if sprint {
        json!({
            "_class_name": "SCMScheduler",
            "num_train_timesteps": 1000,
            "prediction_type": "trigflow",
            "sigma_data": 0.5
        })
    } else {
        json!({
            "_class_name": "DPMSolverMultistepScheduler",
            "algorithm_type": "dpmsolver++",
            "final_sigmas_type": "zero",
            "flow_shift": 3.0,
            "lower_order_final": true,
            "num_train_timesteps": 1000,
            "prediction_type": "flow_prediction",
            "solver_order": 2,
            "solver_type": "midpoint",
            "use_flow_sigmas": true
        })
    }
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    std::fs::write(path, value.to_string()).map_err(|e| Error::io(path, e))
}

fn write_keys(dir: &Path, stem: &str, tensors: KeySet, seed: u64) -> Result<()> {
    let spec = SyntheticSpec {
        seed,
        scale: SCALE,
        tensors,
    };
    spec.write(&dir.join(synthetic::file_name(stem)))
}

/// Writes the folder for `variant` into `dir` (created if needed), with the tokenizer files of `tokenizer`.
pub fn write(variant: Variant, dir: &Path, tokenizer: &Path, seed: u64) -> Result<()> {
    let config = variant
        .transformer_config()
        .ok_or_else(|| Error::InvalidInput(format!("`{variant}` is not a published variant")))?;
    let sprint = config["guidance_embeds"] == json!(true);

    let path = dir.join("transformer/config.json");
    write_json(&path, &config)?;
    let keys = transformer_keys(&TransformerConfig::load(&path)?);
    write_keys(
        &dir.join("transformer"),
        "diffusion_pytorch_model",
        keys,
        seed,
    )?;

    let path = dir.join("text_encoder/config.json");
    write_json(&path, &gemma_config())?;
    let keys = text_encoder_keys(&GemmaConfig::load(&path)?);
    write_keys(&dir.join("text_encoder"), "model", keys, seed + 1)?;

    let path = dir.join("vae/config.json");
    write_json(&path, &vae_config())?;
    let keys = vae_decoder_keys(&VaeConfig::load(&path)?);
    write_keys(&dir.join("vae"), "diffusion_pytorch_model", keys, seed + 2)?;

    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &scheduler_config(sprint),
    )?;
    let to = dir.join("tokenizer");
    std::fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let from = tokenizer.join(name);
        if from.is_file() {
            std::fs::copy(&from, to.join(name)).map_err(|e| Error::io(&from, e))?;
        }
    }
    Ok(())
}
