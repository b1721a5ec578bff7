//! The DC-AE of `AutoencoderDC` (docs/numerics/dc-ae.md §3–§5): the decoder, and the encoder for image-to-image,
//! generic over the engine. Feature maps are channels-last
//! tokens `[B, h·w, C]`, so every per-pixel linear map is a `linear` and every channel RMSNorm a plain `rms_norm`.
//! Structs mirror the checkpoint's module tree; key names appear verbatim.

use crate::engine::{Activation, Engine};
use crate::error::{Error, Result};
use crate::model::config::{VaeBlock, VaeConfig, VaeEncoderConfig, VaeStage};
use crate::model::layers::{param, Linear};
use crate::model::Trace;
use crate::weights::Weights;

/// Every norm of the DC-AE is `RMSNorm(C, eps = 1e-5, bias = True)`.
const NORM_EPS: f32 = 1e-5;
/// LiteMLA's ε, added to the normaliser after both matmuls, as in the DiT.
const LINEAR_ATTN_EPS: f32 = 1e-15;

/// A feature map: tokens `[B, h·w, C]` and the grid they lie on.
struct Map<T> {
    x: T,
    h: usize,
    w: usize,
}

/// The DC-AE decoder: latent `[B, latent_channels, h, w]` → image `[B, 3, h·f, w·f]`, f the spatial factor (32
/// for f32c32), with its weights on engine `E`.
pub struct DcAeDecoder<E: Engine> {
    /// The config the decoder was built from.
    pub config: VaeConfig,
    conv_in: Conv3x3<E>,
    /// Channel repeat of the latent added to `conv_in` (docs/numerics/dc-ae.md §4.1 step 1).
    in_shortcut_repeats: Option<usize>,
    /// `decoder.up_blocks.{i}` in storage order; decoding runs them last to first.
    up_blocks: Vec<UpStage<E>>,
    norm_out: ChannelNorm<E>,
    conv_out: Conv3x3<E>,
}

impl<E: Engine> DcAeDecoder<E> {
    /// Loads `dir/config.json` and the decoder weights of a diffusers `vae/` folder (the encoder's are not read).
    pub fn from_dir(e: &E, dir: &std::path::Path) -> Result<Self> {
        let config = VaeConfig::load(&dir.join("config.json"))?;
        let weights = Weights::open(dir, "diffusion_pytorch_model")?;
        Self::new(e, config, &weights)
    }

    /// Builds the decoder from the `decoder.*` tensors of `w`, checking every shape against `config`.
    pub fn new(e: &E, config: VaeConfig, w: &Weights) -> Result<Self> {
        let w = w.prefix("decoder");
        let n = config.stages.len();
        let deepest = config.stages[n - 1].channels;
        let up_blocks = (0..n)
            .map(|i| UpStage::new(e, &config, i, &w.prefix(format!("up_blocks.{i}"))))
            .collect::<Result<_>>()?;
        let first = config.stages[0].channels;
        Ok(Self {
            conv_in: Conv3x3::new(
                e,
                &w.prefix("conv_in"),
                config.latent_channels,
                deepest,
                true,
            )?,
            in_shortcut_repeats: config.in_shortcut.then(|| deepest / config.latent_channels),
            up_blocks,
            norm_out: ChannelNorm::new(e, &w.prefix("norm_out"), first)?,
            conv_out: Conv3x3::new(e, &w.prefix("conv_out"), first, config.in_channels, true)?,
            config,
        })
    }

    /// Decodes `z` `[B, latent_channels, h, w]` (already divided by the scaling factor) to the raw image
    /// `[B, 3, h·f, w·f]` (nominally in [−1, 1], not clamped).
    pub fn decode(&self, e: &E, z: &E::Tensor) -> Result<E::Tensor> {
        self.decode_traced(e, z, &mut |_, _| Ok(()))
    }

    /// As [`Self::decode`], reporting `decoder.conv_in` (the convolution alone, without the shortcut, as a hook on
    /// the diffusers module sees it), `decoder.up_blocks.{i}` and `decoder.norm_out`, each as tokens `[B, h·w, C]`.
    pub fn decode_traced(
        &self,
        e: &E,
        z: &E::Tensor,
        trace: Trace<'_, E::Tensor>,
    ) -> Result<E::Tensor> {
        let shape = e.shape(z).to_vec();
        let c = self.config.latent_channels;
        if shape.len() != 4 || shape[1] != c || shape[2] == 0 || shape[3] == 0 {
            return Err(Error::InvalidInput(format!(
                "the VAE decoder takes latents [B, {c}, h, w], got {shape:?}"
            )));
        }
        let (h, w) = (shape[2], shape[3]);
        let latent = e.nchw_to_tokens(z)?;
        let mut x = self.conv_in.forward(e, &latent, h, w)?;
        trace("decoder.conv_in", &x)?;
        if let Some(r) = self.in_shortcut_repeats {
            x = e.add(&x, &e.repeat_channels(&latent, r)?)?;
        }
        let mut map = Map { x, h, w };
        for (i, stage) in self.up_blocks.iter().enumerate().rev() {
            map = stage.forward(e, map)?;
            trace(&format!("decoder.up_blocks.{i}"), &map.x)?;
        }
        let x = self.norm_out.forward(e, &map.x)?;
        trace("decoder.norm_out", &x)?;
        let x = e.activation(&x, self.config.conv_activation)?;
        let x = self.conv_out.forward(e, &x, map.h, map.w)?;
        e.tokens_to_nchw(&x, map.h, map.w)
    }
}

/// The DC-AE encoder: image `[B, 3, H, W]` in [−1, 1] → latent `[B, latent_channels, H/f, W/f]` (before the
/// scaling factor, which training code multiplies in; diffusers' `encode` returns it unscaled).
pub struct DcAeEncoder<E: Engine> {
    /// The config the encoder was built from (its encoder side is [`VaeConfig::encoder`]).
    pub config: VaeConfig,
    conv_in: Conv3x3<E>,
    /// `encoder.down_blocks.{i}`, run in order.
    down_blocks: Vec<DownStage<E>>,
    conv_out: Conv3x3<E>,
    /// Channels averaged per latent channel by the output shortcut.
    out_shortcut_group: Option<usize>,
}

impl<E: Engine> DcAeEncoder<E> {
    /// Loads `dir/config.json` and the encoder weights of a diffusers `vae/` folder.
    pub fn from_dir(e: &E, dir: &std::path::Path) -> Result<Self> {
        let config = VaeConfig::load(&dir.join("config.json"))?;
        let weights = Weights::open(dir, "diffusion_pytorch_model")?;
        Self::new(e, config, &weights)
    }

    /// Builds the encoder from the `encoder.*` tensors of `w`, checking every shape against `config`.
    pub fn new(e: &E, config: VaeConfig, w: &Weights) -> Result<Self> {
        let w = w.prefix("encoder");
        let enc = &config.encoder;
        let n = enc.stages.len();
        let (first, last) = (enc.stages[0].channels, enc.stages[n - 1].channels);
        let down_blocks = (0..n)
            .map(|i| DownStage::new(e, &config, enc, i, &w.prefix(format!("down_blocks.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            conv_in: Conv3x3::new(e, &w.prefix("conv_in"), config.in_channels, first, true)?,
            down_blocks,
            conv_out: Conv3x3::new(e, &w.prefix("conv_out"), last, config.latent_channels, true)?,
            out_shortcut_group: enc.out_shortcut.then(|| last / config.latent_channels),
            config,
        })
    }

    /// Image pixels per latent pixel: 2 per down-sampler.
    pub fn spatial_factor(&self) -> usize {
        1 << self
            .down_blocks
            .iter()
            .filter(|s| s.downsample.is_some())
            .count()
    }

    /// Encodes `image` `[B, 3, H, W]` (H and W multiples of [`Self::spatial_factor`]) to the unscaled latent
    /// `[B, latent_channels, H/f, W/f]`.
    pub fn encode(&self, e: &E, image: &E::Tensor) -> Result<E::Tensor> {
        self.encode_traced(e, image, &mut |_, _| Ok(()))
    }

    /// As [`Self::encode`], reporting `encoder.conv_in` and `encoder.down_blocks.{i}` as tokens `[B, h·w, C]`.
    pub fn encode_traced(
        &self,
        e: &E,
        image: &E::Tensor,
        trace: Trace<'_, E::Tensor>,
    ) -> Result<E::Tensor> {
        let shape = e.shape(image).to_vec();
        let (c, f) = (self.config.in_channels, self.spatial_factor());
        if shape.len() != 4
            || shape[1] != c
            || shape[2] % f != 0
            || shape[3] % f != 0
            || shape[2] == 0
            || shape[3] == 0
        {
            return Err(Error::InvalidInput(format!(
                "the VAE encoder takes images [B, {c}, H, W] with H and W positive multiples of {f}, got {shape:?}"
            )));
        }
        let (h, w) = (shape[2], shape[3]);
        let x = self.conv_in.forward(e, &e.nchw_to_tokens(image)?, h, w)?;
        trace("encoder.conv_in", &x)?;
        let mut map = Map { x, h, w };
        for (i, stage) in self.down_blocks.iter().enumerate() {
            map = stage.forward(e, map)?;
            trace(&format!("encoder.down_blocks.{i}"), &map.x)?;
        }
        let mut z = self.conv_out.forward(e, &map.x, map.h, map.w)?;
        if let Some(g) = self.out_shortcut_group {
            z = e.add(&z, &e.channel_group_mean(&map.x, g)?)?;
        }
        e.tokens_to_nchw(&z, map.h, map.w)
    }
}

/// `encoder.down_blocks.{i}`: the stage's blocks, then an optional down-sampler.
struct DownStage<E: Engine> {
    blocks: Vec<Block<E>>,
    downsample: Option<DownSample<E>>,
}

impl<E: Engine> DownStage<E> {
    fn new(
        e: &E,
        config: &VaeConfig,
        enc: &VaeEncoderConfig,
        i: usize,
        w: &Weights,
    ) -> Result<Self> {
        let stage = &enc.stages[i];
        let blocks = (0..stage.layers)
            .map(|j| Block::new(e, config, stage, &w.prefix(j)))
            .collect::<Result<_>>()?;
        let downsample = if enc.has_downsampler(i) {
            let cout = enc.stages[i + 1].channels;
            Some(DownSample::new(
                e,
                &w.prefix(stage.layers),
                stage.channels,
                cout,
                enc.strided_conv,
            )?)
        } else {
            None
        };
        Ok(Self { blocks, downsample })
    }

    fn forward(&self, e: &E, mut map: Map<E::Tensor>) -> Result<Map<E::Tensor>> {
        for block in &self.blocks {
            map.x = block.forward(e, &map)?;
        }
        match &self.downsample {
            Some(down) => down.forward(e, &map),
            None => Ok(map),
        }
    }
}

/// `DCDownBlock2d` with its shortcut (docs/numerics/dc-ae.md §3.7): the pixel-unshuffled input, averaged over groups of
/// channels, is added to the down-sampling convolution.
struct DownSample<E: Engine> {
    conv: Conv3x3<E>,
    strided: bool,
    group: usize,
}

impl<E: Engine> DownSample<E> {
    fn new(e: &E, w: &Weights, cin: usize, cout: usize, strided: bool) -> Result<Self> {
        let conv_out = if strided { cout } else { cout / 4 };
        Ok(Self {
            conv: Conv3x3::new(e, &w.prefix("conv"), cin, conv_out, true)?,
            strided,
            group: 4 * cin / cout,
        })
    }

    fn forward(&self, e: &E, map: &Map<E::Tensor>) -> Result<Map<E::Tensor>> {
        let (h, w) = (map.h, map.w);
        let main = if self.strided {
            self.conv.forward_stride(e, &map.x, h, w, 2)?
        } else {
            e.pixel_unshuffle(&self.conv.forward(e, &map.x, h, w)?, h, w)?
        };
        let shortcut = e.channel_group_mean(&e.pixel_unshuffle(&map.x, h, w)?, self.group)?;
        Ok(Map {
            x: e.add(&main, &shortcut)?,
            h: h / 2,
            w: w / 2,
        })
    }
}

/// `nn.Conv2d(cin, cout, 3, 1, 1)`: keys `{prefix}.weight` [cout, cin, 3, 3] and optionally `{prefix}.bias`.
struct Conv3x3<E: Engine> {
    weight: E::Tensor,
    bias: Option<E::Tensor>,
}

impl<E: Engine> Conv3x3<E> {
    fn new(e: &E, w: &Weights, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: param(e, w, "weight", &[cout, cin, 3, 3])?,
            bias: if bias {
                Some(param(e, w, "bias", &[cout])?)
            } else {
                None
            },
        })
    }

    fn forward(&self, e: &E, x: &E::Tensor, h: usize, w: usize) -> Result<E::Tensor> {
        self.forward_stride(e, x, h, w, 1)
    }

    fn forward_stride(
        &self,
        e: &E,
        x: &E::Tensor,
        h: usize,
        w: usize,
        stride: usize,
    ) -> Result<E::Tensor> {
        e.conv3x3(x, &self.weight, self.bias.as_ref(), (h, w), stride)
    }
}

/// Channel RMSNorm with weight and bias (docs/numerics/dc-ae.md §3.1).
struct ChannelNorm<E: Engine> {
    weight: E::Tensor,
    bias: E::Tensor,
}

impl<E: Engine> ChannelNorm<E> {
    fn new(e: &E, w: &Weights, c: usize) -> Result<Self> {
        Ok(Self {
            weight: param(e, w, "weight", &[c])?,
            bias: param(e, w, "bias", &[c])?,
        })
    }

    fn forward(&self, e: &E, x: &E::Tensor) -> Result<E::Tensor> {
        e.rms_norm(x, &self.weight, Some(&self.bias), NORM_EPS)
    }
}

/// `decoder.up_blocks.{i}`: an optional up-sampler at index 0, then the stage's blocks.
struct UpStage<E: Engine> {
    upsample: Option<UpSample<E>>,
    blocks: Vec<Block<E>>,
}

impl<E: Engine> UpStage<E> {
    fn new(e: &E, config: &VaeConfig, i: usize, w: &Weights) -> Result<Self> {
        let stage = &config.stages[i];
        let upsample = if config.has_upsampler(i) {
            let cin = config.stages[i + 1].channels;
            Some(UpSample::new(
                e,
                &w.prefix("0"),
                cin,
                stage.channels,
                config.interpolate,
            )?)
        } else {
            None
        };
        let first = usize::from(upsample.is_some());
        let blocks = (0..stage.layers)
            .map(|j| Block::new(e, config, stage, &w.prefix(first + j)))
            .collect::<Result<_>>()?;
        Ok(Self { upsample, blocks })
    }

    fn forward(&self, e: &E, mut map: Map<E::Tensor>) -> Result<Map<E::Tensor>> {
        if let Some(up) = &self.upsample {
            map = up.forward(e, &map)?;
        }
        for block in &self.blocks {
            map.x = block.forward(e, &map)?;
        }
        Ok(map)
    }
}

/// `DCUpBlock2d` with its shortcut (docs/numerics/dc-ae.md §3.6): the channel-repeated input, pixel-shuffled, is added
/// to the up-sampled convolution.
struct UpSample<E: Engine> {
    conv: Conv3x3<E>,
    interpolate: bool,
    repeats: usize,
}

impl<E: Engine> UpSample<E> {
    fn new(e: &E, w: &Weights, cin: usize, cout: usize, interpolate: bool) -> Result<Self> {
        let conv_out = if interpolate { cout } else { 4 * cout };
        Ok(Self {
            conv: Conv3x3::new(e, &w.prefix("conv"), cin, conv_out, true)?,
            interpolate,
            repeats: 4 * cout / cin,
        })
    }

    fn forward(&self, e: &E, map: &Map<E::Tensor>) -> Result<Map<E::Tensor>> {
        let (h, w) = (map.h, map.w);
        let main = if self.interpolate {
            let up = e.upsample_nearest2x(&map.x, h, w)?;
            self.conv.forward(e, &up, 2 * h, 2 * w)?
        } else {
            e.pixel_shuffle(&self.conv.forward(e, &map.x, h, w)?, h, w)?
        };
        let shortcut = e.repeat_pixel_shuffle(&map.x, h, w, self.repeats)?;
        Ok(Map {
            x: e.add(&main, &shortcut)?,
            h: 2 * h,
            w: 2 * w,
        })
    }
}

enum Block<E: Engine> {
    Res(ResBlock<E>),
    EfficientVit(LiteMla<E>, GluMbConv<E>),
}

impl<E: Engine> Block<E> {
    fn new(e: &E, config: &VaeConfig, stage: &VaeStage, w: &Weights) -> Result<Self> {
        let c = stage.channels;
        Ok(match stage.block {
            VaeBlock::Res => Self::Res(ResBlock::new(e, w, c, stage.activation)?),
            VaeBlock::EfficientVit => Self::EfficientVit(
                LiteMla::new(
                    e,
                    &w.prefix("attn"),
                    c,
                    config.attention_head_dim,
                    &stage.multiscales,
                )?,
                GluMbConv::new(e, &w.prefix("conv_out"), c)?,
            ),
        })
    }

    fn forward(&self, e: &E, map: &Map<E::Tensor>) -> Result<E::Tensor> {
        match self {
            Self::Res(block) => block.forward(e, map),
            Self::EfficientVit(attn, ffn) => {
                let x = attn.forward(e, map)?;
                ffn.forward(e, &x, map.h, map.w)
            }
        }
    }
}

/// `ResBlock` (docs/numerics/dc-ae.md §3.2): conv1 (bias), activation, conv2 (no bias), channel RMSNorm, residual.
struct ResBlock<E: Engine> {
    conv1: Conv3x3<E>,
    conv2: Conv3x3<E>,
    norm: ChannelNorm<E>,
    activation: Activation,
}

impl<E: Engine> ResBlock<E> {
    fn new(e: &E, w: &Weights, c: usize, activation: Activation) -> Result<Self> {
        Ok(Self {
            conv1: Conv3x3::new(e, &w.prefix("conv1"), c, c, true)?,
            conv2: Conv3x3::new(e, &w.prefix("conv2"), c, c, false)?,
            norm: ChannelNorm::new(e, &w.prefix("norm"), c)?,
            activation,
        })
    }

    fn forward(&self, e: &E, map: &Map<E::Tensor>) -> Result<E::Tensor> {
        let y = self.conv1.forward(e, &map.x, map.h, map.w)?;
        let y = e.activation(&y, self.activation)?;
        let y = self.conv2.forward(e, &y, map.h, map.w)?;
        e.add(&self.norm.forward(e, &y)?, &map.x)
    }
}

/// One extra scale of LiteMLA (`attn.to_qkv_multiscale.{k}`): depthwise k×k over the 3C projected channels, then a
/// grouped 1×1 conv with groups of `head_dim` channels.
struct MultiScale<E: Engine> {
    proj_in: E::Tensor,
    proj_out: E::Tensor,
    groups: usize,
}

/// `SanaMultiscaleLinearAttention` (docs/numerics/dc-ae.md §3.4): ReLU linear attention over groups of `[q | k | v]`
/// channels of the projected map and of each multi-scale branch, `to_out`, channel RMSNorm, residual.
///
/// diffusers takes a quadratic path when `h·w ≤ head_dim`: `(kᵀq)` column-normalised, then `v·A`. That is the same
/// expression as the linear path's `(v kᵀ) q / ((Σk)·q + ε)` with the products regrouped, so both use
/// `linear_attention`; they differ only in rounding (and only at latents of a few pixels).
struct LiteMla<E: Engine> {
    /// `to_q`, `to_k`, `to_v` stacked into one `[3C, C]` projection (their outputs are concatenated anyway).
    to_qkv: Linear<E>,
    multiscale: Vec<MultiScale<E>>,
    to_out: Linear<E>,
    norm_out: ChannelNorm<E>,
    head_dim: usize,
}

impl<E: Engine> LiteMla<E> {
    fn new(e: &E, w: &Weights, c: usize, head_dim: usize, kernels: &[usize]) -> Result<Self> {
        let heads = c / head_dim;
        let qkv = ["to_q", "to_k", "to_v"]
            .iter()
            .map(|name| {
                e.load(
                    &w.get_shaped(&format!("{name}.weight"), &[c, c])?,
                    &[1, 1, c * c],
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let stacked = e.concat_channels(&e.concat_channels(&qkv[0], &qkv[1])?, &qkv[2])?;
        let to_qkv = Linear::from_tensors(e.reshape(stacked, &[3 * c, c])?, None);
        let multiscale = kernels
            .iter()
            .enumerate()
            .map(|(s, &k)| {
                let w = w.prefix(format!("to_qkv_multiscale.{s}"));
                Ok(MultiScale {
                    proj_in: e.load(
                        &w.get_shaped("proj_in.weight", &[3 * c, 1, k, k])?,
                        &[3 * c, k, k],
                    )?,
                    proj_out: e.load(
                        &w.get_shaped("proj_out.weight", &[3 * c, head_dim, 1, 1])?,
                        &[3 * c, head_dim],
                    )?,
                    groups: 3 * heads,
                })
            })
            .collect::<Result<_>>()?;
        let branches = 1 + kernels.len();
        Ok(Self {
            to_qkv,
            multiscale,
            to_out: Linear::new(e, &w.prefix("to_out"), branches * c, c, false)?,
            norm_out: ChannelNorm::new(e, &w.prefix("norm_out"), c)?,
            head_dim,
        })
    }

    fn forward(&self, e: &E, map: &Map<E::Tensor>) -> Result<E::Tensor> {
        let qkv = self.to_qkv.forward(e, &map.x)?;
        let mut out = self.attend(e, &qkv)?;
        for scale in &self.multiscale {
            let t = e.depthwise_conv(&qkv, &scale.proj_in, None, map.h, map.w)?;
            let t = e.grouped_linear(&t, &scale.proj_out, scale.groups)?;
            out = e.concat_channels(&out, &self.attend(e, &t)?)?;
        }
        let y = self.to_out.forward(e, &out)?;
        e.add(&self.norm_out.forward(e, &y)?, &map.x)
    }

    /// Linear attention over one branch `[B, P, 3C]`: its C/head_dim groups of `[q | k | v]`.
    fn attend(&self, e: &E, t: &E::Tensor) -> Result<E::Tensor> {
        let (q, k, v) = e.split_qkv_groups(t, self.head_dim)?;
        let heads = e.shape(&q)[2] / self.head_dim;
        e.linear_attention(&q, &k, &v, heads, LINEAR_ATTN_EPS)
    }
}

/// `GLUMBConv` with a channel RMSNorm and a residual (docs/numerics/dc-ae.md §3.3): 1×1 C → 8C + SiLU, depthwise 3×3 +
/// bias, value · SiLU(gate), 1×1 4C → C, norm, residual.
struct GluMbConv<E: Engine> {
    conv_inverted: Linear<E>,
    depth_weight: E::Tensor,
    depth_bias: E::Tensor,
    conv_point: Linear<E>,
    norm: ChannelNorm<E>,
}

impl<E: Engine> GluMbConv<E> {
    fn new(e: &E, w: &Weights, c: usize) -> Result<Self> {
        let hidden = 4 * c;
        Ok(Self {
            conv_inverted: Linear::conv1x1(e, &w.prefix("conv_inverted"), c, 2 * hidden, true)?,
            depth_weight: e.load(
                &w.get_shaped("conv_depth.weight", &[2 * hidden, 1, 3, 3])?,
                &[2 * hidden, 9],
            )?,
            depth_bias: param(e, w, "conv_depth.bias", &[2 * hidden])?,
            conv_point: Linear::conv1x1(e, &w.prefix("conv_point"), hidden, c, false)?,
            norm: ChannelNorm::new(e, &w.prefix("norm"), c)?,
        })
    }

    fn forward(&self, e: &E, x: &E::Tensor, h: usize, w: usize) -> Result<E::Tensor> {
        let u = self.conv_inverted.forward_act(e, x, Activation::Silu)?;
        let u = e.dwconv3x3_glu(&u, &self.depth_weight, &self.depth_bias, h, w)?;
        let y = self.conv_point.forward(e, &u)?;
        e.add(&self.norm.forward(e, &y)?, x)
    }
}
