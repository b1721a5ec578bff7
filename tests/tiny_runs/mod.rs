//! The tiny model's runs that compare one engine against another (tests/emu_*.rs, tests/cuda_engine.rs): the DiT
//! on a golden's inputs and the 2-step pipeline from the golden's initial latents.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use sana::engine::Engine;
use sana::model::sana_dit::SanaTransformer;
use sana::model::vae_tiling::VaeTile;
use sana::pipeline::{Pipeline, Request, StageTimes};
use sana::text::PromptOptions;
use sana::weights::SafetensorsFile;
use sana::HostTensor;

use crate::common::{copy_dir, fixtures, golden, scratch, tiny_model, Scratch};

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

/// The request of golden `pipeline_<name>` (tools/make_fixtures.py), from its initial latents.
pub fn golden_request(name: &str) -> Request {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden(&format!("pipeline_{name}.json"))).unwrap(),
    )
    .unwrap();
    let g = SafetensorsFile::open(golden(&format!("pipeline_{name}.safetensors"))).unwrap();
    let mut prompt_options = PromptOptions::default();
    if !meta["chi"].as_bool().unwrap() {
        prompt_options.complex_human_instruction.clear();
    }
    Request {
        prompt: meta["prompt"].as_str().unwrap().into(),
        negative_prompt: meta["negative_prompt"].as_str().unwrap().into(),
        height: meta["height"].as_u64().unwrap() as usize,
        width: meta["width"].as_u64().unwrap() as usize,
        steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
        guidance: meta["guidance_scale"].as_f64().unwrap() as f32,
        prompt_options,
        resolution_binning: meta["use_resolution_binning"].as_bool().unwrap(),
        latents: Some(g.get("latents").unwrap().to_host().unwrap()),
        ..Request::default()
    }
}

pub const SCM_CONFIG: &str = r#"{"_class_name": "SCMScheduler", "num_train_timesteps": 1000,
    "prediction_type": "trigflow", "sigma_data": 0.5}"#;

/// tiny-sana with the Sprint transformer and an SCMScheduler, written under the scratch folder `test`.
pub fn sprint_model(test: &str) -> Scratch {
    let dir = scratch(test);
    copy_dir(&tiny_model(), &dir);
    std::fs::remove_dir_all(dir.join("transformer")).unwrap();
    copy_dir(
        &fixtures().join("variants/sprint/transformer"),
        &dir.join("transformer"),
    );
    std::fs::write(dir.join("scheduler/scheduler_config.json"), SCM_CONFIG).unwrap();
    dir
}
