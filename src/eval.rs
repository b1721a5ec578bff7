//! `sana-run eval …`: run one model component on tensors from a safetensors file and write its outputs, so that a
//! checkpoint can be checked against the reference implementation tensor by tensor.

use std::path::{Path, PathBuf};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::sana_dit::SanaTransformer;
use crate::tensor::HostTensor;
use crate::tensor_file::write_f32;
use crate::weights::SafetensorsFile;

/// The component folder `name` of a pipeline folder, or `model` itself when it is already that component
/// (holds a `config.json`).
pub fn component_dir(model: &Path, name: &str) -> Result<PathBuf> {
    let nested = model.join(name);
    if nested.join("config.json").is_file() {
        Ok(nested)
    } else if model.join("config.json").is_file() {
        Ok(model.to_path_buf())
    } else {
        Err(Error::io(
            nested.join("config.json"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {name} config: {} is neither a diffusers pipeline folder nor a {name} folder", model.display()),
            ),
        ))
    }
}

/// `eval transformer`: IN holds `hidden_states` `[B,C,H,W]`, `encoder_hidden_states` `[B,L,D]`, `timestep` `[B]`,
/// `encoder_attention_mask` `[B,L]` (I64 or F32), and `guidance` `[B]` for Sprint models; OUT gets `output`
/// `[B,C,H,W]`.
pub fn transformer<E: Engine>(e: &E, model: &Path, inputs: &Path, output: &Path) -> Result<()> {
    let dit = SanaTransformer::from_dir(e, &component_dir(model, "transformer")?)?;
    let file = SafetensorsFile::open(inputs)?;
    let hidden = file.get("hidden_states")?.to_host()?;
    let text = file.get("encoder_hidden_states")?.to_host()?;
    let timestep = file.get("timestep")?;
    let timestep = HostTensor::new(timestep.shape().to_vec(), timestep.to_f32()?)?;
    let mask = file.get("encoder_attention_mask")?;
    let mask = HostTensor::new(mask.shape().to_vec(), mask.to_mask_f32()?)?;
    let guidance = file.view("guidance").map(|g| g.to_f32()).transpose()?;
    let cond = dit.encode_text(e, &text, &mask)?;
    let out = dit.forward(e, &hidden, &cond, timestep.data(), guidance.as_deref())?;
    write_f32(output, &[("output", &e.download(&out)?)])
}
