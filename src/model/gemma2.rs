//! `Gemma2Model` (the decoder stack without LM head, docs/numerics/text-encoder.md §7–§10), generic over the engine.
//! Structs mirror the checkpoint's module tree; key names appear verbatim. The default attention matches transformers'
//! eager path (≥ 5.21, and ≤ 4.47), which soft-caps the scores; `Gemma2Model::attn_softcap = false` gives the
//! 4.48–5.20 SDPA numbers (docs/numerics/README.md §6).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::engine::{Activation, CausalAttention, Engine};
use crate::error::{Error, Result};
use crate::model::config::read_config;
use crate::model::layers::{param, Linear};
use crate::tensor::HostTensor;
use crate::weights::Weights;

pub use super::Trace;

/// `text_encoder/config.json`, in the transformers 4.x form (`rope_theta`, sliding window on even layers) or the
/// 5.x form (`rope_parameters`, `layer_types`). Missing fields take `Gemma2Config`'s defaults (gemma-2-2b).
#[derive(Clone, Debug, PartialEq)]
pub struct GemmaConfig {
    /// `vocab_size`: rows of `embed_tokens` (default 256000).
    pub vocab_size: usize,
    /// `hidden_size`: the model width, and the width of the embeddings Sana's caption projection takes
    /// (default 2304).
    pub hidden_size: usize,
    /// `intermediate_size`: the gated MLP's hidden width (default 9216).
    pub intermediate_size: usize,
    /// `num_hidden_layers`: decoder layers (default 26).
    pub num_hidden_layers: usize,
    /// `num_attention_heads`: query heads (default 8).
    pub num_attention_heads: usize,
    /// `num_key_value_heads`: key/value heads, each shared by `num_attention_heads / num_key_value_heads` query
    /// heads (default 4).
    pub num_key_value_heads: usize,
    /// `head_dim`: size of every attention head (default 256); even, as RoPE rotates half-pairs.
    pub head_dim: usize,
    /// `rms_norm_eps`: epsilon of every RMSNorm (default 1e-6).
    pub rms_norm_eps: f64,
    /// RoPE base: `rope_parameters.rope_theta` (5.x), `rope_scaling.rope_theta` or the top-level `rope_theta`
    /// (default 10000).
    pub rope_theta: f64,
    /// `query_pre_attn_scalar`: the scores are scaled by its inverse square root (default 256).
    pub query_pre_attn_scalar: f64,
    /// `attn_logit_softcapping`: the eager path's score soft-cap `c·tanh(s/c)` (default 50.0); null: none.
    pub attn_logit_softcapping: Option<f64>,
    /// `attention_bias`: whether the q/k/v/o projections have a bias (default false).
    pub attention_bias: bool,
    /// Per layer: the sliding window, or `None` for a global layer.
    pub windows: Vec<Option<usize>>,
    /// The `text_encoder/config.json` this was read from.
    pub source: PathBuf,
}

#[derive(Deserialize)]
struct RawGemmaConfig {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_activation: Option<String>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    query_pre_attn_scalar: Option<f64>,
    #[serde(default = "default_softcap")]
    attn_logit_softcapping: Option<f64>,
    #[serde(default = "default_window")]
    sliding_window: Option<usize>,
    layer_types: Option<Vec<String>>,
    sliding_window_pattern: Option<usize>,
    attention_bias: Option<bool>,
    use_bidirectional_attention: Option<bool>,
}

fn default_softcap() -> Option<f64> {
    Some(50.0)
}

fn default_window() -> Option<usize> {
    Some(4096)
}

impl GemmaConfig {
    /// Reads and validates `path` (a `text_encoder/config.json`).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_raw(read_config(path)?, path)
    }

    /// Parses config JSON text; `path` only names the source in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let raw = serde_json::from_str(text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_raw(raw, path)
    }

    fn from_raw(raw: RawGemmaConfig, path: &Path) -> Result<Self> {
        let err = |field: &str, reason: String| Error::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let hidden_size = raw.hidden_size.unwrap_or(2304);
        let heads = raw.num_attention_heads.unwrap_or(8);
        let kv_heads = raw.num_key_value_heads.unwrap_or(4);
        let layers = raw.num_hidden_layers.unwrap_or(26);
        crate::model::config::check_layers(path, "num_hidden_layers", layers)?;
        crate::model::config::check_positive(
            path,
            "rms_norm_eps",
            raw.rms_norm_eps.unwrap_or(1e-6),
            true,
        )?;
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(err(
                "num_key_value_heads",
                format!("{kv_heads} key/value heads cannot serve {heads} attention heads"),
            ));
        }
        let activation = raw
            .hidden_activation
            .as_deref()
            .unwrap_or("gelu_pytorch_tanh");
        if activation != "gelu_pytorch_tanh" {
            return Err(err(
                "hidden_activation",
                format!("`{activation}` is not supported (Gemma-2 uses \"gelu_pytorch_tanh\")"),
            ));
        }
        if raw.use_bidirectional_attention == Some(true) {
            return Err(err(
                "use_bidirectional_attention",
                "true is not supported: the Sana text encoder is causal".into(),
            ));
        }
        let rope_theta = rope_theta(&raw).map_err(|(field, reason)| err(field, reason))?;
        let windows: Vec<Option<usize>> = match (&raw.layer_types, raw.sliding_window_pattern) {
            (Some(types), _) => {
                if types.len() != layers {
                    return Err(err(
                        "layer_types",
                        format!("{} entries for {layers} layers", types.len()),
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(raw.sliding_window),
                        "full_attention" => Ok(None),
                        other => Err(err(
                            "layer_types",
                            format!("`{other}` is not \"sliding_attention\" or \"full_attention\""),
                        )),
                    })
                    .collect::<Result<_>>()?
            }
            // transformers 4.x: even layers slide (`not layer_idx % 2`); a pattern N generalises it as Gemma-3 does:
            // layer i slides unless (i + 1) % N == 0.
            (None, pattern) => {
                let n = pattern.unwrap_or(2);
                if n == 0 {
                    return Err(err("sliding_window_pattern", "must be at least 1".into()));
                }
                (0..layers)
                    .map(|i| raw.sliding_window.filter(|_| (i + 1) % n != 0))
                    .collect()
            }
        };
        if windows.contains(&Some(0)) {
            return Err(err("sliding_window", "must be at least 1".into()));
        }
        let cfg = Self {
            vocab_size: raw.vocab_size.unwrap_or(256000),
            hidden_size,
            intermediate_size: raw.intermediate_size.unwrap_or(9216),
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim: raw.head_dim.unwrap_or(256),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            query_pre_attn_scalar: raw.query_pre_attn_scalar.unwrap_or(256.0),
            attn_logit_softcapping: raw.attn_logit_softcapping,
            attention_bias: raw.attention_bias.unwrap_or(false),
            windows,
            source: path.to_path_buf(),
        };
        use crate::model::config::check_width;
        check_width(path, "hidden_size", cfg.hidden_size)?;
        check_width(path, "intermediate_size", cfg.intermediate_size)?;
        check_width(path, "num_attention_heads", cfg.num_attention_heads)?;
        check_width(path, "head_dim", cfg.head_dim)?;
        // Gemma's vocabulary is 256000 rows; the embedding is read whole, so a hostile count is bounded here.
        if !(1..=1 << 20).contains(&cfg.vocab_size) {
            return Err(err(
                "vocab_size",
                format!(
                    "{}: this crate reads between 1 and {}",
                    cfg.vocab_size,
                    1 << 20
                ),
            ));
        }
        if !cfg.head_dim.is_multiple_of(2) {
            return Err(err(
                "head_dim",
                format!(
                    "{} is not a positive even size (RoPE rotates half-pairs)",
                    cfg.head_dim
                ),
            ));
        }
        if cfg.query_pre_attn_scalar <= 0.0 {
            return Err(err("query_pre_attn_scalar", "must be positive".into()));
        }
        if cfg.attn_logit_softcapping.is_some_and(|c| c <= 0.0) {
            return Err(err(
                "attn_logit_softcapping",
                "must be positive or null".into(),
            ));
        }
        Ok(cfg)
    }

    /// The multiplier of `q·k`: `query_pre_attn_scalar^-½` (1/16 for gemma-2-2b).
    pub fn attention_scale(&self) -> f32 {
        self.query_pre_attn_scalar.powf(-0.5) as f32
    }
}

/// `rope_theta` from 5.x `rope_parameters` / 4.x `rope_scaling` (which take precedence) or the top-level field;
/// only the unscaled ("default") RoPE is supported.
fn rope_theta(raw: &RawGemmaConfig) -> std::result::Result<f64, (&'static str, String)> {
    let (field, params) = match (&raw.rope_scaling, &raw.rope_parameters) {
        (Some(v), _) if !v.is_null() => ("rope_scaling", Some(v)),
        (_, Some(v)) if !v.is_null() => ("rope_parameters", Some(v)),
        _ => ("rope_theta", None),
    };
    let top = raw.rope_theta.unwrap_or(10000.0);
    let Some(params) = params else {
        return Ok(top);
    };
    let obj = params
        .as_object()
        .ok_or((field, "not an object".to_string()))?;
    let kind = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if kind != "default" {
        return Err((
            field,
            format!("rope type `{kind}` is not supported (only \"default\")"),
        ));
    }
    match obj.get("rope_theta") {
        None => Ok(top),
        Some(v) => v
            .as_f64()
            .ok_or((field, format!("rope_theta {v} is not a number"))),
    }
}

/// A batch of token ids and its 0/1 attention mask, `[batch, len]` row-major (transformers' `input_ids`,
/// `attention_mask`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    /// Token ids, `[batch, len]` row-major.
    pub ids: Vec<i64>,
    /// 1 for a real token, 0 for padding, `[batch, len]` row-major.
    pub mask: Vec<i64>,
    /// Rows (prompts).
    pub batch: usize,
    /// Tokens per row, padding included.
    pub len: usize,
}

impl TokenBatch {
    /// Checks that `ids` and `mask` both hold `batch · len` values ([`Error::InvalidInput`] otherwise).
    pub fn new(ids: Vec<i64>, mask: Vec<i64>, batch: usize, len: usize) -> Result<Self> {
        if ids.len() != batch * len || mask.len() != batch * len {
            return Err(Error::InvalidInput(format!(
                "input_ids ({} values) and attention_mask ({} values) must both be [{batch}, {len}]",
                ids.len(),
                mask.len()
            )));
        }
        Ok(Self {
            ids,
            mask,
            batch,
            len,
        })
    }

    /// The mask as an f32 tensor `[batch, len]`.
    pub fn mask_tensor(&self) -> Result<HostTensor> {
        HostTensor::new(
            vec![self.batch, self.len],
            self.mask.iter().map(|&m| m as f32).collect(),
        )
    }
}

/// The Gemma-2 text encoder: token embedding, `num_hidden_layers` decoder layers and the final RMSNorm, with its
/// weights on engine `E`.
pub struct Gemma2Model<E: Engine> {
    /// The config the model was built from.
    pub config: GemmaConfig,
    /// Soft-cap attention logits (transformers' eager path, the default); false reproduces the SDPA path of
    /// transformers 4.48–5.20, which drops the soft-cap.
    pub attn_softcap: bool,
    embed_tokens: E::Tensor,
    layers: Vec<DecoderLayer<E>>,
    norm: E::Tensor,
}

impl<E: Engine> Gemma2Model<E> {
    /// Loads `dir/config.json` and `dir/model.safetensors` (or its shards) of a `text_encoder/` folder.
    pub fn from_dir(e: &E, dir: &Path) -> Result<Self> {
        let config = GemmaConfig::load(&dir.join("config.json"))?;
        let weights = Weights::open(dir, "model")?;
        Self::new(e, config, &weights)
    }

    /// Keys without prefix (a bare `Gemma2Model`, as the Sana repos save it) or under `model.`.
    pub fn new(e: &E, config: GemmaConfig, w: &Weights) -> Result<Self> {
        let w = if !w.contains("embed_tokens.weight") && w.contains("model.embed_tokens.weight") {
            w.prefix("model")
        } else {
            w.clone()
        };
        let d = config.hidden_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(e, &config, i, &w.prefix(format!("layers.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            embed_tokens: param(e, &w, "embed_tokens.weight", &[config.vocab_size, d])?,
            layers,
            norm: param(e, &w, "norm.weight", &[d])?,
            attn_softcap: true,
            config,
        })
    }

    /// `last_hidden_state` `[B, L, hidden]` (after the final norm).
    pub fn forward(&self, e: &E, tokens: &TokenBatch) -> Result<E::Tensor> {
        self.forward_traced(e, tokens, &mut |_, _| Ok(()))
    }

    /// As `forward`, reporting `hidden_states.0` (scaled embeddings), `hidden_states.{i}` (output of layer i−1) and,
    /// as the last, `hidden_states.{layers}` = the normed output, exactly as transformers numbers them.
    pub fn forward_traced(
        &self,
        e: &E,
        tokens: &TokenBatch,
        trace: Trace<'_, E::Tensor>,
    ) -> Result<E::Tensor> {
        let cfg = &self.config;
        let (b, l, d) = (tokens.batch, tokens.len, cfg.hidden_size);
        let ids = tokens
            .ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                u32::try_from(id)
                    .ok()
                    .filter(|&id| (id as usize) < cfg.vocab_size)
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "input_ids[{}, {}] = {id} is outside the vocabulary [0, {}) of {}",
                            i / l.max(1),
                            i % l.max(1),
                            cfg.vocab_size,
                            cfg.source.display()
                        ))
                    })
            })
            .collect::<Result<Vec<u32>>>()?;
        // transformers: `hidden_size**0.5` as an f32 tensor, cast to the weight dtype (`embedding` rounds it).
        let scale = (d as f64).sqrt() as f32;
        let x = e.embedding(&self.embed_tokens, &ids, scale)?;
        let mut x = e.reshape(x, &[b, l, d])?;
        let key_mask = e.upload(&tokens.mask_tensor()?)?;
        let (cos, sin) = rope_tables(cfg.head_dim, cfg.rope_theta, l)?;
        let rope = (e.upload(&cos)?, e.upload(&sin)?);
        trace("hidden_states.0", &x)?;
        let softcap = cfg
            .attn_logit_softcapping
            .filter(|_| self.attn_softcap)
            .map(|c| c as f32);
        let last = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(e, &x, &rope, &key_mask, softcap)?;
            if i + 1 < last {
                trace(&format!("hidden_states.{}", i + 1), &x)?;
            }
        }
        let x = e.rms_norm_plus_one(&x, &self.norm, cfg.rms_norm_eps as f32)?;
        trace(&format!("hidden_states.{last}"), &x)?;
        Ok(x)
    }
}

/// RoPE tables `[len, head_dim]` (`cat(freqs, freqs)` layout) as transformers' default rotary embedding builds
/// them in f32: `inv_freq[i] = 1 / theta^(2i/d)`, `angle = position · inv_freq`, then cos and sin.
pub fn rope_tables(head_dim: usize, theta: f64, len: usize) -> Result<(HostTensor, HostTensor)> {
    let half = head_dim / 2;
    let base = theta as f32;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let (mut cos, mut sin) = (
        Vec::with_capacity(len * head_dim),
        Vec::with_capacity(len * head_dim),
    );
    for p in 0..len {
        let angles: Vec<f32> = inv_freq.iter().map(|&f| p as f32 * f).collect();
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos()));
            sin.extend(angles.iter().map(|a| a.sin()));
        }
    }
    Ok((
        HostTensor::new(vec![len, head_dim], cos)?,
        HostTensor::new(vec![len, head_dim], sin)?,
    ))
}

/// `layers.{i}`: sandwich-normed attention and MLP blocks.
struct DecoderLayer<E: Engine> {
    input_layernorm: E::Tensor,
    self_attn: Attention<E>,
    post_attention_layernorm: E::Tensor,
    pre_feedforward_layernorm: E::Tensor,
    mlp: Mlp<E>,
    post_feedforward_layernorm: E::Tensor,
    eps: f32,
}

impl<E: Engine> DecoderLayer<E> {
    fn new(e: &E, cfg: &GemmaConfig, index: usize, w: &Weights) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            input_layernorm: param(e, w, "input_layernorm.weight", &[d])?,
            self_attn: Attention::new(e, cfg, index, &w.prefix("self_attn"))?,
            post_attention_layernorm: param(e, w, "post_attention_layernorm.weight", &[d])?,
            pre_feedforward_layernorm: param(e, w, "pre_feedforward_layernorm.weight", &[d])?,
            mlp: Mlp::new(e, cfg, &w.prefix("mlp"))?,
            post_feedforward_layernorm: param(e, w, "post_feedforward_layernorm.weight", &[d])?,
            eps: cfg.rms_norm_eps as f32,
        })
    }

    fn forward(
        &self,
        e: &E,
        x: &E::Tensor,
        rope: &(E::Tensor, E::Tensor),
        key_mask: &E::Tensor,
        softcap: Option<f32>,
    ) -> Result<E::Tensor> {
        let h = e.rms_norm_plus_one(x, &self.input_layernorm, self.eps)?;
        let h = self.self_attn.forward(e, &h, rope, key_mask, softcap)?;
        let h = e.rms_norm_plus_one(&h, &self.post_attention_layernorm, self.eps)?;
        let x = e.add(x, &h)?;
        let h = e.rms_norm_plus_one(&x, &self.pre_feedforward_layernorm, self.eps)?;
        let h = self.mlp.forward(e, &h)?;
        let h = e.rms_norm_plus_one(&h, &self.post_feedforward_layernorm, self.eps)?;
        e.add(&x, &h)
    }
}

/// `self_attn`: GQA with RoPE, `query_pre_attn_scalar` scaling, soft-cap, causal (+ sliding-window) mask.
struct Attention<E: Engine> {
    q_proj: Linear<E>,
    k_proj: Linear<E>,
    v_proj: Linear<E>,
    o_proj: Linear<E>,
    heads: usize,
    kv_heads: usize,
    scale: f32,
    window: Option<usize>,
}

impl<E: Engine> Attention<E> {
    fn new(e: &E, cfg: &GemmaConfig, index: usize, w: &Weights) -> Result<Self> {
        let (d, hd, bias) = (cfg.hidden_size, cfg.head_dim, cfg.attention_bias);
        let (q, kv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        Ok(Self {
            q_proj: Linear::new(e, &w.prefix("q_proj"), d, q, bias)?,
            k_proj: Linear::new(e, &w.prefix("k_proj"), d, kv, bias)?,
            v_proj: Linear::new(e, &w.prefix("v_proj"), d, kv, bias)?,
            o_proj: Linear::new(e, &w.prefix("o_proj"), q, d, bias)?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            scale: cfg.attention_scale(),
            window: cfg.windows[index],
        })
    }

    fn forward(
        &self,
        e: &E,
        h: &E::Tensor,
        (cos, sin): &(E::Tensor, E::Tensor),
        key_mask: &E::Tensor,
        softcap: Option<f32>,
    ) -> Result<E::Tensor> {
        let q = e.rotary(&self.q_proj.forward(e, h)?, cos, sin, self.heads)?;
        let k = e.rotary(&self.k_proj.forward(e, h)?, cos, sin, self.kv_heads)?;
        let v = self.v_proj.forward(e, h)?;
        let params = CausalAttention {
            heads: self.heads,
            kv_heads: self.kv_heads,
            scale: self.scale,
            softcap,
            window: self.window,
        };
        let o = e.causal_attention(&q, &k, &v, key_mask, &params)?;
        self.o_proj.forward(e, &o)
    }
}

/// `mlp`: GeGLU with the tanh GELU, `down(gelu_tanh(gate(h)) · up(h))`.
struct Mlp<E: Engine> {
    gate_proj: Linear<E>,
    up_proj: Linear<E>,
    down_proj: Linear<E>,
}

impl<E: Engine> Mlp<E> {
    fn new(e: &E, cfg: &GemmaConfig, w: &Weights) -> Result<Self> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::new(e, &w.prefix("gate_proj"), d, f, false)?,
            up_proj: Linear::new(e, &w.prefix("up_proj"), d, f, false)?,
            down_proj: Linear::new(e, &w.prefix("down_proj"), f, d, false)?,
        })
    }

    fn forward(&self, e: &E, h: &E::Tensor) -> Result<E::Tensor> {
        let g = self.gate_proj.forward_act(e, h, Activation::GeluTanh)?;
        let u = self.up_proj.forward(e, h)?;
        self.down_proj.forward(e, &e.mul(&g, &u)?)
    }
}
