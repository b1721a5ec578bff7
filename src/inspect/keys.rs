//! The tensors each loader reads, name → shape, built from the config exactly as the model code builds its modules
//! (`model/sana_dit.rs`, `model/gemma2.rs`, `model/dc_ae.rs`; docs/numerics/transformer.md §15, text-encoder.md §12,
//! dc-ae.md §8.1). Keep these in step with the loaders: the inspect tests run them on every fixture.

use std::collections::BTreeMap;

use crate::model::config::{TransformerConfig, VaeBlock, VaeConfig};
use crate::model::gemma2::GemmaConfig;

/// Tensor name → shape, sorted by name.
pub type KeySet = BTreeMap<String, Vec<usize>>;

fn put(keys: &mut KeySet, name: impl Into<String>, shape: &[usize]) {
    keys.insert(name.into(), shape.to_vec());
}

/// `{prefix}.weight [out, in]` and, with `bias`, `{prefix}.bias [out]` (`Linear::new`).
fn linear(keys: &mut KeySet, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) {
    put(keys, format!("{prefix}.weight"), &[out_dim, in_dim]);
    if bias {
        put(keys, format!("{prefix}.bias"), &[out_dim]);
    }
}

/// A 1×1 convolution: `{prefix}.weight [out, in, 1, 1]` (`Linear::conv1x1`).
fn conv1x1(keys: &mut KeySet, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) {
    put(keys, format!("{prefix}.weight"), &[out_dim, in_dim, 1, 1]);
    if bias {
        put(keys, format!("{prefix}.bias"), &[out_dim]);
    }
}

/// A 3×3 convolution with bias: `{prefix}.weight [out, in, 3, 3]`, `{prefix}.bias [out]`.
fn conv3x3(keys: &mut KeySet, prefix: &str, in_dim: usize, out_dim: usize, bias: bool) {
    put(keys, format!("{prefix}.weight"), &[out_dim, in_dim, 3, 3]);
    if bias {
        put(keys, format!("{prefix}.bias"), &[out_dim]);
    }
}

/// The keys `SanaTransformer::new` reads (docs/numerics/transformer.md §15, model/sana_dit.rs).
pub fn transformer_keys(cfg: &TransformerConfig) -> KeySet {
    const SINUSOID: usize = 256;
    let (d, f, c) = (cfg.dim(), cfg.ffn_dim(), cfg.in_channels);
    let p = cfg.patch_size;
    let mut k = KeySet::new();
    put(&mut k, "patch_embed.proj.weight", &[d, c, p, p]);
    put(&mut k, "patch_embed.proj.bias", &[d]);
    let embedders: &[&str] = if cfg.guidance_embeds {
        &[
            "time_embed.timestep_embedder",
            "time_embed.guidance_embedder",
        ]
    } else {
        &["time_embed.emb.timestep_embedder"]
    };
    for e in embedders {
        linear(&mut k, &format!("{e}.linear_1"), SINUSOID, d, true);
        linear(&mut k, &format!("{e}.linear_2"), d, d, true);
    }
    linear(&mut k, "time_embed.linear", d, 6 * d, true);
    linear(
        &mut k,
        "caption_projection.linear_1",
        cfg.caption_channels,
        d,
        true,
    );
    linear(&mut k, "caption_projection.linear_2", d, d, true);
    put(&mut k, "caption_norm.weight", &[d]);
    for i in 0..cfg.num_layers {
        let b = format!("transformer_blocks.{i}");
        put(&mut k, format!("{b}.scale_shift_table"), &[6, d]);
        for (attn, kv_in, bias) in [
            ("attn1", d, cfg.attention_bias),
            ("attn2", cfg.cross_attention_dim, true),
        ] {
            linear(&mut k, &format!("{b}.{attn}.to_q"), d, d, bias);
            linear(&mut k, &format!("{b}.{attn}.to_k"), kv_in, d, bias);
            linear(&mut k, &format!("{b}.{attn}.to_v"), kv_in, d, bias);
            linear(&mut k, &format!("{b}.{attn}.to_out.0"), d, d, true);
            if cfg.has_qk_norm() {
                put(&mut k, format!("{b}.{attn}.norm_q.weight"), &[d]);
                put(&mut k, format!("{b}.{attn}.norm_k.weight"), &[d]);
            }
        }
        conv1x1(&mut k, &format!("{b}.ff.conv_inverted"), d, 2 * f, true);
        put(
            &mut k,
            format!("{b}.ff.conv_depth.weight"),
            &[2 * f, 1, 3, 3],
        );
        put(&mut k, format!("{b}.ff.conv_depth.bias"), &[2 * f]);
        conv1x1(&mut k, &format!("{b}.ff.conv_point"), f, d, false);
    }
    put(&mut k, "scale_shift_table", &[2, d]);
    linear(&mut k, "proj_out", d, p * p * cfg.out_channels(), true);
    k
}

/// The keys `Gemma2Model::new` reads, without prefix (docs/numerics/text-encoder.md §12, model/gemma2.rs).
pub fn text_encoder_keys(cfg: &GemmaConfig) -> KeySet {
    let (d, hd, bias) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias);
    let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
    let f = cfg.intermediate_size;
    let mut k = KeySet::new();
    put(&mut k, "embed_tokens.weight", &[cfg.vocab_size, d]);
    for i in 0..cfg.num_hidden_layers {
        let l = format!("layers.{i}");
        for norm in [
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ] {
            put(&mut k, format!("{l}.{norm}.weight"), &[d]);
        }
        linear(&mut k, &format!("{l}.self_attn.q_proj"), d, q, bias);
        linear(&mut k, &format!("{l}.self_attn.k_proj"), d, kv, bias);
        linear(&mut k, &format!("{l}.self_attn.v_proj"), d, kv, bias);
        linear(&mut k, &format!("{l}.self_attn.o_proj"), q, d, bias);
        linear(&mut k, &format!("{l}.mlp.gate_proj"), d, f, false);
        linear(&mut k, &format!("{l}.mlp.up_proj"), d, f, false);
        linear(&mut k, &format!("{l}.mlp.down_proj"), f, d, false);
    }
    put(&mut k, "norm.weight", &[d]);
    k
}

/// The `decoder.*` keys `DcAeDecoder::new` reads (docs/numerics/dc-ae.md §8.1, model/dc_ae.rs).
pub fn vae_decoder_keys(cfg: &VaeConfig) -> KeySet {
    let mut k = KeySet::new();
    let (Some(first), Some(deepest)) = (cfg.stages.first(), cfg.stages.last()) else {
        return k;
    };
    conv3x3(
        &mut k,
        "decoder.conv_in",
        cfg.latent_channels,
        deepest.channels,
        true,
    );
    for (i, stage) in cfg.stages.iter().enumerate() {
        let s = format!("decoder.up_blocks.{i}");
        let c = stage.channels;
        let mut index = 0;
        if let Some(next) = cfg.stages.get(i + 1).filter(|_| cfg.has_upsampler(i)) {
            let cin = next.channels;
            let cout = if cfg.interpolate { c } else { 4 * c };
            conv3x3(&mut k, &format!("{s}.0.conv"), cin, cout, true);
            index = 1;
        }
        for j in index..index + stage.layers {
            let b = format!("{s}.{j}");
            match stage.block {
                VaeBlock::Res => {
                    conv3x3(&mut k, &format!("{b}.conv1"), c, c, true);
                    conv3x3(&mut k, &format!("{b}.conv2"), c, c, false);
                    put(&mut k, format!("{b}.norm.weight"), &[c]);
                    put(&mut k, format!("{b}.norm.bias"), &[c]);
                }
                VaeBlock::EfficientVit => {
                    for name in ["to_q", "to_k", "to_v"] {
                        put(&mut k, format!("{b}.attn.{name}.weight"), &[c, c]);
                    }
                    for (m, &size) in stage.multiscales.iter().enumerate() {
                        let ms = format!("{b}.attn.to_qkv_multiscale.{m}");
                        put(
                            &mut k,
                            format!("{ms}.proj_in.weight"),
                            &[3 * c, 1, size, size],
                        );
                        let hd = cfg.attention_head_dim;
                        put(&mut k, format!("{ms}.proj_out.weight"), &[3 * c, hd, 1, 1]);
                    }
                    let branches = 1 + stage.multiscales.len();
                    linear(&mut k, &format!("{b}.attn.to_out"), branches * c, c, false);
                    put(&mut k, format!("{b}.attn.norm_out.weight"), &[c]);
                    put(&mut k, format!("{b}.attn.norm_out.bias"), &[c]);
                    conv1x1(
                        &mut k,
                        &format!("{b}.conv_out.conv_inverted"),
                        c,
                        8 * c,
                        true,
                    );
                    put(
                        &mut k,
                        format!("{b}.conv_out.conv_depth.weight"),
                        &[8 * c, 1, 3, 3],
                    );
                    put(&mut k, format!("{b}.conv_out.conv_depth.bias"), &[8 * c]);
                    conv1x1(&mut k, &format!("{b}.conv_out.conv_point"), 4 * c, c, false);
                    put(&mut k, format!("{b}.conv_out.norm.weight"), &[c]);
                    put(&mut k, format!("{b}.conv_out.norm.bias"), &[c]);
                }
            }
        }
    }
    put(&mut k, "decoder.norm_out.weight", &[first.channels]);
    put(&mut k, "decoder.norm_out.bias", &[first.channels]);
    conv3x3(
        &mut k,
        "decoder.conv_out",
        first.channels,
        cfg.in_channels,
        true,
    );
    k
}

/// Sum of the shape products.
pub fn parameter_count(keys: &KeySet) -> u64 {
    keys.values().map(|s| elements(s)).sum()
}

/// The shape's product, saturating (shapes come from user files).
pub(super) fn elements(shape: &[usize]) -> u64 {
    shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
}
