//! Configs of the diffusers folders, parsed leniently: real `scheduler_config.json` files contain the bare tokens
//! `-Infinity`/`Infinity`/`NaN`, which strict JSON forbids. Unknown fields are ignored (diffusers writes
//! `_class_name`, `_diffusers_version`, …); known fields with values we cannot honour are errors naming the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::vocabulary::Activation;

/// Reads `path` and parses it as `T`, accepting non-finite number tokens (they become `null`).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&strict_json(&text)).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Rewrites the bare tokens `-Infinity`, `Infinity` and `NaN` (outside strings) as `null`.
fn strict_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = c != '"' || escaped;
            escaped = c == '\\' && !escaped;
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t))
        {
            out.push_str("null");
            rest = &rest[token.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn config_error(path: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Most layers any config may declare: 4× the deepest published model (Gemma-2-2B's 26, the 1.6B DiT's 20), so a
/// hostile count fails here instead of in an allocation or a load loop.
pub(crate) const MAX_LAYERS: usize = 1024;

/// `value` must be finite and above `min` (or at least `min` with `inclusive`): the arithmetic it enters is
/// meaningless otherwise.
pub(crate) fn check_positive(path: &Path, field: &str, value: f64, inclusive: bool) -> Result<()> {
    let ok = value.is_finite() && if inclusive { value >= 0.0 } else { value > 0.0 };
    if ok {
        return Ok(());
    }
    let want = if inclusive { "≥ 0" } else { "> 0" };
    Err(config_error(
        path,
        field,
        format!("{value} is not a finite number {want}"),
    ))
}

/// A layer count in `1..=MAX_LAYERS`.
pub(crate) fn check_layers(path: &Path, field: &str, layers: usize) -> Result<()> {
    if (1..=MAX_LAYERS).contains(&layers) {
        return Ok(());
    }
    Err(config_error(
        path,
        field,
        format!("{layers} layers: this crate reads between 1 and {MAX_LAYERS}"),
    ))
}

/// Widest channel count, head count or head size any config may declare: 16× the widest published tensor side
/// (Gemma-2-2B's 9216-wide MLP is the largest), so products of widths cannot overflow and a hostile width fails
/// here instead of in a shape computation or an allocation.
pub(crate) const MAX_WIDTH: usize = 1 << 16;

/// Most VAE stages: a spatial factor of 2¹¹ (the published DC-AEs have 4 to 6 stages, factor 8 to 32).
pub(crate) const MAX_VAE_STAGES: usize = 12;

/// A width in `1..=MAX_WIDTH`.
pub(crate) fn check_width(path: &Path, field: &str, width: usize) -> Result<()> {
    if (1..=MAX_WIDTH).contains(&width) {
        return Ok(());
    }
    Err(config_error(
        path,
        field,
        format!("{width}: this crate reads widths between 1 and {MAX_WIDTH}"),
    ))
}

/// A per-stage list of a VAE: `1..=MAX_VAE_STAGES` stages, each with at most `MAX_LAYERS` layers (0 allowed) and
/// `channels` widths in `1..=MAX_WIDTH`.
fn check_vae_stages(
    path: &Path,
    (channels_field, channels): (&str, &[usize]),
    (layers_field, layers): (&str, &[usize]),
) -> Result<()> {
    if channels.is_empty() || channels.len() > MAX_VAE_STAGES {
        return Err(config_error(
            path,
            channels_field,
            format!(
                "{} stages: this crate reads between 1 and {MAX_VAE_STAGES}",
                channels.len()
            ),
        ));
    }
    for &c in channels {
        check_width(path, channels_field, c)?;
    }
    if let Some(&l) = layers.iter().find(|&&l| l > MAX_LAYERS) {
        return Err(config_error(
            path,
            layers_field,
            format!("{l} layers in a stage: this crate reads at most {MAX_LAYERS}"),
        ));
    }
    Ok(())
}

/// A config field that diffusers accepts either as one value for every stage or as a per-stage list.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PerStage<T> {
    /// One value for every stage.
    One(T),
    /// One value per stage, in stage order.
    Each(Vec<T>),
}

impl<T: Clone> PerStage<T> {
    /// The value of stage `i` of `n`; a list of the wrong length is an error naming `field`.
    fn get(&self, path: &Path, field: &str, n: usize) -> Result<Vec<T>> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); n]),
            Self::Each(v) if v.len() == n => Ok(v.clone()),
            Self::Each(v) => Err(config_error(
                path,
                field,
                format!("{} entries for {n} stages", v.len()),
            )),
        }
    }
}

/// `vae/config.json` of `AutoencoderDC` (docs/numerics/dc-ae.md §2), decoder side. Defaults are the diffusers class
/// defaults, which differ from the Sana VAE's config: a loader must read the file.
#[derive(Clone, Debug, Deserialize)]
struct RawVaeConfig {
    #[serde(default = "d3")]
    in_channels: usize,
    #[serde(default = "d32")]
    latent_channels: usize,
    #[serde(default = "d32")]
    attention_head_dim: usize,
    #[serde(default = "default_block_type")]
    decoder_block_types: PerStage<String>,
    #[serde(default = "default_block_out_channels")]
    decoder_block_out_channels: Vec<usize>,
    #[serde(default = "default_decoder_layers")]
    decoder_layers_per_block: Vec<usize>,
    #[serde(default = "default_multiscales")]
    decoder_qkv_multiscales: Vec<Vec<usize>>,
    #[serde(default = "default_rms_norm")]
    decoder_norm_types: PerStage<String>,
    #[serde(default = "default_silu")]
    decoder_act_fns: PerStage<String>,
    #[serde(default = "default_pixel_shuffle")]
    upsample_block_type: String,
    #[serde(default = "default_true")]
    decoder_in_shortcut: bool,
    #[serde(default = "default_relu")]
    decoder_conv_act_fn: String,
    #[serde(default = "d1f")]
    scaling_factor: f64,
    #[serde(default = "default_block_type")]
    encoder_block_types: PerStage<String>,
    #[serde(default = "default_block_out_channels")]
    encoder_block_out_channels: Vec<usize>,
    #[serde(default = "default_encoder_layers")]
    encoder_layers_per_block: Vec<usize>,
    #[serde(default = "default_multiscales")]
    encoder_qkv_multiscales: Vec<Vec<usize>>,
    #[serde(default = "default_pixel_unshuffle")]
    downsample_block_type: String,
    #[serde(default = "default_true")]
    encoder_out_shortcut: bool,
}

fn default_encoder_layers() -> Vec<usize> {
    vec![2, 2, 2, 2, 2, 2]
}
fn default_pixel_unshuffle() -> String {
    "pixel_unshuffle".into()
}
fn d3() -> usize {
    3
}
fn default_block_type() -> PerStage<String> {
    PerStage::One("ResBlock".into())
}
fn default_block_out_channels() -> Vec<usize> {
    vec![128, 256, 512, 512, 1024, 1024]
}
fn default_decoder_layers() -> Vec<usize> {
    vec![3, 3, 3, 3, 3, 3]
}
fn default_multiscales() -> Vec<Vec<usize>> {
    vec![vec![], vec![], vec![], vec![5], vec![5], vec![5]]
}
fn default_rms_norm() -> PerStage<String> {
    PerStage::One("rms_norm".into())
}
fn default_silu() -> PerStage<String> {
    PerStage::One("silu".into())
}
fn default_pixel_shuffle() -> String {
    "pixel_shuffle".into()
}
fn default_true() -> bool {
    true
}
fn default_relu() -> String {
    "relu".into()
}

/// The kind of block a DC-AE stage is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VaeBlock {
    /// 3×3 conv, activation, 3×3 conv, channel RMSNorm, residual.
    Res,
    /// LiteMLA linear attention then GLUMBConv, each with its residual.
    EfficientVit,
}

/// One decoder stage, as diffusers builds `decoder.up_blocks.{i}`.
#[derive(Clone, Debug, PartialEq)]
pub struct VaeStage {
    /// Channels the stage works at (its entry of `decoder_block_out_channels` / `encoder_block_out_channels`).
    pub channels: usize,
    /// Blocks in the stage (`decoder_layers_per_block` / `encoder_layers_per_block`); 0 means no blocks and no
    /// resampler.
    pub layers: usize,
    /// The kind of block (`decoder_block_types` / `encoder_block_types`).
    pub block: VaeBlock,
    /// The ResBlock activation (`decoder_act_fns`; always SiLU in the encoder).
    pub activation: Activation,
    /// Kernel sizes of the extra LiteMLA q/k/v branches (`*_qkv_multiscales`, e.g. `[5]`); used by EfficientViT
    /// blocks only.
    pub multiscales: Vec<usize>,
}

/// The validated decoder configuration.
#[derive(Clone, Debug)]
pub struct VaeConfig {
    /// The `vae/config.json` this was read from.
    pub source: PathBuf,
    /// `in_channels`: image channels (3; diffusers default 3).
    pub in_channels: usize,
    /// `latent_channels`: latent channels C (32; diffusers default 32).
    pub latent_channels: usize,
    /// `attention_head_dim`: head size of every LiteMLA (32; diffusers default 32).
    pub attention_head_dim: usize,
    /// Stages in storage order (stage `i` works at 1/2^i of the image size); decoding runs them last to first.
    pub stages: Vec<VaeStage>,
    /// `true`: up-samplers are nearest ×2 + 3×3 conv (Sana); `false`: 3×3 conv to 4× channels + pixel shuffle.
    pub interpolate: bool,
    /// `decoder_in_shortcut` (default true): `conv_in` adds each latent channel repeated to the deepest stage's
    /// width.
    pub in_shortcut: bool,
    /// `decoder_conv_act_fn` (default `"relu"`): the activation before `conv_out`.
    pub conv_activation: Activation,
    /// `scaling_factor` (0.41407 for Sana; diffusers default 1.0): diffusion latents are `scaling_factor · z`, so
    /// the pipeline divides by it before decoding.
    pub scaling_factor: f32,
    /// The encoder side of the same file.
    pub encoder: VaeEncoderConfig,
}

/// The encoder side of `vae/config.json` (docs/numerics/dc-ae.md §5). Its blocks always use channel RMSNorm and SiLU.
#[derive(Clone, Debug)]
pub struct VaeEncoderConfig {
    /// Stages in execution order; stage `i` ends with a down-sampler to stage `i + 1`'s channels.
    pub stages: Vec<VaeStage>,
    /// `true`: down-samplers are a stride-2 3×3 conv (Sana's `"Conv"`); `false`: 3×3 conv + pixel unshuffle.
    pub strided_conv: bool,
    /// `encoder_out_shortcut` (default true): `conv_out` adds the mean of each group of adjacent channels.
    pub out_shortcut: bool,
}

impl VaeEncoderConfig {
    /// Stage `i` ends with a down-sampler iff it is not the deepest and has layers (diffusers' rule).
    pub fn has_downsampler(&self, i: usize) -> bool {
        i + 1 < self.stages.len() && self.stages[i].layers > 0
    }
}

fn activation_named(path: &Path, field: &str, name: &str) -> Result<Activation> {
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "relu" => Ok(Activation::Relu),
        other => Err(config_error(
            path,
            field,
            format!("activation `{other}` is not supported (silu or relu)"),
        )),
    }
}

fn encoder_config(path: &Path, raw: &RawVaeConfig) -> Result<VaeEncoderConfig> {
    let err = |field: &str, reason: String| config_error(path, field, reason);
    check_vae_stages(
        path,
        (
            "encoder_block_out_channels",
            &raw.encoder_block_out_channels,
        ),
        ("encoder_layers_per_block", &raw.encoder_layers_per_block),
    )?;
    let n = raw.encoder_block_out_channels.len();
    if n == 0 || raw.encoder_layers_per_block.len() != n || raw.encoder_qkv_multiscales.len() != n {
        return Err(err(
            "encoder_block_out_channels",
            format!(
                "{n} stages, {} layer counts, {} multiscale lists: all must agree and be non-empty",
                raw.encoder_layers_per_block.len(),
                raw.encoder_qkv_multiscales.len()
            ),
        ));
    }
    if raw.encoder_layers_per_block[0] == 0 {
        return Err(err(
            "encoder_layers_per_block",
            "a first stage without layers (conv_in as a down-sampler) is not supported".into(),
        ));
    }
    let types = raw
        .encoder_block_types
        .get(path, "encoder_block_types", n)?;
    let mut stages = Vec::with_capacity(n);
    for (i, kind) in types.iter().enumerate() {
        let block = match kind.as_str() {
            "ResBlock" => VaeBlock::Res,
            "EfficientViTBlock" => VaeBlock::EfficientVit,
            other => {
                return Err(err(
                    "encoder_block_types",
                    format!("`{other}` is not a DC-AE block (ResBlock or EfficientViTBlock)"),
                ))
            }
        };
        let channels = raw.encoder_block_out_channels[i];
        if block == VaeBlock::EfficientVit
            && (raw.attention_head_dim == 0 || !channels.is_multiple_of(raw.attention_head_dim))
        {
            return Err(err(
                "attention_head_dim",
                format!(
                    "{} does not divide encoder stage {i}'s {channels} channels",
                    raw.attention_head_dim
                ),
            ));
        }
        stages.push(VaeStage {
            channels,
            layers: raw.encoder_layers_per_block[i],
            block,
            activation: Activation::Silu,
            multiscales: raw.encoder_qkv_multiscales[i].clone(),
        });
    }
    for i in 0..n - 1 {
        let (cin, cout) = (stages[i].channels, stages[i + 1].channels);
        if stages[i].layers > 0 && (4 * cin) % cout != 0 {
            return Err(err(
                "encoder_block_out_channels",
                format!("a down-sampler {cin} → {cout} has no space-to-channel shortcut"),
            ));
        }
    }
    let last = stages[n - 1].channels;
    if raw.encoder_out_shortcut && (raw.latent_channels == 0 || last % raw.latent_channels != 0) {
        return Err(err(
            "latent_channels",
            format!(
                "{} does not divide the encoder's last {last} channels",
                raw.latent_channels
            ),
        ));
    }
    Ok(VaeEncoderConfig {
        stages,
        strided_conv: raw.downsample_block_type != "pixel_unshuffle",
        out_shortcut: raw.encoder_out_shortcut,
    })
}

impl VaeConfig {
    /// Reads and validates `path` (a `vae/config.json`).
    pub fn load(path: &Path) -> Result<Self> {
        let raw: RawVaeConfig = read_config(path)?;
        let n = raw.decoder_block_out_channels.len();
        let err = |field: &str, reason: String| config_error(path, field, reason);
        check_vae_stages(
            path,
            (
                "decoder_block_out_channels",
                &raw.decoder_block_out_channels,
            ),
            ("decoder_layers_per_block", &raw.decoder_layers_per_block),
        )?;
        check_width(path, "latent_channels", raw.latent_channels)?;
        check_width(path, "in_channels", raw.in_channels)?;
        check_width(path, "attention_head_dim", raw.attention_head_dim)?;
        for (field, lists) in [
            ("decoder_qkv_multiscales", &raw.decoder_qkv_multiscales),
            ("encoder_qkv_multiscales", &raw.encoder_qkv_multiscales),
        ] {
            // Published DC-AEs use kernel 5 at most; a hostile one would size a depthwise convolution.
            if let Some(k) = lists.iter().flatten().find(|&&k| k > 63) {
                return Err(err(field, format!("kernel size {k}: at most 63 is read")));
            }
        }
        if raw.decoder_layers_per_block.len() != n {
            return Err(err(
                "decoder_layers_per_block",
                format!(
                    "{} entries for {n} stages",
                    raw.decoder_layers_per_block.len()
                ),
            ));
        }
        if raw.decoder_qkv_multiscales.len() != n {
            return Err(err(
                "decoder_qkv_multiscales",
                format!(
                    "{} entries for {n} stages",
                    raw.decoder_qkv_multiscales.len()
                ),
            ));
        }
        if raw.decoder_layers_per_block[0] == 0 {
            return Err(err(
                "decoder_layers_per_block",
                "a first stage without layers (conv_out as an up-sampler) is not supported".into(),
            ));
        }
        let types = raw
            .decoder_block_types
            .get(path, "decoder_block_types", n)?;
        let norms = raw.decoder_norm_types.get(path, "decoder_norm_types", n)?;
        let acts = raw.decoder_act_fns.get(path, "decoder_act_fns", n)?;
        let mut stages = Vec::with_capacity(n);
        for i in 0..n {
            if norms[i] != "rms_norm" {
                return Err(err(
                    "decoder_norm_types",
                    format!(
                        "`{}` is not supported (the Sana VAE uses rms_norm)",
                        norms[i]
                    ),
                ));
            }
            let block = match types[i].as_str() {
                "ResBlock" => VaeBlock::Res,
                "EfficientViTBlock" => VaeBlock::EfficientVit,
                other => {
                    return Err(err(
                        "decoder_block_types",
                        format!("`{other}` is not a DC-AE block (ResBlock or EfficientViTBlock)"),
                    ))
                }
            };
            let channels = raw.decoder_block_out_channels[i];
            let multiscales = raw.decoder_qkv_multiscales[i].clone();
            if block == VaeBlock::EfficientVit
                && (raw.attention_head_dim == 0 || !channels.is_multiple_of(raw.attention_head_dim))
            {
                return Err(err(
                    "attention_head_dim",
                    format!(
                        "{} does not divide stage {i}'s {channels} channels",
                        raw.attention_head_dim
                    ),
                ));
            }
            if multiscales.iter().any(|k| k % 2 == 0) {
                return Err(err(
                    "decoder_qkv_multiscales",
                    format!("stage {i}: kernel sizes {multiscales:?} must be odd"),
                ));
            }
            stages.push(VaeStage {
                channels,
                layers: raw.decoder_layers_per_block[i],
                block,
                activation: activation_named(path, "decoder_act_fns", &acts[i])?,
                multiscales,
            });
        }
        let interpolate = match raw.upsample_block_type.as_str() {
            "interpolate" => true,
            "pixel_shuffle" => false,
            other => {
                return Err(err(
                    "upsample_block_type",
                    format!("`{other}` is not supported (interpolate or pixel_shuffle)"),
                ))
            }
        };
        let last = stages[n - 1].channels;
        if raw.decoder_in_shortcut && (raw.latent_channels == 0 || last % raw.latent_channels != 0)
        {
            return Err(err(
                "latent_channels",
                format!(
                    "{} does not divide the deepest stage's {last} channels",
                    raw.latent_channels
                ),
            ));
        }
        for i in 0..n - 1 {
            let (cin, cout) = (stages[i + 1].channels, stages[i].channels);
            if stages[i].layers > 0 && (4 * cout) % cin != 0 {
                return Err(err(
                    "decoder_block_out_channels",
                    format!("an up-sampler {cin} → {cout} has no channel-to-space shortcut"),
                ));
            }
        }
        let encoder = encoder_config(path, &raw)?;
        check_positive(path, "scaling_factor", raw.scaling_factor, false)?;
        Ok(Self {
            encoder,
            source: path.to_path_buf(),
            in_channels: raw.in_channels,
            latent_channels: raw.latent_channels,
            attention_head_dim: raw.attention_head_dim,
            stages,
            interpolate,
            in_shortcut: raw.decoder_in_shortcut,
            conv_activation: activation_named(
                path,
                "decoder_conv_act_fn",
                &raw.decoder_conv_act_fn,
            )?,
            scaling_factor: raw.scaling_factor as f32,
        })
    }

    /// Image pixels per latent pixel along each axis: 2 per up-sampler (32 for f32c32).
    pub fn spatial_factor(&self) -> usize {
        1 << self.upsamplers()
    }

    /// Stage `i` starts with an up-sampler iff it is not the deepest and has layers (diffusers' rule).
    pub fn has_upsampler(&self, i: usize) -> bool {
        i + 1 < self.stages.len() && self.stages[i].layers > 0
    }

    fn upsamplers(&self) -> usize {
        (0..self.stages.len())
            .filter(|&i| self.has_upsampler(i))
            .count()
    }
}

/// `transformer/config.json` of `SanaTransformer2DModel` (docs/numerics/transformer.md §2). Each field is the
/// same-named key; absent keys take the diffusers class default.
#[derive(Clone, Debug, Deserialize)]
pub struct TransformerConfig {
    /// Latent channels C of the input (default 32).
    #[serde(default = "d32")]
    pub in_channels: usize,
    /// Latent channels of the predicted velocity (default null, meaning `in_channels`); must equal `in_channels`.
    #[serde(default)]
    pub out_channels: Option<usize>,
    /// Self-attention heads H_s (default 70; 36 for 0.6B); the model width D is this × `attention_head_dim`.
    #[serde(default = "d70")]
    pub num_attention_heads: usize,
    /// Self-attention head size (default 32).
    #[serde(default = "d32")]
    pub attention_head_dim: usize,
    /// Transformer blocks (default 20; 28 for 0.6B, 60 for SANA-1.5 4.8B).
    #[serde(default = "d20")]
    pub num_layers: usize,
    /// Cross-attention heads H_c (default 20); H_c × `cross_attention_head_dim` must equal D.
    #[serde(default = "d20")]
    pub num_cross_attention_heads: usize,
    /// Cross-attention head size d_c (default 112).
    #[serde(default = "d112")]
    pub cross_attention_head_dim: usize,
    /// Width of the cross-attention key/value input, the projected caption (default 2240); must equal D.
    #[serde(default = "d2240")]
    pub cross_attention_dim: usize,
    /// Width of the text-encoder embeddings the caption projection takes (default 2304, Gemma-2-2B's width).
    #[serde(default = "d2304")]
    pub caption_channels: usize,
    /// Mix-FFN expansion: its hidden width is `int(mlp_ratio · D)` (default 2.5).
    #[serde(default = "d2_5")]
    pub mlp_ratio: f64,
    /// Whether the self-attention q/k/v projections have a bias (default false).
    #[serde(default)]
    pub attention_bias: bool,
    /// Latent side at the native resolution (default 32, i.e. 1024 px); picks the aspect-ratio table and the
    /// position-embedding base.
    #[serde(default = "d32")]
    pub sample_size: usize,
    /// Patch size of the patch embedding (default 1); only 1 is supported.
    #[serde(default = "d1")]
    pub patch_size: usize,
    /// Whether the block LayerNorms have a weight and bias (default false); only false is supported.
    #[serde(default)]
    pub norm_elementwise_affine: bool,
    /// Epsilon of the block and output LayerNorms (default 1e-6).
    #[serde(default = "d1e6")]
    pub norm_eps: f64,
    /// Default null: no position embedding; a number (1.0 at 2K, 2.0 at 4K) adds the 2-D sin-cos position
    /// embedding at that scale.
    #[serde(default)]
    pub interpolation_scale: Option<f64>,
    /// Whether the model embeds a guidance value (default false; true for Sana-Sprint).
    #[serde(default)]
    pub guidance_embeds: bool,
    /// Factor the pipeline applies to the guidance scale before embedding it (default 0.1).
    #[serde(default = "d0_1")]
    pub guidance_embeds_scale: f64,
    /// Default null: no q/k norm; `"rms_norm_across_heads"` (SANA-1.5, Sprint) RMS-normalises q and k.
    #[serde(default)]
    pub qk_norm: Option<String>,
    /// Factor the pipeline applies to the timestep before the transformer sees it (default 1.0).
    #[serde(default = "d1f")]
    pub timestep_scale: f64,
    /// The `transformer/config.json` this was read from (not a JSON key).
    #[serde(skip)]
    pub source: PathBuf,
}

fn d1() -> usize {
    1
}
fn d20() -> usize {
    20
}
fn d32() -> usize {
    32
}
fn d70() -> usize {
    70
}
fn d112() -> usize {
    112
}
fn d2240() -> usize {
    2240
}
fn d2304() -> usize {
    2304
}
fn d2_5() -> f64 {
    2.5
}
fn d1e6() -> f64 {
    1e-6
}
fn d0_1() -> f64 {
    0.1
}
fn d1f() -> f64 {
    1.0
}

impl TransformerConfig {
    /// Reads and validates `path` (a `transformer/config.json`).
    pub fn load(path: &Path) -> Result<Self> {
        let mut cfg: Self = read_config(path)?;
        cfg.source = path.to_path_buf();
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let p = &self.source;
        // Each factor first, so that the width products below cannot overflow.
        check_width(p, "num_attention_heads", self.num_attention_heads)?;
        check_width(p, "attention_head_dim", self.attention_head_dim)?;
        check_width(
            p,
            "num_cross_attention_heads",
            self.num_cross_attention_heads,
        )?;
        check_width(p, "cross_attention_head_dim", self.cross_attention_head_dim)?;
        if self.dim() > MAX_WIDTH {
            return Err(config_error(
                p,
                "num_attention_heads",
                format!("a model width of {} exceeds {MAX_WIDTH}", self.dim()),
            ));
        }
        check_width(p, "in_channels", self.in_channels)?;
        check_width(p, "caption_channels", self.caption_channels)?;
        check_width(p, "sample_size", self.sample_size)?;
        if let Some(q) = &self.qk_norm {
            if q != "rms_norm_across_heads" {
                return Err(config_error(
                    p,
                    "qk_norm",
                    format!("`{q}` is not supported (only \"rms_norm_across_heads\" or null)"),
                ));
            }
        }
        if self.patch_size != 1 {
            return Err(config_error(
                p,
                "patch_size",
                format!(
                    "{} is not supported: every Sana checkpoint uses 1",
                    self.patch_size
                ),
            ));
        }
        if self.norm_elementwise_affine {
            return Err(config_error(
                p,
                "norm_elementwise_affine",
                "true is not supported: Sana blocks use non-affine LayerNorms",
            ));
        }
        if self.num_cross_attention_heads * self.cross_attention_head_dim != self.dim() {
            return Err(config_error(
                p,
                "num_cross_attention_heads",
                format!(
                    "{} heads × {} (cross_attention_head_dim) must equal the model width {}",
                    self.num_cross_attention_heads,
                    self.cross_attention_head_dim,
                    self.dim()
                ),
            ));
        }
        if self.cross_attention_dim != self.dim() {
            return Err(config_error(
                p,
                "cross_attention_dim",
                format!(
                    "{} must equal the model width {}",
                    self.cross_attention_dim,
                    self.dim()
                ),
            ));
        }
        if self.out_channels() != self.in_channels {
            return Err(config_error(
                p,
                "out_channels",
                "must equal in_channels (Sana predicts a velocity of the latent's shape)",
            ));
        }
        check_layers(p, "num_layers", self.num_layers)?;
        check_positive(p, "norm_eps", self.norm_eps, true)?;
        check_positive(p, "mlp_ratio", self.mlp_ratio, false)?;
        if self.mlp_ratio * self.dim() as f64 > MAX_WIDTH as f64 {
            return Err(config_error(
                p,
                "mlp_ratio",
                format!("{} makes the MLP wider than {MAX_WIDTH}", self.mlp_ratio),
            ));
        }
        check_positive(p, "timestep_scale", self.timestep_scale, false)?;
        Ok(())
    }

    /// Model width D.
    pub fn dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// Channels of the predicted velocity: `out_channels`, or `in_channels` when it is null.
    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Mix-FFN hidden width `int(mlp_ratio · D)`.
    pub fn ffn_dim(&self) -> usize {
        (self.mlp_ratio * self.dim() as f64) as usize
    }

    /// Whether the attention q and k are RMS-normalised (`qk_norm` is set).
    pub fn has_qk_norm(&self) -> bool {
        self.qk_norm.is_some()
    }
}

/// Which scheduler a `scheduler_config.json` asks for, with the fields that change its numbers.
#[derive(Clone, Debug, PartialEq)]
pub enum SchedulerConfig {
    /// `DPMSolverMultistepScheduler` with flow sigmas (docs/numerics/sampling.md §5–6).
    FlowDpmSolver(DpmSolverConfig),
    /// `FlowMatchEulerDiscreteScheduler` (docs/numerics/sampling.md §9).
    FlowEuler(FlowEulerConfig),
    /// `SCMScheduler`, Sana-Sprint's few-step TrigFlow sampler (docs/numerics/sampling.md §10).
    Scm(ScmConfig),
}

/// The fields of a `DPMSolverMultistepScheduler` config that change its numbers (docs/numerics/sampling.md §5–6).
#[derive(Clone, Debug, PartialEq)]
pub struct DpmSolverConfig {
    /// `num_train_timesteps` (default 1000): σ starts from `shift(1 − 1/this)`; the model timestep is
    /// `trunc(this · σ)`.
    pub num_train_timesteps: usize,
    /// `flow_shift` (default 1.0; Sana ships 3.0, 6.0 at 4K): the time shift `σ ↦ shift·σ / (1 + (shift − 1)·σ)`.
    pub flow_shift: f64,
    /// `solver_order` (default 2): 1 or 2.
    pub solver_order: usize,
    /// `lower_order_final` (default true): the last step is first order when there are fewer than 15 steps.
    pub lower_order_final: bool,
    /// `euler_at_final` (default false): the last step is always first order.
    pub euler_at_final: bool,
    /// true: the last σ is 0 (`final_sigmas_type = "zero"`); false: it repeats the smallest σ (`"sigma_min"`).
    pub final_sigma_zero: bool,
}

/// The fields of a `FlowMatchEulerDiscreteScheduler` config that change its numbers (docs/numerics/sampling.md §9).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowEulerConfig {
    /// `num_train_timesteps` (default 1000): σ spans the training times 1 … this; the model timestep is `this · σ`.
    pub num_train_timesteps: usize,
    /// `shift` (default 1.0; Sana uses 3.0, 6.0 at 4K): the time shift, which this scheduler applies twice.
    pub shift: f64,
}

/// The fields of an `SCMScheduler` config (Sana-Sprint, docs/numerics/sampling.md §10).
#[derive(Clone, Debug, PartialEq)]
pub struct ScmConfig {
    /// `num_train_timesteps` (default 1000): the most sampling steps allowed.
    pub num_train_timesteps: usize,
    /// σ_d: scales the initial noise, the per-step noise and the model input.
    pub sigma_data: f64,
}

#[derive(Deserialize)]
struct RawScheduler {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
    num_train_timesteps: Option<usize>,
    prediction_type: Option<String>,
    use_flow_sigmas: Option<bool>,
    flow_shift: Option<f64>,
    shift: Option<f64>,
    algorithm_type: Option<String>,
    solver_order: Option<usize>,
    solver_type: Option<String>,
    lower_order_final: Option<bool>,
    euler_at_final: Option<bool>,
    final_sigmas_type: Option<String>,
    thresholding: Option<bool>,
    use_karras_sigmas: Option<bool>,
    use_exponential_sigmas: Option<bool>,
    use_beta_sigmas: Option<bool>,
    use_lu_lambdas: Option<bool>,
    use_dynamic_shifting: Option<bool>,
    variance_type: Option<String>,
    invert_sigmas: Option<bool>,
    stochastic_sampling: Option<bool>,
    shift_terminal: Option<f64>,
    sigma_data: Option<f64>,
}

impl SchedulerConfig {
    /// Reads `scheduler/scheduler_config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let raw: RawScheduler = read_config(path)?;
        let err = |field: &str, reason: String| config_error(path, field, reason);
        let off = |field: &str, v: Option<bool>| -> Result<()> {
            if v == Some(true) {
                Err(err(
                    field,
                    "true is not supported by the Sana samplers".into(),
                ))
            } else {
                Ok(())
            }
        };
        for (field, v) in [
            ("thresholding", raw.thresholding),
            ("use_karras_sigmas", raw.use_karras_sigmas),
            ("use_exponential_sigmas", raw.use_exponential_sigmas),
            ("use_beta_sigmas", raw.use_beta_sigmas),
            ("use_dynamic_shifting", raw.use_dynamic_shifting),
            ("invert_sigmas", raw.invert_sigmas),
            ("stochastic_sampling", raw.stochastic_sampling),
        ] {
            off(field, v)?;
        }
        let num_train_timesteps = raw.num_train_timesteps.unwrap_or(1000);
        if num_train_timesteps == 0 {
            return Err(err(
                "num_train_timesteps",
                "0: the schedule needs at least one training timestep".into(),
            ));
        }
        for (field, value) in [
            ("flow_shift", raw.flow_shift),
            ("shift", raw.shift),
            ("sigma_data", raw.sigma_data),
        ] {
            if let Some(v) = value {
                check_positive(path, field, v, false)?;
            }
        }
        match raw.class_name.as_deref() {
            Some("DPMSolverMultistepScheduler") => {
                expect(path, "prediction_type", raw.prediction_type.as_deref(), "flow_prediction", "epsilon")?;
                expect(path, "algorithm_type", raw.algorithm_type.as_deref(), "dpmsolver++", "dpmsolver++")?;
                expect(path, "solver_type", raw.solver_type.as_deref(), "midpoint", "midpoint")?;
                if raw.use_flow_sigmas != Some(true) {
                    return Err(err("use_flow_sigmas", "must be true: Sana samples with flow sigmas".into()));
                }
                off("use_lu_lambdas", raw.use_lu_lambdas)?;
                if let Some(v) = raw.variance_type.as_deref() {
                    return Err(err("variance_type", format!("`{v}` is not supported (only null)")));
                }
                let solver_order = raw.solver_order.unwrap_or(2);
                if !(1..=2).contains(&solver_order) {
                    return Err(err("solver_order", format!("{solver_order} is not supported (1 or 2)")));
                }
                let final_sigma_zero = match raw.final_sigmas_type.as_deref().unwrap_or("zero") {
                    "zero" => true,
                    "sigma_min" => false,
                    other => return Err(err("final_sigmas_type", format!("`{other}` is not supported (\"zero\" or \"sigma_min\")"))),
                };
                Ok(Self::FlowDpmSolver(DpmSolverConfig {
                    num_train_timesteps,
                    flow_shift: raw.flow_shift.unwrap_or(1.0),
                    solver_order,
                    lower_order_final: raw.lower_order_final.unwrap_or(true),
                    euler_at_final: raw.euler_at_final.unwrap_or(false),
                    final_sigma_zero,
                }))
            }
            Some("FlowMatchEulerDiscreteScheduler") => {
                if raw.shift_terminal.is_some() {
                    return Err(err("shift_terminal", "is not supported (only null)".into()));
                }
                Ok(Self::FlowEuler(FlowEulerConfig {
                    num_train_timesteps,
                    shift: raw.shift.unwrap_or(1.0),
                }))
            }
            Some("SCMScheduler") => {
                expect(path, "prediction_type", raw.prediction_type.as_deref(), "trigflow", "trigflow")?;
                Ok(Self::Scm(ScmConfig {
                    num_train_timesteps,
                    sigma_data: raw.sigma_data.unwrap_or(0.5),
                }))
            }
            Some(other) => Err(err("_class_name", format!("`{other}` is not a supported scheduler (DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, SCMScheduler)"))),
            None => Err(err("_class_name", "missing: cannot tell which scheduler this is".into())),
        }
    }
}

fn expect(path: &Path, field: &str, value: Option<&str>, want: &str, default: &str) -> Result<()> {
    let v = value.unwrap_or(default);
    if v == want {
        Ok(())
    } else {
        Err(config_error(
            path,
            field,
            format!("`{v}` is not supported (Sana needs \"{want}\")"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::strict_json;

    #[test]
    fn non_finite_tokens_become_null_outside_strings() {
        let s = r#"{"a": -Infinity, "b": "NaN -Infinity", "c": [Infinity, NaN], "d": "\"NaN"}"#;
        assert_eq!(
            strict_json(s),
            r#"{"a": null, "b": "NaN -Infinity", "c": [null, null], "d": "\"NaN"}"#
        );
    }
}
