//! Synthetic checkpoints: every tensor a model reads, with the right name and shape and seeded random bf16 values,
//! held in memory instead of a file — benchmarks at real sizes need the architecture, not the trained values, and
//! a 1.6B-parameter model should not mean writing gigabytes to disk.
//!
//! A synthetic checkpoint is described by `{stem}.synthetic.json` in a component folder:
//! `{"seed": u64, "scale": f32, "tensors": {"name": [shape…], …}}`. All tensors are windows into one pool of
//! uniform values in `[−scale, scale)`, as large as the largest tensor plus a margin, each at an offset drawn from
//! the seed and its name: memory is that of the largest tensor, not of the model, and the values are deterministic
//! (but tensors overlap, so they are not independent — irrelevant to speed, which is all they are for).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use super::view::TensorView;
use crate::error::{Error, Result};

/// The file `Weights::open` recognises as a synthetic checkpoint.
pub fn file_name(stem: &str) -> String {
    format!("{stem}.synthetic.json")
}

/// Extra pool elements beyond the largest tensor, so that equal-sized tensors get different windows.
const MARGIN: usize = 1 << 16;

/// The JSON description.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyntheticSpec {
    /// Seeds the value pool and every tensor's offset into it.
    pub seed: u64,
    /// Values are uniform in `[−scale, scale)`: small enough that activations stay finite through deep stacks.
    pub scale: f32,
    /// Every tensor's checkpoint key and shape.
    pub tensors: BTreeMap<String, Vec<usize>>,
}

impl SyntheticSpec {
    /// Writes the spec as JSON to `path` (a `{stem}.synthetic.json`).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }
}

/// The materialised pool and every tensor's window into it.
pub struct Synthetic {
    path: PathBuf,
    /// name → (shape, byte offset into `pool`)
    tensors: BTreeMap<String, (Vec<usize>, usize)>,
    /// bf16 values, little-endian.
    pool: Vec<u8>,
}

/// splitmix64: a seeded, dependency-free stream.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

impl Synthetic {
    /// Reads a `*.synthetic.json` and fills the pool.
    pub fn open(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let spec: SyntheticSpec = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self::new(&spec, path))
    }

    /// Materialises `spec`; `path` names the checkpoint in errors.
    pub fn new(spec: &SyntheticSpec, path: &Path) -> Self {
        let largest = spec
            .tensors
            .values()
            .map(|s| s.iter().product::<usize>())
            .max()
            .unwrap_or(0);
        let len = largest + MARGIN;
        let mut state = mix(spec.seed);
        let pool = (0..len)
            .flat_map(|_| {
                state = mix(state);
                let u = (state >> 40) as f32 / (1u64 << 24) as f32;
                half::bf16::from_f32((2.0 * u - 1.0) * spec.scale).to_le_bytes()
            })
            .collect();
        let tensors = spec
            .tensors
            .iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let start = (mix(spec.seed ^ name_hash(name)) % (len - n + 1) as u64) as usize;
                (name.clone(), (shape.clone(), 2 * start))
            })
            .collect();
        Self {
            path: path.to_path_buf(),
            tensors,
            pool,
        }
    }

    /// The spec file this was read from, or the path given to [`Self::new`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's key, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether the spec lists the tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name` as a bf16 view into the pool, or `None` when the spec does not list it.
    pub fn view(&self, name: &str) -> Option<TensorView<'_>> {
        let (key, (shape, start)) = self.tensors.get_key_value(name)?;
        let n: usize = shape.iter().product();
        Some(TensorView {
            name: key,
            dtype: Dtype::BF16,
            shape,
            bytes: &self.pool[*start..*start + 2 * n],
            location: &self.path,
        })
    }
}
