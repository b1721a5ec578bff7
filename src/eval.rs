//! `sana-run eval …`: run one model component on tensors from a safetensors file and write its outputs, so that a
//! checkpoint can be checked against the reference implementation tensor by tensor.

use std::path::{Path, PathBuf};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::dc_ae::DcAeDecoder;
use crate::model::gemma2::{Gemma2Model, TokenBatch};
use crate::model::sana_dit::SanaTransformer;
use crate::model::vae_tiling::{decode_tiled, VaeTiling};
use crate::tensor::HostTensor;
use crate::tensor_file::{write_f32, write_f32_i64};
use crate::text::{PromptOptions, TextEncoder};
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
    let mask = file.get("encoder_attention_mask")?.to_mask_host()?;
    let guidance = file.view("guidance").map(|g| g.to_f32()).transpose()?;
    let cond = dit.encode_text(e, &text, &mask)?;
    let out = dit.forward(e, &hidden, &cond, timestep.data(), guidance.as_deref())?;
    write_f32(output, &[("output", &e.download(&out)?)])
}

/// `eval text-encoder`: IN holds `input_ids` I64 `[B,L]` and `attention_mask` I64|F32 `[B,L]`; OUT gets
/// `last_hidden_state` F32 `[B,L,D]` (Gemma-2 after its final norm). `softcap = false`: transformers 4.48–5.20.
pub fn text_encoder<E: Engine>(
    e: &E,
    model: &Path,
    inputs: &Path,
    output: &Path,
    softcap: bool,
) -> Result<()> {
    let mut gemma = Gemma2Model::from_dir(e, &component_dir(model, "text_encoder")?)?;
    gemma.attn_softcap = softcap;
    let file = SafetensorsFile::open(inputs)?;
    let ids = file.get("input_ids")?;
    let [b, l] = *ids.shape() else {
        return Err(Error::InvalidInput(format!(
            "{}: input_ids has shape {:?}, expected [B, L]",
            inputs.display(),
            ids.shape()
        )));
    };
    let mask = file.get("attention_mask")?.to_mask_f32()?;
    let mask = mask.iter().map(|&m| i64::from(m != 0.0)).collect();
    let out = gemma.forward(e, &TokenBatch::new(ids.to_i64()?, mask, b, l)?)?;
    write_f32(output, &[("last_hidden_state", &e.download(&out)?)])
}

/// `eval encode-prompt`: `model` is a pipeline folder (`tokenizer/`, `text_encoder/`); OUT gets `prompt_embeds`,
/// `negative_prompt_embeds` F32 `[B,M,D]` and `prompt_attention_mask`, `negative_prompt_attention_mask` I64 `[B,M]`.
pub fn encode_prompt<E: Engine>(
    e: &E,
    model: &Path,
    prompts: &[String],
    negative_prompts: &[String],
    opts: &PromptOptions,
    softcap: bool,
    output: &Path,
) -> Result<()> {
    let mut encoder = TextEncoder::from_dir(e, model)?;
    encoder.model.attn_softcap = softcap;
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let negatives: Vec<&str> = negative_prompts.iter().map(String::as_str).collect();
    let out = encoder.encode_prompt(e, &prompts, &negatives, opts)?;
    write_f32_i64(
        output,
        &[
            ("prompt_embeds", &out.prompt_embeds),
            ("negative_prompt_embeds", &out.negative_prompt_embeds),
        ],
        &[
            ("prompt_attention_mask", &out.prompt_attention_mask),
            (
                "negative_prompt_attention_mask",
                &out.negative_prompt_attention_mask,
            ),
        ],
    )
}

/// `eval vae-decode`: IN holds `latent` F32 `[B,C,h,w]`; OUT gets `image` F32 `[B,3,H,W]`, the raw decoder output (no
/// scaling-factor division, no clamp: the latent goes in as given), tiled when `tiling` is given.
pub fn vae_decode<E: Engine>(
    e: &E,
    model: &Path,
    inputs: &Path,
    output: &Path,
    tiling: Option<VaeTiling>,
) -> Result<()> {
    let vae = DcAeDecoder::from_dir(e, &component_dir(model, "vae")?)?;
    let latent = SafetensorsFile::open(inputs)?.get("latent")?.to_host()?;
    let image = match tiling {
        Some(t) => decode_tiled(e, &vae, &latent, t, &mut |_, _| Ok(()))?,
        None => e.download(&vae.decode(e, &e.upload(&latent)?)?)?,
    };
    write_f32(output, &[("image", &image)])
}
