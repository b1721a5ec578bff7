//! Which published Sana transformer a config describes (docs/numerics/transformer.md §2.2), from its numbers alone.

use std::fmt;

use crate::model::config::TransformerConfig;

/// The published transformers (docs/numerics/transformer.md §2.2), or `Custom` for any other config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Sana600M512,
    Sana600M1024,
    Sana1600M512,
    Sana1600M1024,
    Sana1600M2048,
    Sana1600M4096,
    Sana15_1600M1024,
    Sana15_4800M1024,
    Sprint600M1024,
    Sprint1600M1024,
    Custom,
}

/// One row of the published table: the numbers that tell the variants apart.
struct Published {
    variant: Variant,
    name: &'static str,
    repo: &'static str,
    width: usize,
    layers: usize,
    cross_heads: usize,
    cross_head_dim: usize,
    sample_size: usize,
    interpolation_scale: Option<f64>,
    qk_norm: bool,
    guidance_embeds: bool,
}

const fn row(
    variant: Variant,
    name: &'static str,
    repo: &'static str,
    (width, layers, cross_heads, cross_head_dim): (usize, usize, usize, usize),
    (sample_size, interpolation_scale): (usize, Option<f64>),
    (qk_norm, guidance_embeds): (bool, bool),
) -> Published {
    Published {
        variant,
        name,
        repo,
        width,
        layers,
        cross_heads,
        cross_head_dim,
        sample_size,
        interpolation_scale,
        qk_norm,
        guidance_embeds,
    }
}

const SMALL: (usize, usize, usize, usize) = (1152, 28, 16, 72);
const LARGE: (usize, usize, usize, usize) = (2240, 20, 20, 112);
const XL: (usize, usize, usize, usize) = (2240, 60, 20, 112);
const PX512: (usize, Option<f64>) = (16, None);
const PX1024: (usize, Option<f64>) = (32, None);
const SANA: (bool, bool) = (false, false);
const SANA15: (bool, bool) = (true, false);
const SPRINT: (bool, bool) = (true, true);

#[rustfmt::skip]
const PUBLISHED: [Published; 10] = [
    row(Variant::Sana600M512, "sana-600m-512", "Sana_600M_512px_diffusers", SMALL, PX512, SANA),
    row(Variant::Sana600M1024, "sana-600m-1024", "Sana_600M_1024px_diffusers", SMALL, PX1024, SANA),
    row(Variant::Sana1600M512, "sana-1600m-512", "Sana_1600M_512px_diffusers", LARGE, PX512, SANA),
    row(Variant::Sana1600M1024, "sana-1600m-1024", "Sana_1600M_1024px_diffusers", LARGE, PX1024, SANA),
    row(Variant::Sana1600M2048, "sana-1600m-2048", "Sana_1600M_2Kpx_BF16_diffusers", LARGE, (64, Some(1.0)), SANA),
    row(Variant::Sana1600M4096, "sana-1600m-4096", "Sana_1600M_4Kpx_BF16_diffusers", LARGE, (128, Some(2.0)), SANA),
    row(Variant::Sana15_1600M1024, "sana1.5-1600m-1024", "SANA1.5_1.6B_1024px_diffusers", LARGE, PX1024, SANA15),
    row(Variant::Sana15_4800M1024, "sana1.5-4800m-1024", "SANA1.5_4.8B_1024px_diffusers", XL, PX1024, SANA15),
    row(Variant::Sprint600M1024, "sana-sprint-600m-1024", "Sana_Sprint_0.6B_1024px_diffusers", SMALL, PX1024, SPRINT),
    row(Variant::Sprint1600M1024, "sana-sprint-1600m-1024", "Sana_Sprint_1.6B_1024px_diffusers", LARGE, PX1024, SPRINT),
];

impl Variant {
    /// Every published variant, in table order.
    pub fn published() -> impl Iterator<Item = Variant> {
        PUBLISHED.iter().map(|p| p.variant)
    }

    /// The stable name (`sana-1600m-1024`, `sana1.5-4800m-1024`, `sana-sprint-600m-1024`, …, or `custom`).
    pub fn name(self) -> &'static str {
        self.row().map_or("custom", |p| p.name)
    }

    /// The diffusers repository it is published as (`Efficient-Large-Model/…`).
    pub fn repo(self) -> Option<String> {
        self.row()
            .map(|p| format!("Efficient-Large-Model/{}", p.repo))
    }

    /// The published variant named `name` (as [`Self::name`] spells it).
    pub fn from_name(name: &str) -> Option<Variant> {
        PUBLISHED.iter().find(|p| p.name == name).map(|p| p.variant)
    }

    /// The `transformer/config.json` of the published variant (the values [`Self::detect`] recognises, the common
    /// ones of every official checkpoint elsewhere); `None` for `Custom`.
    pub fn transformer_config(self) -> Option<serde_json::Value> {
        let p = self.row()?;
        Some(serde_json::json!({
            "_class_name": "SanaTransformer2DModel",
            "attention_bias": false,
            "attention_head_dim": 32,
            "caption_channels": 2304,
            "cross_attention_dim": p.width,
            "cross_attention_head_dim": p.cross_head_dim,
            "guidance_embeds": p.guidance_embeds,
            "guidance_embeds_scale": 0.1,
            "in_channels": 32,
            "interpolation_scale": p.interpolation_scale,
            "mlp_ratio": 2.5,
            "norm_elementwise_affine": false,
            "norm_eps": 1e-6,
            "num_attention_heads": p.width / 32,
            "num_cross_attention_heads": p.cross_heads,
            "num_layers": p.layers,
            "out_channels": 32,
            "patch_size": 1,
            "qk_norm": if p.qk_norm { Some("rms_norm_across_heads") } else { None },
            "sample_size": p.sample_size,
            "timestep_scale": if p.guidance_embeds { 1000.0 } else { 1.0 },
        }))
    }

    fn row(self) -> Option<&'static Published> {
        PUBLISHED.iter().find(|p| p.variant == self)
    }

    /// The published variant whose numbers `cfg` has exactly, or `Custom`. Besides the table's columns, the values
    /// common to every official checkpoint must hold (32 latent channels, head dim 32, Gemma-2-2B captions of 2304,
    /// mlp_ratio 2.5, patch 1, no attention bias, no affine block norms).
    pub fn detect(cfg: &TransformerConfig) -> Variant {
        let common = cfg.in_channels == 32
            && cfg.out_channels() == 32
            && cfg.attention_head_dim == 32
            && cfg.caption_channels == 2304
            && cfg.mlp_ratio == 2.5
            && cfg.patch_size == 1
            && !cfg.attention_bias
            && !cfg.norm_elementwise_affine
            && cfg.cross_attention_dim == cfg.dim();
        let matches = |p: &&Published| {
            cfg.dim() == p.width
                && cfg.num_layers == p.layers
                && cfg.num_cross_attention_heads == p.cross_heads
                && cfg.cross_attention_head_dim == p.cross_head_dim
                && cfg.sample_size == p.sample_size
                && cfg.interpolation_scale == p.interpolation_scale
                && cfg.has_qk_norm() == p.qk_norm
                && cfg.guidance_embeds == p.guidance_embeds
        };
        match PUBLISHED.iter().find(matches) {
            Some(p) if common => p.variant,
            _ => Variant::Custom,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The family the transformer's switches place it in, whatever its size: `guidance_embeds` makes it Sana-Sprint,
/// q/k norm without it Sana 1.5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Sana,
    Sana15,
    Sprint,
}

impl Family {
    pub fn of(cfg: &TransformerConfig) -> Family {
        if cfg.guidance_embeds {
            Family::Sprint
        } else if cfg.has_qk_norm() {
            Family::Sana15
        } else {
            Family::Sana
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Sana => "Sana",
            Family::Sana15 => "Sana 1.5",
            Family::Sprint => "Sana-Sprint",
        })
    }
}

/// The transformer's identity: the detected variant and the numbers it was detected from.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerInfo {
    pub variant: Variant,
    pub family: Family,
    /// Model width D = heads × head_dim.
    pub width: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub cross_heads: usize,
    pub cross_head_dim: usize,
    pub caption_channels: usize,
    pub in_channels: usize,
    pub sample_size: usize,
    /// Set: 2-D sin-cos position embedding with this interpolation scale (the 2K/4K models).
    pub interpolation_scale: Option<f64>,
    /// `qk_norm = "rms_norm_across_heads"` (Sana 1.5 and Sprint).
    pub qk_norm: bool,
    /// Sprint's timestep + guidance embedding.
    pub guidance_embeds: bool,
}

impl TransformerInfo {
    pub fn from_config(cfg: &TransformerConfig) -> Self {
        Self {
            variant: Variant::detect(cfg),
            family: Family::of(cfg),
            width: cfg.dim(),
            heads: cfg.num_attention_heads,
            head_dim: cfg.attention_head_dim,
            layers: cfg.num_layers,
            cross_heads: cfg.num_cross_attention_heads,
            cross_head_dim: cfg.cross_attention_head_dim,
            caption_channels: cfg.caption_channels,
            in_channels: cfg.in_channels,
            sample_size: cfg.sample_size,
            interpolation_scale: cfg.interpolation_scale,
            qk_norm: cfg.has_qk_norm(),
            guidance_embeds: cfg.guidance_embeds,
        }
    }
}
