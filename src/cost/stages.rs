//! The cost of each pipeline stage from the configs alone, op for op as the model code calls the engine
//! (`model/gemma2.rs`, `model/sana_dit.rs`, `model/dc_ae.rs`); `tests/cost_model.rs` checks every figure against
//! the instrumented engine on the tiny model. Keep these in step with the model code.

use crate::cost::Cost;
use crate::model::config::{TransformerConfig, VaeBlock, VaeConfig};
use crate::model::gemma2::GemmaConfig;

/// Sinusoid width of the timestep embedders (`model/sana_dit.rs`).
const SINUSOID_CHANNELS: usize = 256;

/// The shapes of one generation that the costs depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Images per prompt.
    pub batch: usize,
    /// Latent grid (image size / the VAE's spatial factor).
    pub latent: (usize, usize),
    /// Gemma's sequence for the prompt (`n_chi + max_sequence_length − 2` with CHI).
    pub prompt_tokens: usize,
    /// Caption rows the DiT attends to (`max_sequence_length`).
    pub text_rows: usize,
    /// Classifier-free guidance: the negative prompt is encoded too and the DiT batch doubles.
    pub cfg: bool,
    pub steps: usize,
    /// Perturbed-attention guidance's perturbed blocks (0: PAG off): a further copy of the batch, and the
    /// identity attention's mixing in each of these blocks.
    pub pag_blocks: usize,
}

impl Workload {
    /// Sequences per DiT forward: the batch, CFG's unconditional copy, PAG's perturbed copy.
    pub fn model_batch(&self) -> usize {
        (1 + usize::from(self.cfg) + usize::from(self.pag_blocks > 0)) * self.batch
    }
}

/// The cost of every stage of one generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageCosts {
    /// Gemma over the prompt (and the negative prompt under CFG), once per generation.
    pub text_encode: Cost,
    /// The DiT's caption projection and every block's cross-attention keys/values, once per generation.
    pub conditioning: Cost,
    /// One denoising step over the model batch: a DiT forward, plus the sampler's ops on the flow loop.
    pub step: Cost,
    /// The VAE decoder, untiled.
    pub decode: Cost,
    pub steps: usize,
}

impl StageCosts {
    pub fn new(
        gemma: &GemmaConfig,
        dit: &TransformerConfig,
        vae: &VaeConfig,
        w: &Workload,
    ) -> Self {
        let b = w.model_batch();
        let mut text_encode = gemma_forward(gemma, 1, w.prompt_tokens);
        if w.cfg {
            text_encode += gemma_forward(gemma, 1, w.text_rows);
        }
        Self {
            text_encode,
            conditioning: dit_conditioning(dit, b, w.text_rows),
            step: loop_step(dit, w),
            decode: vae_decode(vae, w.batch, w.latent),
            steps: w.steps,
        }
    }

    /// Adds a ControlNet of config `net` (`model/sana_dit/controlnet.rs`) beside a transformer of `dit_layers`
    /// blocks: once per generation its text side and the embedded control latents; every step its forward, the
    /// scaling of each residual and the transformer's adds of them. (The control image's VAE encode is not counted.)
    pub fn with_controlnet(
        mut self,
        net: &TransformerConfig,
        dit_layers: usize,
        w: &Workload,
    ) -> Self {
        let (b, (h, wd)) = (w.model_batch(), w.latent);
        let (n, d) = (b * h * wd, net.dim());
        let x = n * d;
        self.conditioning += dit_conditioning(net, b, w.text_rows);
        self.conditioning.linear(n, net.in_channels, d, true);
        self.conditioning.linear(n, d, d, true);
        let mut step = Cost::default();
        step.linear(n, net.in_channels, d, true);
        step.pass(2 * x, x);
        step.linear(b, SINUSOID_CHANNELS, d, true);
        step.linear(b, d, d, true);
        step.pass(b * d, b * d);
        step.linear(b, d, 6 * d, true);
        step += dit_blocks(net, b, w.latent, w.text_rows);
        for _ in 0..net.num_layers {
            step.linear(n, d, d, true);
            step.pass(2 * x, x);
        }
        let added = net.num_layers.min(dit_layers.saturating_sub(1));
        for _ in 0..added {
            step.pass(2 * x, x);
        }
        self.step += step;
        self
    }

    /// Conditioning plus every step.
    pub fn denoise(&self) -> Cost {
        self.conditioning + self.step * self.steps as u64
    }

    pub fn total(&self) -> Cost {
        self.text_encode + self.denoise() + self.decode
    }
}

/// `Gemma2Model::forward` over `batch` sequences of `len` tokens.
pub fn gemma_forward(cfg: &GemmaConfig, batch: usize, len: usize) -> Cost {
    let (d, f, hd) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (heads, kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
    let (rows, bias) = (batch * len, cfg.attention_bias);
    let x = rows * d;
    let norm = |c: &mut Cost, n: usize| c.pass(n + d, n);
    let mut c = Cost::default();
    c.pass(rows * d, rows * d);
    for window in &cfg.windows {
        norm(&mut c, x);
        c.linear(rows, d, heads * hd, bias);
        c.linear(rows, d, kv_heads * hd, bias);
        c.linear(rows, d, kv_heads * hd, bias);
        for h in [heads, kv_heads] {
            c.pass(rows * h * hd + 2 * len * hd, rows * h * hd);
        }
        c.causal_attention(batch, len, (heads, kv_heads, hd), *window);
        c.linear(rows, heads * hd, d, bias);
        norm(&mut c, x);
        c.pass(2 * x, x);
        norm(&mut c, x);
        c.linear(rows, d, f, false);
        c.linear(rows, d, f, false);
        c.pass(2 * rows * f, rows * f);
        c.linear(rows, f, d, false);
        norm(&mut c, x);
        c.pass(2 * x, x);
    }
    norm(&mut c, x);
    c
}

/// `SanaTransformer::encode_text` for `batch` captions of `rows` rows.
pub fn dit_conditioning(cfg: &TransformerConfig, batch: usize, rows: usize) -> Cost {
    let (d, n) = (cfg.dim(), batch * rows);
    let mut c = Cost::default();
    c.linear(n, cfg.caption_channels, d, true);
    c.linear(n, d, d, true);
    c.pass(n * d + d, n * d);
    for _ in 0..cfg.num_layers {
        c.linear(n, cfg.cross_attention_dim, d, true);
        if cfg.has_qk_norm() {
            c.pass(n * d + d, n * d);
        }
        c.linear(n, cfg.cross_attention_dim, d, true);
    }
    c
}

/// One `SanaTransformer::forward` over `batch` host latents of `grid` with `rows` caption rows: the layout passes
/// into and out of tokens around [`dit_forward_tokens`].
pub fn dit_step(
    cfg: &TransformerConfig,
    batch: usize,
    (h, w): (usize, usize),
    rows: usize,
) -> Cost {
    let n = batch * h * w;
    let mut c = Cost::default();
    c.pass(n * cfg.in_channels, n * cfg.in_channels);
    c += dit_forward_tokens(cfg, batch, (h, w), rows);
    c.pass(n * cfg.out_channels(), n * cfg.out_channels());
    c
}

/// One step of the pipeline's denoising loop over the model batch: the model input from the f32 latents, the
/// timestep sinusoid, [`dit_forward_tokens`], the sampler update (reads the output, the latents, the clean estimate
/// and, for Sana-Sprint's SCM, the step's noise; writes the latents and the clean estimate) and the schedule advance.
pub fn loop_step(cfg: &TransformerConfig, w: &Workload) -> Cost {
    let (b, (h, wd)) = (w.model_batch(), w.latent);
    let len = w.batch * h * wd * cfg.in_channels;
    let mut c = Cost::default();
    c.pass(len, b * h * wd * cfg.in_channels);
    c.pass(1, b * SINUSOID_CHANNELS);
    c += dit_forward_tokens(cfg, b, w.latent, w.text_rows);
    // PAG's identity attention: `a·keep + v·identity` in each perturbed block.
    let x = b * h * wd * cfg.dim();
    for _ in 0..w.pag_blocks {
        c.pass(2 * x, x);
        c.pass(2 * x, x);
        c.pass(2 * x, x);
    }
    let noise = if cfg.guidance_embeds { len } else { 0 };
    c.pass(b * h * wd * cfg.out_channels() + 2 * len + noise, 2 * len);
    c.pass(1, 1);
    c
}

/// `SanaTransformer::forward_tokens` over `batch` latent token sequences of `grid` with `rows` caption rows.
pub fn dit_forward_tokens(
    cfg: &TransformerConfig,
    batch: usize,
    (h, w): (usize, usize),
    rows: usize,
) -> Cost {
    let (d, ch) = (cfg.dim(), cfg.in_channels);
    let n = batch * h * w;
    let x = n * d;
    let mut c = Cost::default();
    c.linear(n, ch, d, true);
    if cfg.interpolation_scale.is_some() {
        c.pass(2 * x, x);
    }
    let embedders = if cfg.guidance_embeds { 2 } else { 1 };
    for _ in 0..embedders {
        c.linear(batch, SINUSOID_CHANNELS, d, true);
        c.linear(batch, d, d, true);
    }
    if cfg.guidance_embeds {
        c.pass(2 * batch * d, batch * d);
    }
    c.pass(batch * d, batch * d);
    c.linear(batch, d, 6 * d, true);
    c += dit_blocks(cfg, batch, (h, w), rows);
    let m = batch * 2 * d;
    c.pass(2 * d + batch * d, m);
    c.pass(x + m, x);
    c.linear(n, d, cfg.out_channels(), true);
    c
}

/// The `num_layers` blocks of a DiT (or ControlNet) over `batch` sequences of `grid` with `rows` caption rows.
fn dit_blocks(cfg: &TransformerConfig, batch: usize, (h, w): (usize, usize), rows: usize) -> Cost {
    let (d, f) = (cfg.dim(), cfg.ffn_dim());
    let n = batch * h * w;
    let x = n * d;
    let mut c = Cost::default();
    let m = batch * 6 * d;
    let qk_norm = |c: &mut Cost| {
        if cfg.has_qk_norm() {
            c.pass(x + d, x);
        }
    };
    for _ in 0..cfg.num_layers {
        c.pass(6 * d + m, m);
        c.pass(x + m, x);
        c.linear(n, d, d, cfg.attention_bias);
        qk_norm(&mut c);
        c.linear(n, d, d, cfg.attention_bias);
        qk_norm(&mut c);
        c.linear(n, d, d, cfg.attention_bias);
        c.linear_attention(
            batch,
            h * w,
            cfg.num_attention_heads,
            cfg.attention_head_dim,
        );
        c.linear(n, d, d, true);
        c.pass(2 * x + m, x);
        c.linear(n, d, d, true);
        qk_norm(&mut c);
        c.attention(
            batch,
            (h * w, rows),
            cfg.num_cross_attention_heads,
            cfg.cross_attention_head_dim,
        );
        c.linear(n, d, d, true);
        c.pass(2 * x + m, 2 * x);
        c.linear(n, d, 2 * f, true);
        c.dwconv3x3_glu(n, 2 * f);
        c.linear(n, f, d, false);
        c.pass(2 * x + m, x);
    }
    c
}

/// `DcAeDecoder::decode` of `batch` latents of `grid`, untiled.
pub fn vae_decode(cfg: &VaeConfig, batch: usize, (h, w): (usize, usize)) -> Cost {
    let stages = &cfg.stages;
    let n = stages.len();
    let (lc, deepest) = (cfg.latent_channels, stages[n - 1].channels);
    let mut c = Cost::default();
    let latent = batch * h * w * lc;
    c.pass(latent, latent);
    c.conv3x3(batch, (h * w, h * w), (lc, deepest), true);
    if cfg.in_shortcut {
        let x = batch * h * w * deepest;
        c.pass(latent, x);
        c.pass(2 * x, x);
    }
    let (mut h, mut w) = (h, w);
    for i in (0..n).rev() {
        let stage = &stages[i];
        let ch = stage.channels;
        if cfg.has_upsampler(i) {
            let cin = stages[i + 1].channels;
            let input = batch * h * w * cin;
            let (out_pixels, x) = (4 * h * w, batch * 4 * h * w * ch);
            if cfg.interpolate {
                c.pass(input, 4 * input);
                c.conv3x3(batch, (out_pixels, out_pixels), (cin, ch), true);
            } else {
                c.conv3x3(batch, (h * w, h * w), (cin, 4 * ch), true);
                c.pass(x, x);
            }
            c.pass(input, x);
            c.pass(2 * x, x);
            (h, w) = (2 * h, 2 * w);
        }
        for _ in 0..stage.layers {
            match stage.block {
                VaeBlock::Res => res_block(&mut c, batch, h * w, ch),
                VaeBlock::EfficientVit => {
                    lite_mla(&mut c, cfg, batch, h * w, ch, &stage.multiscales);
                    glu_mb_conv(&mut c, batch * h * w, ch);
                }
            }
        }
    }
    let first = stages[0].channels;
    let x = batch * h * w * first;
    channel_norm(&mut c, x, first);
    c.pass(x, x);
    c.conv3x3(batch, (h * w, h * w), (first, cfg.in_channels), true);
    let image = batch * h * w * cfg.in_channels;
    c.pass(image, image);
    c
}

fn channel_norm(c: &mut Cost, x: usize, ch: usize) {
    c.pass(x + 2 * ch, x);
}

fn res_block(c: &mut Cost, batch: usize, pixels: usize, ch: usize) {
    let x = batch * pixels * ch;
    c.conv3x3(batch, (pixels, pixels), (ch, ch), true);
    c.pass(x, x);
    c.conv3x3(batch, (pixels, pixels), (ch, ch), false);
    channel_norm(c, x, ch);
    c.pass(2 * x, x);
}

fn lite_mla(
    c: &mut Cost,
    cfg: &VaeConfig,
    batch: usize,
    pixels: usize,
    ch: usize,
    kernels: &[usize],
) {
    let (rows, hd) = (batch * pixels, cfg.attention_head_dim);
    let heads = ch / hd;
    let attend = |c: &mut Cost| {
        c.pass(3 * rows * ch, 3 * rows * ch);
        c.linear_attention(batch, pixels, heads, hd);
    };
    c.linear(rows, ch, 3 * ch, false);
    attend(c);
    for (s, &k) in kernels.iter().enumerate() {
        c.depthwise_conv(rows, 3 * ch, k, false);
        c.grouped_linear(rows, 3 * ch, 3 * ch, 3 * heads);
        attend(c);
        let concat = (s + 2) * rows * ch;
        c.pass(concat, concat);
    }
    let x = rows * ch;
    c.linear(rows, (1 + kernels.len()) * ch, ch, false);
    channel_norm(c, x, ch);
    c.pass(2 * x, x);
}

fn glu_mb_conv(c: &mut Cost, rows: usize, ch: usize) {
    let x = rows * ch;
    c.linear(rows, ch, 8 * ch, true);
    c.dwconv3x3_glu(rows, 8 * ch);
    c.linear(rows, 4 * ch, ch, false);
    channel_norm(c, x, ch);
    c.pass(2 * x, x);
}
