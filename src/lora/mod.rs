//! LoRA adapters on the DiT: the files people publish (diffusers/PEFT and Kohya layouts, [`LoraFile`]), several at
//! once with a weight each (diffusers' `set_adapters`), applied in one of two ways ([`LoraMode`]):
//!
//! - merged: `W + Σ wᵢ·(αᵢ/rᵢ)·Bᵢ·Aᵢ` computed in f32 per tensor while the transformer loads, then rounded once
//!   to the storage dtype; no per-step cost, one layer's f32 copy at a time is the only extra memory;
//! - unmerged: each targeted layer keeps its base weight and adds `(x·Aᵀ)·Bᵀ` with every adapter's factors stacked
//!   (`[Σr, in]` and `[out, Σr]`, the scales folded into B): two small GEMMs per layer, and the adapters can be
//!   changed on a loaded model without touching the base weights.

mod file;
mod layers;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use file::{LayerName, LoraFile, LoraLayer};
pub use layers::{LoraLayers, LoraTarget};

use crate::error::{Error, Result};

/// One adapter with its weight: its `ΔW` is multiplied by `weight` (diffusers' `set_adapters` weight).
#[derive(Clone)]
pub struct Adapter {
    /// The parsed file (shared: re-weighting an adapter does not read it again).
    pub file: Arc<LoraFile>,
    /// Multiplies the adapter's `ΔW`; 1.0 applies it as trained, 0.0 switches it off.
    pub weight: f32,
}

impl Adapter {
    /// Reads the adapter file `path` and gives it `weight`.
    pub fn open(path: impl AsRef<Path>, weight: f32) -> Result<Self> {
        Ok(Self {
            file: Arc::new(LoraFile::open(path)?),
            weight,
        })
    }

    /// The same file with another weight.
    pub fn reweighted(&self, weight: f32) -> Self {
        Self {
            file: Arc::clone(&self.file),
            weight,
        }
    }

    /// Parses sana-run's `FILE[:WEIGHT]` (weight 1.0 when absent). A path that itself holds a `:` keeps it unless
    /// what follows the last `:` is a number.
    pub fn parse_spec(spec: &str) -> Result<(PathBuf, f32)> {
        if let Some((path, weight)) = spec.rsplit_once(':') {
            if let Ok(w) = weight.parse::<f32>() {
                if !w.is_finite() {
                    return Err(Error::InvalidInput(format!(
                        "--lora {spec}: the weight must be a finite number"
                    )));
                }
                return Ok((PathBuf::from(path), w));
            }
        }
        Ok((PathBuf::from(spec), 1.0))
    }
}

/// How adapters are applied to the transformer's weights (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoraMode {
    /// Merged when the transformer is not loaded yet (it loads with the adapters folded in), unmerged when it is
    /// (so changing adapters between requests never reloads the base weights).
    #[default]
    Auto,
    /// Folded into the weights at load: no per-step cost; changing adapters reloads the transformer.
    Merged,
    /// Two extra small GEMMs per targeted layer; adapters change without a reload.
    Unmerged,
}
