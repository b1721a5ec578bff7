//! `SanaTransformer2DModel` (docs/numerics/transformer.md), generic over the engine. Structs mirror the checkpoint's
//! module tree; key names appear verbatim.

use std::sync::{Arc, Mutex};

use crate::engine::{Activation, Engine};
use crate::error::{Error, Result};
use crate::lora::{LoraLayers, LoraTarget};
use crate::model::config::TransformerConfig;
use crate::model::embeddings::{sincos_position_embedding, timestep_sinusoid};
use crate::model::layers::{param, Linear};
use crate::tensor::HostTensor;
use crate::weights::Weights;

mod controlnet;

pub use controlnet::SanaControlNet;

/// Linear-attention ε: diffusers 1e-15 (NVlabs uses 1e-8; docs/numerics/transformer.md §14).
const LINEAR_ATTN_EPS: f32 = 1e-15;
/// Caption norm and q/k norms use eps 1e-5 (the `Attention`/`RMSNorm` defaults).
const RMS_EPS: f32 = 1e-5;
/// Text mask → additive bias: `(1 − mask) · −10000` (docs/numerics/transformer.md §9.1).
const MASK_BIAS: f32 = -10000.0;

pub use super::Trace;

/// `SanaTransformer2DModel`, the linear DiT that predicts the flow velocity, with its weights on engine `E`.
pub struct SanaTransformer<E: Engine> {
    /// The config the model was built from.
    pub config: TransformerConfig,
    patch_embed: Linear<E>,
    time_embed: TimeEmbed<E>,
    caption_projection: CaptionProjection<E>,
    caption_norm: E::Tensor,
    blocks: Vec<SanaBlock<E>>,
    scale_shift_table: E::Tensor,
    proj_out: Linear<E>,
    /// The 2K/4K models' position embedding for the last (batch, h, w) seen, repeated over the batch: it depends
    /// on the size alone, and at 4K it is 36.7M sines and cosines in f64, far more than a GPU step's time if
    /// recomputed and uploaded every step. Shared, so that a kept step graph holds the one it reads when another
    /// size replaces it here.
    position_embedding: Mutex<Option<(BatchSize, Arc<E::Tensor>)>>,
}

/// `(batch, h, w)` of a latent batch.
type BatchSize = (usize, usize, usize);

/// The text side, computed once per prompt batch: projected, normalised captions, their key bias, and every block's
/// cross-attention keys/values (they do not depend on the denoising step).
pub struct TextConditioning<E: Engine> {
    caption: E::Tensor,
    key_bias: E::Tensor,
    keys_values: Vec<(E::Tensor, E::Tensor)>,
    perturbation: Option<Perturbation<E>>,
}

/// Perturbed-attention guidance's identity self-attention (diffusers' `PAG(CFG)IdentitySanaLinearAttnProcessor2_0`):
/// in `blocks`, rows of the batch where `identity` is 1 take `to_v(x)` in place of the attention, before `to_out`;
/// `keep` is 1 on the other rows. Both `[B, h·w, D]`, so mixing is two exact products and an exact sum.
struct Perturbation<E: Engine> {
    blocks: Vec<usize>,
    keep: E::Tensor,
    identity: E::Tensor,
}

impl<E: Engine> TextConditioning<E> {
    /// The projected, RMS-normalised captions `[B, L, D]`.
    pub fn caption(&self) -> &E::Tensor {
        &self.caption
    }

    /// What a step's work depends on besides the values: every tensor's shape, and the blocks PAG perturbs.
    pub(crate) fn layout(&self, e: &E) -> (Vec<Vec<usize>>, Vec<usize>) {
        let shapes = self
            .tensors()
            .into_iter()
            .map(|t| e.shape(t).to_vec())
            .collect();
        let blocks = self
            .perturbation
            .as_ref()
            .map_or_else(Vec::new, |p| p.blocks.clone());
        (shapes, blocks)
    }

    /// Writes `other`'s values into these tensors, in place (the same [`Self::layout`]), for a kept step graph.
    pub(crate) fn overwrite(&mut self, e: &E, other: &Self) -> Result<()> {
        if self.layout(e) != other.layout(e) {
            return Err(Error::InvalidInput(
                "text conditioning of another layout cannot replace a kept loop's".into(),
            ));
        }
        for (dst, src) in self.tensors_mut().into_iter().zip(other.tensors()) {
            e.overwrite(dst, src)?;
        }
        Ok(())
    }

    fn tensors(&self) -> Vec<&E::Tensor> {
        let mut out = vec![&self.caption, &self.key_bias];
        out.extend(self.keys_values.iter().flat_map(|(k, v)| [k, v]));
        if let Some(p) = &self.perturbation {
            out.extend([&p.keep, &p.identity]);
        }
        out
    }

    fn tensors_mut(&mut self) -> Vec<&mut E::Tensor> {
        let mut out = vec![&mut self.caption, &mut self.key_bias];
        out.extend(self.keys_values.iter_mut().flat_map(|(k, v)| [k, v]));
        if let Some(p) = &mut self.perturbation {
            out.extend([&mut p.keep, &mut p.identity]);
        }
        out
    }
}

impl<E: Engine> SanaTransformer<E> {
    /// Loads `dir/config.json` and the weights of a diffusers `transformer/` folder.
    pub fn from_dir(e: &E, dir: &std::path::Path) -> Result<Self> {
        Self::from_dir_with_lora(e, dir, None)
    }

    /// [`Self::from_dir`] with LoRA adapters resolved against this folder's weights ([`LoraLayers::resolve`]),
    /// merged into the weights or kept as extra GEMMs as `lora` says.
    pub fn from_dir_with_lora(
        e: &E,
        dir: &std::path::Path,
        lora: Option<Arc<LoraLayers>>,
    ) -> Result<Self> {
        let config = TransformerConfig::load(&dir.join("config.json"))?;
        let weights = Weights::open(dir, "diffusion_pytorch_model")?;
        let mut model = Self::new(e, config, &weights)?;
        match lora.as_deref() {
            Some(lora) if lora.merged() => model.merge_lora(e, &weights, lora)?,
            Some(lora) => model.set_unmerged_lora(e, Some(lora))?,
            None => {}
        }
        Ok(model)
    }

    /// Folds `lora`'s terms into the weights of the layers it targets, each merged from its checkpoint weight in
    /// `w` (the folder this model was loaded from).
    fn merge_lora(&mut self, e: &E, w: &Weights, lora: &LoraLayers) -> Result<()> {
        self.for_each_layer(Some(lora), |module, linear, target| match target {
            Some(target) => linear.merge_lora(e, &w.get(&format!("{module}.weight"))?, target),
            None => Ok(()),
        })
    }

    /// The position embedding the last forward of batch `b` at `h × w` tokens added (the 2K/4K models), shared:
    /// a kept step graph holds it, since it reads its address.
    pub(crate) fn position_embedding_in_use(&self, (b, h, w): BatchSize) -> Option<Arc<E::Tensor>> {
        let cache = self
            .position_embedding
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        cache
            .as_ref()
            .filter(|(key, _)| *key == (b, h, w))
            .map(|(_, pe)| Arc::clone(pe))
    }

    /// Replaces the unmerged LoRA terms of every layer (`None` or a layer no adapter targets: the base layer
    /// alone), without touching the base weights. Adapters merged at load stay merged: reload to remove them.
    pub fn set_unmerged_lora(&mut self, e: &E, lora: Option<&LoraLayers>) -> Result<()> {
        self.for_each_layer(lora, |_, linear, target| linear.set_lora(e, target))
    }

    /// Calls `apply` on every layer adapters may target, with `lora`'s terms on it, and fails on a target that is
    /// not such a layer.
    fn for_each_layer(
        &mut self,
        lora: Option<&LoraLayers>,
        mut apply: impl FnMut(&str, &mut Linear<E>, Option<&LoraTarget>) -> Result<()>,
    ) -> Result<()> {
        let mut applied = std::collections::HashSet::new();
        for (module, linear) in self.linears_mut() {
            let target = lora.and_then(|l| l.target(&module));
            apply(&module, linear, target)?;
            if target.is_some() {
                applied.insert(module);
            }
        }
        // resolve() admits only linear layers and 1×1 convolutions, which linears_mut lists; this guards that.
        match lora.and_then(|l| l.modules().find(|m| !applied.contains(*m))) {
            Some(module) => Err(Error::InvalidInput(format!(
                "LoRA target `{module}` is not a layer this transformer applies adapters to"
            ))),
            None => Ok(()),
        }
    }

    /// Every linear layer (and 1×1 convolution) with its checkpoint module path.
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear<E>)> {
        let mut out = vec![
            ("patch_embed.proj".to_string(), &mut self.patch_embed),
            ("proj_out".to_string(), &mut self.proj_out),
            (
                "caption_projection.linear_1".to_string(),
                &mut self.caption_projection.linear_1,
            ),
            (
                "caption_projection.linear_2".to_string(),
                &mut self.caption_projection.linear_2,
            ),
        ];
        let time = &mut self.time_embed;
        out.push(("time_embed.linear".to_string(), &mut time.linear));
        let embedders = [
            (
                if time.guidance_embedder.is_some() {
                    "time_embed.timestep_embedder"
                } else {
                    "time_embed.emb.timestep_embedder"
                },
                Some(&mut time.timestep_embedder),
            ),
            (
                "time_embed.guidance_embedder",
                time.guidance_embedder.as_mut(),
            ),
        ];
        for (name, mlp) in embedders {
            if let Some(mlp) = mlp {
                out.push((format!("{name}.linear_1"), &mut mlp.linear_1));
                out.push((format!("{name}.linear_2"), &mut mlp.linear_2));
            }
        }
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            let p = format!("transformer_blocks.{i}");
            let a1 = &mut blk.attn1;
            let a2 = &mut blk.attn2;
            out.extend([
                (format!("{p}.attn1.to_q"), &mut a1.to_q),
                (format!("{p}.attn1.to_k"), &mut a1.to_k),
                (format!("{p}.attn1.to_v"), &mut a1.to_v),
                (format!("{p}.attn1.to_out.0"), &mut a1.to_out),
                (format!("{p}.attn2.to_q"), &mut a2.to_q),
                (format!("{p}.attn2.to_k"), &mut a2.to_k),
                (format!("{p}.attn2.to_v"), &mut a2.to_v),
                (format!("{p}.attn2.to_out.0"), &mut a2.to_out),
                (format!("{p}.ff.conv_inverted"), &mut blk.ff.conv_inverted),
                (format!("{p}.ff.conv_point"), &mut blk.ff.conv_point),
            ]);
        }
        out
    }

    /// Builds the model from the checkpoint keys of `w` (`patch_embed.proj`, `transformer_blocks.{i}`, …),
    /// checking every shape against `config`.
    pub fn new(e: &E, config: TransformerConfig, w: &Weights) -> Result<Self> {
        let (c, d) = (config.in_channels, config.dim());
        let blocks = (0..config.num_layers)
            .map(|i| SanaBlock::new(e, &config, &w.prefix(format!("transformer_blocks.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            patch_embed: Linear::conv1x1(e, &w.prefix("patch_embed.proj"), c, d, true)?,
            time_embed: TimeEmbed::new(e, &config, &w.prefix("time_embed"))?,
            caption_projection: CaptionProjection::new(
                e,
                &config,
                &w.prefix("caption_projection"),
            )?,
            caption_norm: param(e, w, "caption_norm.weight", &[d])?,
            blocks,
            scale_shift_table: param(e, w, "scale_shift_table", &[2, d])?,
            proj_out: Linear::new(e, &w.prefix("proj_out"), d, config.out_channels(), true)?,
            position_embedding: Mutex::new(None),
            config,
        })
    }

    /// Projects and normalises the text embeddings `[B, L, caption_channels]` and turns the 0/1 mask `[B, L]` into
    /// the additive key bias.
    pub fn encode_text(
        &self,
        e: &E,
        encoder_hidden_states: &HostTensor,
        mask: &HostTensor,
    ) -> Result<TextConditioning<E>> {
        text_conditioning(
            e,
            (&self.config, &self.caption_projection, &self.caption_norm),
            &self.blocks,
            encoder_hidden_states,
            mask,
        )
    }

    /// Perturbed-attention guidance: the last `perturbed_rows` rows of `text`'s batch (the perturbed copy) run
    /// `blocks`' self-attention as the identity, on an `h·w = tokens` latent grid.
    pub fn perturb_self_attention(
        &self,
        e: &E,
        text: &mut TextConditioning<E>,
        blocks: &[usize],
        perturbed_rows: usize,
        tokens: usize,
    ) -> Result<()> {
        let b = e.shape(&text.caption)[0];
        if perturbed_rows == 0
            || perturbed_rows > b
            || blocks.iter().any(|&i| i >= self.blocks.len())
        {
            return Err(Error::InvalidInput(format!(
                "perturbed attention on {perturbed_rows} of {b} rows in blocks {blocks:?} of {}",
                self.blocks.len()
            )));
        }
        let row = tokens * self.config.dim();
        let keep: Vec<f32> = (0..b * row)
            .map(|i| {
                if i / row < b - perturbed_rows {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let identity: Vec<f32> = keep.iter().map(|k| 1.0 - k).collect();
        let shape = vec![b, tokens, self.config.dim()];
        text.perturbation = Some(Perturbation {
            blocks: blocks.to_vec(),
            keep: e.upload(&HostTensor::new(shape.clone(), keep)?)?,
            identity: e.upload(&HostTensor::new(shape, identity)?)?,
        });
        Ok(())
    }

    /// One forward pass: latents `[B, C, h, w]`, one timestep per batch element (already × `timestep_scale`),
    /// optional Sprint guidance values. Returns the velocity `[B, C, h, w]`.
    pub fn forward(
        &self,
        e: &E,
        latents: &HostTensor,
        text: &TextConditioning<E>,
        timestep: &[f32],
        guidance: Option<&[f32]>,
    ) -> Result<E::Tensor> {
        self.forward_traced(e, latents, text, timestep, guidance, &mut |_, _| Ok(()))
    }

    /// [`Self::forward`] on host latents `[B, C, h, w]` and host timesteps, returning `[B, C_out, h, w]`.
    pub fn forward_traced(
        &self,
        e: &E,
        latents: &HostTensor,
        text: &TextConditioning<E>,
        timestep: &[f32],
        guidance: Option<&[f32]>,
        trace: Trace<'_, E::Tensor>,
    ) -> Result<E::Tensor> {
        let c = self.config.in_channels;
        latents.expect_shape("hidden_states", &[None, Some(c), None, None])?;
        let (h, w) = (latents.shape()[2], latents.shape()[3]);
        let tokens = e.nchw_to_tokens(&e.upload(latents)?)?;
        let sinusoid = e.upload(&timestep_sinusoid(timestep, SINUSOID_CHANNELS)?)?;
        let guidance = match guidance {
            Some(g) => Some(e.upload(&timestep_sinusoid(g, SINUSOID_CHANNELS)?)?),
            None => None,
        };
        let out = self.forward_tokens(
            e,
            &tokens,
            (h, w),
            text,
            &sinusoid,
            guidance.as_ref(),
            None,
            trace,
        )?;
        let out = e.tokens_to_nchw(&out, h, w)?;
        trace("output", &out)?;
        Ok(out)
    }

    /// The transformer on device-resident input: latent tokens `[B, h·w, C]`, the timestep sinusoid `[B, 256]`
    /// (what the denoising loop builds on the device each step, see [`Engine::step_sinusoid`]) and, for Sana-Sprint,
    /// the guidance sinusoid `[B, 256]`; returns the prediction as tokens `[B, h·w, C_out]`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_tokens(
        &self,
        e: &E,
        tokens: &E::Tensor,
        (h, w): (usize, usize),
        text: &TextConditioning<E>,
        timestep_sinusoid: &E::Tensor,
        guidance_sinusoid: Option<&E::Tensor>,
        controlnet: Option<&[E::Tensor]>,
        trace: Trace<'_, E::Tensor>,
    ) -> Result<E::Tensor> {
        let c = self.config.in_channels;
        let &[b, n, tc] = e.shape(tokens) else {
            return Err(Error::shape(
                "hidden_states",
                format!(
                    "latent tokens must be [B, h·w, C], got {:?}",
                    e.shape(tokens)
                ),
            ));
        };
        if n != h * w || tc != c {
            return Err(Error::shape(
                "hidden_states",
                format!(
                    "latent tokens {:?} do not match [B, {h}·{w}, {c}]",
                    e.shape(tokens)
                ),
            ));
        }
        let text_batch = e.shape(&text.caption)[0];
        let t_batch = e.shape(timestep_sinusoid)[0];
        if t_batch != b || text_batch != b {
            return Err(Error::InvalidInput(format!(
                "batch sizes disagree: hidden_states {b}, encoder_hidden_states {text_batch}, timestep {t_batch}"
            )));
        }
        let mut x = self.patch_embed.forward(e, tokens)?;
        if let Some(scale) = self.config.interpolation_scale {
            let mut cache = self
                .position_embedding
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let key = (b, h, w);
            if cache.as_ref().is_none_or(|(k, _)| *k != key) {
                let base = self.config.sample_size / self.config.patch_size;
                let pe = sincos_position_embedding(self.config.dim(), h, w, base, scale)?;
                let pe = HostTensor::new(vec![b, h * w, self.config.dim()], pe.data().repeat(b))?;
                *cache = Some((key, Arc::new(e.upload(&pe)?)));
            }
            if let Some((_, pe)) = cache.as_ref() {
                x = e.add(&x, pe.as_ref())?;
            }
        }
        trace("patch_embed", &x)?;
        let (emb, modulation) = self
            .time_embed
            .forward(e, timestep_sinusoid, guidance_sinusoid)?;
        trace("embedded_timestep", &emb)?;
        trace("timestep_mod", &modulation)?;
        trace("caption", &text.caption)?;
        for (i, (blk, kv)) in self.blocks.iter().zip(&text.keys_values).enumerate() {
            let perturb = text.perturbation.as_ref().filter(|p| p.blocks.contains(&i));
            x = blk.forward(
                e,
                &x,
                (kv, &text.key_bias),
                perturb,
                &modulation,
                (h, w),
                i,
                trace,
            )?;
            // SanaTransformer2DModel adds `controlnet_block_samples[i − 1]` after block i, for 0 < i ≤ their count.
            if let Some(residual) = controlnet.and_then(|r| i.checked_sub(1).and_then(|j| r.get(j)))
            {
                x = e.add(&x, residual)?;
            }
            trace(&format!("blocks.{i}"), &x)?;
        }
        let m = e.modulation(&self.scale_shift_table, &emb)?;
        let x = e.layer_norm_modulate(&x, &m, 0, 1, self.config.norm_eps as f32)?;
        self.proj_out.forward(e, &x)
    }
}

/// The text side of a model with these caption layers and blocks (the transformer's, or a ControlNet's own).
fn text_conditioning<E: Engine>(
    e: &E,
    (config, projection, norm): (&TransformerConfig, &CaptionProjection<E>, &E::Tensor),
    blocks: &[SanaBlock<E>],
    encoder_hidden_states: &HostTensor,
    mask: &HostTensor,
) -> Result<TextConditioning<E>> {
    let cc = config.caption_channels;
    encoder_hidden_states.expect_shape("encoder_hidden_states", &[None, None, Some(cc)])?;
    let (b, l) = (
        encoder_hidden_states.shape()[0],
        encoder_hidden_states.shape()[1],
    );
    mask.expect_shape("encoder_attention_mask", &[Some(b), Some(l)])?;
    let bias: Vec<f32> = mask.data().iter().map(|&m| (1.0 - m) * MASK_BIAS).collect();
    let key_bias = e.upload(&HostTensor::new(vec![b, l], bias)?)?;
    let y = projection.forward(e, &e.upload(encoder_hidden_states)?)?;
    let caption = e.rms_norm(&y, norm, None, RMS_EPS)?;
    let keys_values = blocks
        .iter()
        .map(|blk| blk.attn2.keys_values(e, &caption))
        .collect::<Result<_>>()?;
    Ok(TextConditioning {
        caption,
        key_bias,
        keys_values,
        perturbation: None,
    })
}

/// `time_embed`: AdaLN-single (`emb.timestep_embedder`), or Sprint's timestep + guidance embedders.
struct TimeEmbed<E: Engine> {
    timestep_embedder: Mlp<E>,
    guidance_embedder: Option<Mlp<E>>,
    linear: Linear<E>,
}

/// `linear_2(SiLU(linear_1(sinusoid(t))))`.
struct Mlp<E: Engine> {
    linear_1: Linear<E>,
    linear_2: Linear<E>,
}

/// Channels of the timestep sinusoid the time embedders take.
pub const SINUSOID_CHANNELS: usize = 256;

impl<E: Engine> Mlp<E> {
    fn new(e: &E, d: usize, w: &Weights) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(e, &w.prefix("linear_1"), SINUSOID_CHANNELS, d, true)?,
            linear_2: Linear::new(e, &w.prefix("linear_2"), d, d, true)?,
        })
    }

    fn forward(&self, e: &E, sinusoid: &E::Tensor) -> Result<E::Tensor> {
        let hidden = self.linear_1.forward_act(e, sinusoid, Activation::Silu)?;
        self.linear_2.forward(e, &hidden)
    }
}

impl<E: Engine> TimeEmbed<E> {
    fn new(e: &E, cfg: &TransformerConfig, w: &Weights) -> Result<Self> {
        let d = cfg.dim();
        let (timestep_embedder, guidance_embedder) = if cfg.guidance_embeds {
            (
                Mlp::new(e, d, &w.prefix("timestep_embedder"))?,
                Some(Mlp::new(e, d, &w.prefix("guidance_embedder"))?),
            )
        } else {
            (Mlp::new(e, d, &w.prefix("emb.timestep_embedder"))?, None)
        };
        Ok(Self {
            timestep_embedder,
            guidance_embedder,
            linear: Linear::new(e, &w.prefix("linear"), d, 6 * d, true)?,
        })
    }

    /// Returns `(emb [B, D], modulation [B, 6D])`.
    fn forward(
        &self,
        e: &E,
        t_sinusoid: &E::Tensor,
        g_sinusoid: Option<&E::Tensor>,
    ) -> Result<(E::Tensor, E::Tensor)> {
        let mut emb = self.timestep_embedder.forward(e, t_sinusoid)?;
        match (&self.guidance_embedder, g_sinusoid) {
            (Some(g), Some(sinusoid)) => emb = e.add(&emb, &g.forward(e, sinusoid)?)?,
            (Some(_), None) => {
                return Err(Error::InvalidInput(
                    "this transformer has guidance_embeds = true: a guidance value is required"
                        .into(),
                ))
            }
            (None, _) => {}
        }
        let modulation = self
            .linear
            .forward(e, &e.activation(&emb, Activation::Silu)?)?;
        Ok((emb, modulation))
    }
}

/// `caption_projection`: `linear_2(GELU_tanh(linear_1(y)))`.
struct CaptionProjection<E: Engine> {
    linear_1: Linear<E>,
    linear_2: Linear<E>,
}

impl<E: Engine> CaptionProjection<E> {
    fn new(e: &E, cfg: &TransformerConfig, w: &Weights) -> Result<Self> {
        let d = cfg.dim();
        Ok(Self {
            linear_1: Linear::new(e, &w.prefix("linear_1"), cfg.caption_channels, d, true)?,
            linear_2: Linear::new(e, &w.prefix("linear_2"), d, d, true)?,
        })
    }

    fn forward(&self, e: &E, y: &E::Tensor) -> Result<E::Tensor> {
        let hidden = self.linear_1.forward_act(e, y, Activation::GeluTanh)?;
        self.linear_2.forward(e, &hidden)
    }
}

/// `transformer_blocks.{i}` (docs/numerics/transformer.md §7).
struct SanaBlock<E: Engine> {
    scale_shift_table: E::Tensor,
    attn1: LinearSelfAttention<E>,
    attn2: CrossAttention<E>,
    ff: GluMbConv<E>,
    eps: f32,
}

impl<E: Engine> SanaBlock<E> {
    fn new(e: &E, cfg: &TransformerConfig, w: &Weights) -> Result<Self> {
        Ok(Self {
            scale_shift_table: param(e, w, "scale_shift_table", &[6, cfg.dim()])?,
            attn1: LinearSelfAttention::new(e, cfg, &w.prefix("attn1"))?,
            attn2: CrossAttention::new(e, cfg, &w.prefix("attn2"))?,
            ff: GluMbConv::new(e, cfg, &w.prefix("ff"))?,
            eps: cfg.norm_eps as f32,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        e: &E,
        x: &E::Tensor,
        (text_kv, key_bias): (&(E::Tensor, E::Tensor), &E::Tensor),
        perturb: Option<&Perturbation<E>>,
        modulation: &E::Tensor,
        grid: (usize, usize),
        index: usize,
        trace: Trace<'_, E::Tensor>,
    ) -> Result<E::Tensor> {
        // rows: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
        let m = e.modulation(&self.scale_shift_table, modulation)?;
        let z = e.layer_norm_modulate(x, &m, 0, 1, self.eps)?;
        let a = self.attn1.forward(e, &z, perturb)?;
        trace(&format!("blocks.{index}.attn1"), &a)?;
        let x = e.gated_residual(x, &a, &m, 2)?;
        let a = self.attn2.forward(e, &x, text_kv, key_bias)?;
        trace(&format!("blocks.{index}.attn2"), &a)?;
        let (x, z) = e.residual_layer_norm_modulate(&x, &a, None, &m, (3, 4), self.eps)?;
        let f = self.ff.forward(e, &z, grid)?;
        trace(&format!("blocks.{index}.ff"), &f)?;
        e.gated_residual(&x, &f, &m, 5)
    }
}

/// Optional `norm_q`/`norm_k` (SANA-1.5, Sprint: RMSNorm across all heads, eps 1e-5).
struct QkNorm<E: Engine> {
    q: E::Tensor,
    k: E::Tensor,
}

impl<E: Engine> QkNorm<E> {
    fn new(e: &E, cfg: &TransformerConfig, w: &Weights) -> Result<Option<Self>> {
        if !cfg.has_qk_norm() {
            return Ok(None);
        }
        let d = cfg.dim();
        Ok(Some(Self {
            q: param(e, w, "norm_q.weight", &[d])?,
            k: param(e, w, "norm_k.weight", &[d])?,
        }))
    }
}

fn maybe_norm<E: Engine>(e: &E, x: E::Tensor, weight: Option<&E::Tensor>) -> Result<E::Tensor> {
    match weight {
        Some(w) => e.rms_norm(&x, w, None, RMS_EPS),
        None => Ok(x),
    }
}

/// `attn1`: ReLU linear self-attention over image tokens (docs/numerics/transformer.md §8).
struct LinearSelfAttention<E: Engine> {
    to_q: Linear<E>,
    to_k: Linear<E>,
    to_v: Linear<E>,
    norm: Option<QkNorm<E>>,
    to_out: Linear<E>,
    heads: usize,
}

impl<E: Engine> LinearSelfAttention<E> {
    fn new(e: &E, cfg: &TransformerConfig, w: &Weights) -> Result<Self> {
        let (d, bias) = (cfg.dim(), cfg.attention_bias);
        Ok(Self {
            to_q: Linear::new(e, &w.prefix("to_q"), d, d, bias)?,
            to_k: Linear::new(e, &w.prefix("to_k"), d, d, bias)?,
            to_v: Linear::new(e, &w.prefix("to_v"), d, d, bias)?,
            norm: QkNorm::new(e, cfg, w)?,
            to_out: Linear::new(e, &w.prefix("to_out.0"), d, d, true)?,
            heads: cfg.num_attention_heads,
        })
    }

    fn forward(
        &self,
        e: &E,
        z: &E::Tensor,
        perturb: Option<&Perturbation<E>>,
    ) -> Result<E::Tensor> {
        // diffusers' PAG processors never apply norm_q/norm_k, on any row of a perturbed layer: so neither do we.
        let norm = self.norm.as_ref().filter(|_| perturb.is_none());
        let q = maybe_norm(e, self.to_q.forward(e, z)?, norm.map(|n| &n.q))?;
        let k = maybe_norm(e, self.to_k.forward(e, z)?, norm.map(|n| &n.k))?;
        let v = self.to_v.forward(e, z)?;
        let mut a = e.linear_attention(&q, &k, &v, self.heads, LINEAR_ATTN_EPS)?;
        if let Some(p) = perturb {
            a = e.add(&e.mul(&a, &p.keep)?, &e.mul(&v, &p.identity)?)?;
        }
        self.to_out.forward(e, &a)
    }
}

/// `attn2`: softmax cross-attention from image tokens to the caption; the query is the raw residual stream.
struct CrossAttention<E: Engine> {
    to_q: Linear<E>,
    to_k: Linear<E>,
    to_v: Linear<E>,
    norm: Option<QkNorm<E>>,
    to_out: Linear<E>,
    heads: usize,
}

impl<E: Engine> CrossAttention<E> {
    fn new(e: &E, cfg: &TransformerConfig, w: &Weights) -> Result<Self> {
        let d = cfg.dim();
        Ok(Self {
            to_q: Linear::new(e, &w.prefix("to_q"), d, d, true)?,
            to_k: Linear::new(e, &w.prefix("to_k"), cfg.cross_attention_dim, d, true)?,
            to_v: Linear::new(e, &w.prefix("to_v"), cfg.cross_attention_dim, d, true)?,
            norm: QkNorm::new(e, cfg, w)?,
            to_out: Linear::new(e, &w.prefix("to_out.0"), d, d, true)?,
            heads: cfg.num_cross_attention_heads,
        })
    }

    fn keys_values(&self, e: &E, caption: &E::Tensor) -> Result<(E::Tensor, E::Tensor)> {
        let k = maybe_norm(
            e,
            self.to_k.forward(e, caption)?,
            self.norm.as_ref().map(|n| &n.k),
        )?;
        Ok((k, self.to_v.forward(e, caption)?))
    }

    fn forward(
        &self,
        e: &E,
        x: &E::Tensor,
        (k, v): &(E::Tensor, E::Tensor),
        key_bias: &E::Tensor,
    ) -> Result<E::Tensor> {
        let q = maybe_norm(
            e,
            self.to_q.forward(e, x)?,
            self.norm.as_ref().map(|n| &n.q),
        )?;
        let a = e.attention(&q, k, v, key_bias, self.heads)?;
        self.to_out.forward(e, &a)
    }
}

/// `ff`: GLUMBConv Mix-FFN (docs/numerics/transformer.md §11), on channels-last tokens.
struct GluMbConv<E: Engine> {
    conv_inverted: Linear<E>,
    conv_depth_weight: E::Tensor,
    conv_depth_bias: E::Tensor,
    conv_point: Linear<E>,
}

impl<E: Engine> GluMbConv<E> {
    fn new(e: &E, cfg: &TransformerConfig, w: &Weights) -> Result<Self> {
        let (d, f) = (cfg.dim(), cfg.ffn_dim());
        let depth = w.get_shaped("conv_depth.weight", &[2 * f, 1, 3, 3])?;
        Ok(Self {
            conv_inverted: Linear::conv1x1(e, &w.prefix("conv_inverted"), d, 2 * f, true)?,
            conv_depth_weight: e.load(&depth, &[2 * f, 9])?,
            conv_depth_bias: param(e, w, "conv_depth.bias", &[2 * f])?,
            conv_point: Linear::conv1x1(e, &w.prefix("conv_point"), f, d, false)?,
        })
    }

    fn forward(&self, e: &E, z: &E::Tensor, (h, w): (usize, usize)) -> Result<E::Tensor> {
        let u = self.conv_inverted.forward_act(e, z, Activation::Silu)?;
        let u = e.dwconv3x3_glu(&u, &self.conv_depth_weight, &self.conv_depth_bias, h, w)?;
        self.conv_point.forward(e, &u)
    }
}
