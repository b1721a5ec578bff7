//! One LoRA file as published: the diffusers/PEFT layout that `SanaPipeline.save_lora_weights` writes
//! (`transformer.<module>.lora_A.weight` / `lora_B.weight`, rank and alpha in the `lora_adapter_metadata` JSON) or
//! Kohya's (`lora_unet_<module with _ for .>.lora_down.weight` / `lora_up.weight` / `alpha`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tensor::HostTensor;
use crate::weights::{SafetensorsFile, TensorView};

/// How a layer's name is spelled in the file: PEFT's dotted module path, or Kohya's with every `.` an `_` (only
/// the model's own layer names can undo that, see [`super::LoraLayers`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LayerName {
    /// `transformer_blocks.0.attn1.to_q`.
    Module(String),
    /// `transformer_blocks_0_attn1_to_q` (from `lora_unet_transformer_blocks_0_attn1_to_q`).
    Kohya(String),
}

/// One targeted layer: `ΔW = (α/r) · up · down`.
pub struct LoraLayer {
    /// The file's key of `down` (`…lora_A.weight` or `…lora_down.weight`), for messages.
    pub down_key: String,
    /// `A`, `[r, in]` (a 1×1 convolution's `[r, in, 1, 1]` is read as `[r, in]`).
    pub down: HostTensor,
    /// `B`, `[out, r]`.
    pub up: HostTensor,
    /// The file's key of `up`, for messages.
    pub up_key: String,
    /// `α/r` (`α/√r` for rsLoRA); α from a Kohya `.alpha` tensor or the PEFT metadata, `r` when absent.
    pub scale: f32,
}

/// A parsed LoRA file, its tensors widened to f32 (adapters are small: rank × (in + out) per layer).
pub struct LoraFile {
    path: PathBuf,
    layers: HashMap<LayerName, LoraLayer>,
}

/// PEFT's `LoraConfig` fields that decide the scale, from `lora_adapter_metadata`.
#[derive(Default)]
struct Metadata {
    alpha: Option<f32>,
    alpha_pattern: Vec<(String, f32)>,
    rslora: bool,
}

impl LoraFile {
    /// Reads and checks `path`: every key must be a LoRA `down`/`up` pair (or a Kohya `alpha`) of the transformer,
    /// ranks of a pair must agree; DoRA (`lora_magnitude_vector`) and text-encoder adapters are refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = SafetensorsFile::open(&path)?;
        let err = |key: &str, reason: String| Error::Lora {
            path: path.clone(),
            key: key.to_string(),
            reason,
        };
        let meta = Metadata::read(&file)?;
        let mut downs = HashMap::new();
        let mut ups = HashMap::new();
        let mut alphas = HashMap::new();
        let mut keys: Vec<&str> = file.names().collect();
        keys.sort_unstable();
        for key in keys {
            let view = file.get(key)?;
            if key.contains("lora_magnitude_vector") || key.ends_with(".dora_scale") {
                return Err(err(
                    key,
                    "DoRA adapters (a magnitude vector) are not supported; only plain LoRA".into(),
                ));
            }
            if key.starts_with("text_encoder.") || key.starts_with("lora_te") {
                return Err(err(
                    key,
                    "text-encoder adapters are not supported; only the transformer's".into(),
                ));
            }
            let (name, role) = split_key(key).ok_or_else(|| {
                err(
                    key,
                    "not a LoRA tensor of the transformer (expected `transformer.<module>.lora_A.weight` / \
                     `lora_B.weight`, or Kohya's `lora_unet_<module>.lora_down.weight` / `lora_up.weight` / `alpha`)"
                        .into(),
                )
            })?;
            match role {
                Role::Down => downs.insert(name, (key.to_string(), matrix(&view, &err)?)),
                Role::Up => ups.insert(name, (key.to_string(), matrix(&view, &err)?)),
                Role::Alpha => {
                    let value = view.to_f32()?;
                    let [alpha] = value[..] else {
                        return Err(err(
                            key,
                            format!("alpha must be one number, got shape {:?}", view.shape()),
                        ));
                    };
                    alphas.insert(name, alpha);
                    None
                }
            };
        }
        let mut layers = HashMap::new();
        for (name, (down_key, down)) in downs {
            let (up_key, up) = ups.remove(&name).ok_or_else(|| {
                err(
                    &down_key,
                    "has no matching up (lora_B / lora_up) tensor".into(),
                )
            })?;
            let (rank, up_rank) = (down.shape()[0], up.shape()[1]);
            if rank != up_rank || rank == 0 {
                return Err(err(
                    &up_key,
                    format!("rank {up_rank} does not match {down_key}'s rank {rank}"),
                ));
            }
            let alpha = match &name {
                LayerName::Kohya(_) => alphas.remove(&name),
                LayerName::Module(module) => meta.alpha_for(module),
            }
            .unwrap_or(rank as f32);
            let r = if meta.rslora {
                (rank as f32).sqrt()
            } else {
                rank as f32
            };
            let scale = alpha / r;
            layers.insert(
                name,
                LoraLayer {
                    down_key,
                    down,
                    up,
                    up_key,
                    scale,
                },
            );
        }
        if let Some((_, (up_key, _))) = ups.into_iter().next() {
            return Err(err(
                &up_key,
                "has no matching down (lora_A / lora_down) tensor".into(),
            ));
        }
        if layers.is_empty() {
            return Err(err("", "the file holds no LoRA layer".into()));
        }
        Ok(Self { path, layers })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every targeted layer, in no particular order.
    pub fn layers(&self) -> impl Iterator<Item = (&LayerName, &LoraLayer)> {
        self.layers.iter()
    }
}

enum Role {
    Down,
    Up,
    Alpha,
}

/// `transformer.<m>.lora_A.weight` → (`<m>`, down); `lora_unet_<k>.lora_up.weight` → (Kohya `<k>`, up); …
fn split_key(key: &str) -> Option<(LayerName, Role)> {
    if let Some(rest) = key.strip_prefix("lora_unet_") {
        let (name, role) = [
            (".lora_down.weight", Role::Down),
            (".lora_up.weight", Role::Up),
            (".alpha", Role::Alpha),
        ]
        .into_iter()
        .find_map(|(suffix, role)| rest.strip_suffix(suffix).map(|n| (n, role)))?;
        return Some((LayerName::Kohya(name.to_string()), role));
    }
    // diffusers writes `transformer.`; a bare PEFT `save_pretrained` of the model writes `base_model.model.`.
    let rest = key
        .strip_prefix("transformer.")
        .or_else(|| key.strip_prefix("base_model.model."))?;
    let (name, role) = [(".lora_A.weight", Role::Down), (".lora_B.weight", Role::Up)]
        .into_iter()
        .find_map(|(suffix, role)| rest.strip_suffix(suffix).map(|n| (n, role)))?;
    Some((LayerName::Module(name.to_string()), role))
}

/// A LoRA factor as a matrix: `[a, b]`, or a 1×1 convolution's `[a, b, 1, 1]`.
fn matrix(view: &TensorView<'_>, err: &impl Fn(&str, String) -> Error) -> Result<HostTensor> {
    match *view.shape() {
        [a, b] | [a, b, 1, 1] => HostTensor::new(vec![a, b], view.to_f32()?),
        _ => Err(err(
            view.name(),
            format!(
                "shape {:?} is neither a matrix nor a 1×1 convolution kernel",
                view.shape()
            ),
        )),
    }
}

impl Metadata {
    /// PEFT's config as diffusers stores it: the safetensors header's `lora_adapter_metadata`, a JSON object whose
    /// keys are prefixed by the component (`transformer.lora_alpha`, …).
    fn read(file: &SafetensorsFile) -> Result<Self> {
        let Some(text) = file.metadata("lora_adapter_metadata") else {
            return Ok(Self::default());
        };
        let path = file.path();
        let field = |key: &str, reason: String| Error::Lora {
            path: path.to_path_buf(),
            key: format!("lora_adapter_metadata.{key}"),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| field("", e.to_string()))?;
        let get = |name: &str| {
            json.get(format!("transformer.{name}"))
                .or_else(|| json.get(name))
                .filter(|v| !v.is_null())
        };
        for refused in ["use_dora"] {
            if get(refused).and_then(|v| v.as_bool()) == Some(true) {
                return Err(field(refused, "DoRA adapters are not supported".into()));
            }
        }
        let number = |key: &str, v: &serde_json::Value| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| field(key, format!("expected a number, got {v}")))
        };
        let alpha = get("lora_alpha")
            .map(|v| number("lora_alpha", v))
            .transpose()?;
        let mut alpha_pattern = Vec::new();
        if let Some(patterns) = get("alpha_pattern").and_then(|v| v.as_object()) {
            for (pattern, v) in patterns {
                if pattern.contains(|c| "*+?()[]{}|^$\\".contains(c)) {
                    return Err(field(
                        "alpha_pattern",
                        format!("pattern `{pattern}` is a regular expression; only module-name suffixes are supported"),
                    ));
                }
                alpha_pattern.push((pattern.clone(), number("alpha_pattern", v)?));
            }
        }
        Ok(Self {
            alpha,
            alpha_pattern,
            rslora: get("use_rslora").and_then(|v| v.as_bool()) == Some(true),
        })
    }

    /// PEFT's rule: an `alpha_pattern` key applies to a module whose dotted name ends with it.
    fn alpha_for(&self, module: &str) -> Option<f32> {
        self.alpha_pattern
            .iter()
            .find(|(p, _)| module == p || module.ends_with(&format!(".{p}")))
            .map(|&(_, a)| a)
            .or(self.alpha)
    }
}
