//! `SanaControlNetModel` (diffusers' models/controlnets/controlnet_sana.py): a copy of the DiT's trunk — patch
//! embedding, AdaLN-single time embedding, its own caption projection and norm, `num_layers` blocks — whose input
//! adds `input_block(patch_embed(control latents))` to the patch-embedded sample, and whose every block output goes
//! through `controlnet_blocks.{i}` (a linear layer) and is scaled by the conditioning scale: the residuals
//! [`SanaTransformer::forward_tokens`] adds after its blocks 1, 2, ….

use super::*;

/// `SanaControlNetModel` with its weights on engine `E`.
pub struct SanaControlNet<E: Engine> {
    /// The config the model was built from (`controlnet/config.json`; the transformer's keys).
    pub config: TransformerConfig,
    patch_embed: Linear<E>,
    time_embed: TimeEmbed<E>,
    caption_projection: CaptionProjection<E>,
    caption_norm: E::Tensor,
    blocks: Vec<SanaBlock<E>>,
    input_block: Linear<E>,
    controlnet_blocks: Vec<Linear<E>>,
}

impl<E: Engine> SanaControlNet<E> {
    /// Loads `dir/config.json` and the weights of a diffusers `controlnet/` folder.
    pub fn from_dir(e: &E, dir: &std::path::Path) -> Result<Self> {
        let config = TransformerConfig::load(&dir.join("config.json"))?;
        let weights = Weights::open(dir, "diffusion_pytorch_model")?;
        Self::new(e, config, &weights)
    }

    /// Builds the model from the checkpoint keys of `w`, checking every shape against `config`.
    pub fn new(e: &E, config: TransformerConfig, w: &Weights) -> Result<Self> {
        if config.interpolation_scale.is_some() || config.guidance_embeds || config.has_qk_norm() {
            return Err(Error::InvalidInput(
                "a SanaControlNetModel with a position embedding (interpolation_scale), guidance_embeds or q/k \
                 norms is not supported here (diffusers' has none of them by default)"
                    .into(),
            ));
        }
        let (c, d) = (config.in_channels, config.dim());
        let blocks = (0..config.num_layers)
            .map(|i| SanaBlock::new(e, &config, &w.prefix(format!("transformer_blocks.{i}"))))
            .collect::<Result<_>>()?;
        let controlnet_blocks = (0..config.num_layers)
            .map(|i| Linear::new(e, &w.prefix(format!("controlnet_blocks.{i}")), d, d, true))
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
            input_block: Linear::new(e, &w.prefix("input_block"), d, d, true)?,
            controlnet_blocks,
            config,
        })
    }

    /// The ControlNet's own text side (its caption projection and blocks), as [`SanaTransformer::encode_text`].
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

    /// `input_block(patch_embed(control))` for the control latents as tokens `[B, h·w, C]`: the same every step,
    /// so computed once per generation.
    pub fn embed_control(&self, e: &E, control_tokens: &E::Tensor) -> Result<E::Tensor> {
        self.input_block
            .forward(e, &self.patch_embed.forward(e, control_tokens)?)
    }

    /// The residuals `controlnet_block_samples` `[B, h·w, D]` for latent tokens `[B, h·w, C]`, as
    /// [`SanaTransformer::forward_tokens`] takes its input; `control` is [`Self::embed_control`]'s output and `scale`
    /// a `[B, h·w, D]` tensor of the conditioning scale (the residuals' product with it is rounded once, to the
    /// storage dtype, as PyTorch rounds `sample * conditioning_scale`).
    pub fn forward_tokens(
        &self,
        e: &E,
        tokens: &E::Tensor,
        (h, w): (usize, usize),
        text: &TextConditioning<E>,
        timestep_sinusoid: &E::Tensor,
        (control, scale): (&E::Tensor, &E::Tensor),
    ) -> Result<Vec<E::Tensor>> {
        let x = self.patch_embed.forward(e, tokens)?;
        if e.shape(&x) != e.shape(control) || e.shape(control) != e.shape(scale) {
            return Err(Error::shape(
                "controlnet_cond",
                format!(
                    "embedded sample {:?}, control {:?} and scale {:?} differ",
                    e.shape(&x),
                    e.shape(control),
                    e.shape(scale)
                ),
            ));
        }
        let mut x = e.add(&x, control)?;
        let (_, modulation) = self.time_embed.forward(e, timestep_sinusoid, None)?;
        let mut residuals = Vec::with_capacity(self.blocks.len());
        for (i, ((blk, kv), out)) in self
            .blocks
            .iter()
            .zip(&text.keys_values)
            .zip(&self.controlnet_blocks)
            .enumerate()
        {
            x = blk.forward(
                e,
                &x,
                (kv, &text.key_bias),
                None,
                &modulation,
                (h, w),
                i,
                &mut |_, _| Ok(()),
            )?;
            residuals.push(e.mul(&out.forward(e, &x)?, scale)?);
        }
        Ok(residuals)
    }
}
