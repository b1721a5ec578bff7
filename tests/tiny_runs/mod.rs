//! The tiny model's runs that compare one engine against another (tests/emu_*.rs, tests/cuda_engine.rs): the DiT
//! on a golden's inputs and the 2-step pipeline from the golden's initial latents.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use sana::engine::Engine;
use sana::model::sana_dit::SanaTransformer;
use sana::model::vae_tiling::VaeTile;
use sana::pipeline::{Pipeline, Request, StageTimes};
use sana::weights::SafetensorsFile;
use sana::HostTensor;

use crate::common::{golden, tiny_model};

/// The DiT in `model` (a transformer/ folder) on the inputs of `golden_file`, with its guidance when it has one.
pub fn dit<E: Engine>(e: &E, model: &Path, golden_file: &str) -> HostTensor {
    let dit = SanaTransformer::from_dir(e, model).unwrap();
    let g = SafetensorsFile::open(golden(golden_file)).unwrap();
    let get = |name: &str| g.get(name).unwrap().to_host().unwrap();
    let mask = g
        .get("encoder_attention_mask")
        .unwrap()
        .to_mask_host()
        .unwrap();
    let text = dit
        .encode_text(e, &get("encoder_hidden_states"), &mask)
        .unwrap();
    let guidance = g.view("guidance").map(|v| v.to_f32().unwrap());
    let out = dit
        .forward(
            e,
            &get("hidden_states"),
            &text,
            get("timestep").data(),
            guidance.as_deref(),
        )
        .unwrap();
    e.download(&out).unwrap()
}

/// Final latents, decoded image and stage statistics of the golden 2-step request (no CFG, with the instruction
/// prefix) from the golden's initial latents.
pub fn pipeline_2step<E: Engine>(e: &E) -> (HostTensor, HostTensor, StageTimes) {
    let g = SafetensorsFile::open(golden("pipeline_square_2steps_nocfg_chi.safetensors")).unwrap();
    let pipe = Pipeline::load(e, &tiny_model()).unwrap();
    let req = Request {
        prompt: "a bowl of cherries".into(),
        height: 32,
        width: 32,
        steps: 2,
        guidance: 1.0,
        resolution_binning: false,
        latents: Some(g.get("latents").unwrap().to_host().unwrap()),
        ..Request::default()
    };
    let (latents, times) = pipe.denoise(e, &req, &mut |_, _| {}).unwrap();
    let image = pipe.decode(e, &latents, VaeTile::Off).unwrap();
    (latents, image, times)
}
