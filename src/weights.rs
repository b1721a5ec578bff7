//! Checkpoint access: safetensors files memory-mapped with memmap2, single or sharded (`*.safetensors.index.json`),
//! in f32/f16/bf16 on disk. Key names are the checkpoint's, verbatim; `Weights::prefix` scopes them the way the
//! model's module tree does (`weights.prefix("transformer_blocks.3.attn1")`). A folder may instead hold a
//! synthetic checkpoint ([`synthetic`]): the same names and shapes with seeded random values made in memory.

pub mod synthetic;
mod view;

pub use view::TensorView;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::tensor::{SafeTensorError, TensorInfo};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use synthetic::Synthetic;

/// One memory-mapped safetensors file with its parsed header.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

impl SafetensorsFile {
    /// Maps `path` and parses its header; fails with [`Error::Io`] or [`Error::Safetensors`] naming the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: the map is read-only; a checkpoint rewritten while we run is outside what we can defend against,
        // as for every memory-mapped loader (safetensors' own documentation makes the same assumption).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (header_len, metadata) =
            SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
                path: path.clone(),
                reason: describe(&e, mmap.len()),
            })?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        Ok(Self {
            path,
            mmap,
            data_start: 8 + header_len,
            tensors,
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key of every tensor in the file, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor `name`, or `None` when the file has no such key.
    pub fn view(&self, name: &str) -> Option<TensorView<'_>> {
        let (key, info) = self.tensors.get_key_value(name)?;
        Some(self.view_of(key, info))
    }

    /// Every tensor of the file, in no particular order (header data only: nothing is read until `bytes` is).
    pub fn views(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.tensors
            .iter()
            .map(|(key, info)| self.view_of(key, info))
    }

    fn view_of<'a>(&'a self, key: &'a str, info: &'a TensorInfo) -> TensorView<'a> {
        let (start, end) = info.data_offsets;
        TensorView {
            name: key,
            dtype: info.dtype,
            shape: &info.shape,
            bytes: &self.mmap[self.data_start + start..self.data_start + end],
            location: &self.path,
        }
    }

    /// The value of `key` in the header's free-form `__metadata__` map (e.g. diffusers' `lora_adapter_metadata`).
    pub fn metadata(&self, key: &str) -> Option<String> {
        let (_, header) = SafeTensors::read_metadata(&self.mmap).ok()?;
        header.metadata().as_ref()?.get(key).cloned()
    }

    /// The tensor `name` or an error naming it and this file.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        self.view(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            location: self.path.display().to_string(),
        })
    }
}

fn describe(e: &SafeTensorError, file_len: usize) -> String {
    match e {
        SafeTensorError::MetadataIncompleteBuffer | SafeTensorError::InvalidHeaderLength => {
            format!("truncated or corrupt: the header does not match the file length ({file_len} bytes)")
        }
        SafeTensorError::HeaderTooSmall => format!("truncated: only {file_len} bytes"),
        other => other.to_string(),
    }
}

/// The safetensors files of one model component (a diffusers sub-folder), seen through an optional key prefix.
#[derive(Clone)]
pub struct Weights {
    checkpoint: Arc<Checkpoint>,
    prefix: String,
}

struct Checkpoint {
    description: String,
    files: Vec<SafetensorsFile>,
    /// key → index into `files`
    owner: HashMap<String, usize>,
    /// In-memory random tensors; `files` is then empty.
    synthetic: Option<Synthetic>,
}

impl Weights {
    /// Opens `dir/{stem}.safetensors`, or the shards listed by `dir/{stem}.safetensors.index.json`; failing both, the
    /// 16-bit variants (`{stem}.bf16.safetensors`, `{stem}.fp16.safetensors` and their indexes), then a synthetic
    /// checkpoint (`{stem}.synthetic.json`).
    pub fn open(dir: impl AsRef<Path>, stem: &str) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::io(
                dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
            ));
        }
        let candidates = [
            (
                format!("{stem}.safetensors"),
                format!("{stem}.safetensors.index.json"),
            ),
            (
                format!("{stem}.bf16.safetensors"),
                format!("{stem}.safetensors.index.bf16.json"),
            ),
            (
                format!("{stem}.fp16.safetensors"),
                format!("{stem}.safetensors.index.fp16.json"),
            ),
        ];
        for (single, index) in &candidates {
            if dir.join(single).is_file() {
                return Self::from_files(vec![dir.join(single)]);
            }
            if dir.join(index).is_file() {
                return Self::from_index(&dir.join(index));
            }
        }
        let synthetic = dir.join(synthetic::file_name(stem));
        if synthetic.is_file() {
            return Ok(Self::from_synthetic(Synthetic::open(&synthetic)?));
        }
        // A name that exists but is not a readable file (a link loop, a dangling link, a folder) is named with
        // the OS's reason, not reported as absent.
        let names = candidates
            .iter()
            .flat_map(|(single, index)| [single, index]);
        for path in names.map(|name| dir.join(name)) {
            if std::fs::symlink_metadata(&path).is_ok() {
                let reason = match std::fs::metadata(&path) {
                    Err(e) => e,
                    Ok(_) => std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file"),
                };
                return Err(Error::io(path, reason));
            }
        }
        Err(Error::io(
            dir.join(&candidates[0].0),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no weights: neither {} nor {} (nor a bf16/fp16 variant) exists",
                    candidates[0].0, candidates[0].1
                ),
            ),
        ))
    }

    /// Opens the shards named by a `*.safetensors.index.json` (`weight_map`: key → shard file name).
    pub fn from_index(index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: index.to_path_buf(),
            reason: e.to_string(),
        })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Config {
                path: index.to_path_buf(),
                field: "weight_map".into(),
                reason: "missing or not an object".into(),
            })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<String> = Vec::new();
        for (key, shard) in map {
            let shard = shard.as_str().ok_or_else(|| Error::Config {
                path: index.to_path_buf(),
                field: format!("weight_map.{key}"),
                reason: "not a file name".into(),
            })?;
            if !shards.iter().any(|s| s == shard) {
                shards.push(shard.to_string());
            }
        }
        shards.sort();
        let weights = Self::from_files(shards.iter().map(|s| dir.join(s)).collect())?;
        for (key, shard) in map {
            if !weights.checkpoint.owner.contains_key(key) {
                return Err(Error::MissingTensor {
                    name: key.clone(),
                    location: format!(
                        "{} (listed by {})",
                        dir.join(shard.as_str().unwrap_or("?")).display(),
                        index.display()
                    ),
                });
            }
        }
        Ok(weights)
    }

    /// Opens the given files as one checkpoint; a key present in two files is an error.
    pub fn from_files(paths: Vec<PathBuf>) -> Result<Self> {
        let files = paths
            .iter()
            .map(SafetensorsFile::open)
            .collect::<Result<Vec<_>>>()?;
        let mut owner = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.names() {
                if let Some(prev) = owner.insert(name.to_string(), i) {
                    return Err(Error::Safetensors {
                        path: f.path().to_path_buf(),
                        reason: format!(
                            "tensor `{name}` also appears in {}",
                            files[prev].path().display()
                        ),
                    });
                }
            }
        }
        let description = match paths.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} shards in {}",
                many.len(),
                many.first()
                    .and_then(|p| p.parent())
                    .unwrap_or(Path::new("."))
                    .display()
            ),
        };
        Ok(Self {
            checkpoint: Arc::new(Checkpoint {
                description,
                files,
                owner,
                synthetic: None,
            }),
            prefix: String::new(),
        })
    }

    /// A checkpoint of synthetic tensors.
    pub fn from_synthetic(synthetic: Synthetic) -> Self {
        Self {
            checkpoint: Arc::new(Checkpoint {
                description: format!("{} (synthetic)", synthetic.path().display()),
                files: Vec::new(),
                owner: HashMap::new(),
                synthetic: Some(synthetic),
            }),
            prefix: String::new(),
        }
    }

    /// The same checkpoint with `name` appended to the key prefix (joined by a dot).
    pub fn prefix(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            checkpoint: Arc::clone(&self.checkpoint),
            prefix,
        }
    }

    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Whether the checkpoint has the tensor `prefix.name`.
    pub fn contains(&self, name: &str) -> bool {
        let key = self.key(name);
        self.checkpoint.owner.contains_key(&key)
            || self
                .checkpoint
                .synthetic
                .as_ref()
                .is_some_and(|s| s.contains(&key))
    }

    /// The tensor `prefix.name`, or an error naming the full key and the checkpoint.
    pub fn get(&self, name: &str) -> Result<TensorView<'_>> {
        let key = self.key(name);
        let missing = || Error::MissingTensor {
            name: key.clone(),
            location: self.checkpoint.description.clone(),
        };
        if let Some(synthetic) = &self.checkpoint.synthetic {
            return synthetic.view(&key).ok_or_else(missing);
        }
        let file = self
            .checkpoint
            .owner
            .get(&key)
            .map(|&i| &self.checkpoint.files[i])
            .ok_or_else(missing)?;
        file.get(&key)
    }

    /// Like `get`, and checks the shape.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<TensorView<'_>> {
        let view = self.get(name)?;
        view.expect_shape(shape)?;
        Ok(view)
    }

    /// Every key of the checkpoint (unprefixed).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let synthetic = self.checkpoint.synthetic.iter().flat_map(Synthetic::names);
        self.checkpoint
            .owner
            .keys()
            .map(String::as_str)
            .chain(synthetic)
    }

    /// The files of the checkpoint (one, or the shards in name order).
    pub fn files(&self) -> impl Iterator<Item = &SafetensorsFile> {
        self.checkpoint.files.iter()
    }
}
