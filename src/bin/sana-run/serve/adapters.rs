//! The LoRA adapters a service offers (`--lora-dir`): every `NAME.safetensors` of one folder, read and checked at
//! start, then applied per request by name (`"lora": "NAME[:WEIGHT]"` or a list of them). Requests name adapters,
//! never paths, so a client reaches no file the operator did not put in that folder.

use std::collections::BTreeMap;
use std::path::Path;

use sana::lora::{Adapter, LoraMode};
use sana::Sana;

use super::errors::ApiError;

/// More adapter files than this in `--lora-dir` is refused at start: they are all parsed and kept in memory.
const MAX_ADAPTER_FILES: usize = 256;
/// Adapters one request may stack.
const MAX_ADAPTERS_PER_REQUEST: usize = 8;

/// An adapter as a request names it, with its weight; part of the batch key (same adapters, same generation).
pub type AdapterChoice = (String, f32);

/// The adapters of `--lora-dir`, by name.
#[derive(Default)]
pub struct AdapterLibrary {
    adapters: BTreeMap<String, Adapter>,
}

impl AdapterLibrary {
    /// Reads every `*.safetensors` of `dir` (weight 1.0; requests re-weight them). An unreadable folder or file
    /// fails naming it.
    pub fn open(dir: &Path) -> sana::Result<Self> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| sana::Error::InvalidInput(format!("--lora-dir {}: {e}", dir.display())))?;
        let mut adapters = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|e| {
                    sana::Error::InvalidInput(format!("--lora-dir {}: {e}", dir.display()))
                })?
                .path();
            let (Some(name), Some("safetensors")) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|e| e.to_str()),
            ) else {
                continue;
            };
            if adapters.len() == MAX_ADAPTER_FILES {
                return Err(sana::Error::InvalidInput(format!(
                    "--lora-dir {}: more than {MAX_ADAPTER_FILES} adapter files",
                    dir.display()
                )));
            }
            adapters.insert(name.to_string(), Adapter::open(&path, 1.0)?);
        }
        if adapters.is_empty() {
            return Err(sana::Error::InvalidInput(format!(
                "--lora-dir {}: no .safetensors adapter files in it",
                dir.display()
            )));
        }
        Ok(Self { adapters })
    }

    /// Checks every adapter against `sana`'s transformer (its layers and shapes), one at a time, and leaves none
    /// applied: a file that does not fit the model stops the service at start, naming the file and key.
    pub fn check_against(&self, sana: &Sana) -> sana::Result<()> {
        for adapter in self.adapters.values() {
            sana.set_adapters(std::slice::from_ref(adapter), LoraMode::Unmerged)?;
        }
        sana.set_adapters(&[], LoraMode::Unmerged)
    }

    /// The names on offer, for logs.
    pub fn names(&self) -> Vec<&str> {
        self.adapters.keys().map(String::as_str).collect()
    }

    /// Checks that every choice names an adapter on offer.
    pub fn check(&self, choices: &[AdapterChoice]) -> Result<(), ApiError> {
        match choices
            .iter()
            .find(|(name, _)| !self.adapters.contains_key(name))
        {
            None => Ok(()),
            Some(_) if self.adapters.is_empty() => Err(ApiError::bad_request(
                Some("lora"),
                "this service offers no LoRA adapters (it was started without --lora-dir)",
            )),
            Some((name, _)) => Err(ApiError::bad_request(
                Some("lora"),
                format!(
                    "no LoRA adapter is named `{name}`; this service offers: {}",
                    self.names().join(", ")
                ),
            )),
        }
    }

    /// The adapters of checked `choices`, each with its weight.
    pub fn resolve(&self, choices: &[AdapterChoice]) -> Vec<Adapter> {
        choices
            .iter()
            .filter_map(|(name, weight)| Some(self.adapters.get(name)?.reweighted(*weight)))
            .collect()
    }
}

/// Parses the `lora` field: `"NAME[:WEIGHT]"` or a list of them (weight 1.0 when absent, finite).
pub fn parse_choices(value: &serde_json::Value) -> Result<Vec<AdapterChoice>, ApiError> {
    let specs: Vec<&serde_json::Value> = match value {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(list) => list.iter().collect(),
        one => vec![one],
    };
    if specs.len() > MAX_ADAPTERS_PER_REQUEST {
        return Err(ApiError::bad_request(
            Some("lora"),
            format!(
                "{} adapters requested; at most {MAX_ADAPTERS_PER_REQUEST}",
                specs.len()
            ),
        ));
    }
    specs
        .into_iter()
        .map(|spec| {
            let spec = spec.as_str().ok_or_else(|| {
                ApiError::bad_request(
                    Some("lora"),
                    "lora must be \"NAME[:WEIGHT]\" or a list of such strings",
                )
            })?;
            let (name, weight) = match spec.rsplit_once(':') {
                Some((name, weight)) => match weight.parse::<f32>() {
                    Ok(w) if w.is_finite() => (name, w),
                    _ => {
                        return Err(ApiError::bad_request(
                            Some("lora"),
                            format!("lora `{spec}`: the weight after `:` must be a finite number"),
                        ))
                    }
                },
                None => (spec, 1.0),
            };
            Ok((name.to_string(), weight))
        })
        .collect()
}
