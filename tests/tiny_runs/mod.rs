//! The tiny model's runs that compare one engine against another (tests/emu_*.rs, tests/cuda_engine.rs): the DiT
//! on a golden's inputs and the 2-step pipeline from the golden's initial latents.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use sana::engine::Engine;
use sana::model::sana_dit::SanaTransformer;
use sana::model::vae_tiling::VaeTile;
use sana::pipeline::Pipeline;
use sana::weights::SafetensorsFile;
use sana::HostTensor;
use sana::{Control, Event, Request, StageTimes};

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

/// The tiny DiT on the inputs of `transformer_square` (batch 2) with perturbed-attention guidance's identity
/// self-attention on the second row in both blocks (its first row runs the ordinary attention).
pub fn dit_perturbed<E: Engine>(e: &E) -> HostTensor {
    let dit = SanaTransformer::from_dir(e, &tiny_model().join("transformer")).unwrap();
    let g = SafetensorsFile::open(golden("transformer_square.safetensors")).unwrap();
    let get = |name: &str| g.get(name).unwrap().to_host().unwrap();
    let mask = g
        .get("encoder_attention_mask")
        .unwrap()
        .to_mask_host()
        .unwrap();
    let mut text = dit
        .encode_text(e, &get("encoder_hidden_states"), &mask)
        .unwrap();
    let x = get("hidden_states");
    let tokens = x.shape()[2] * x.shape()[3];
    dit.perturb_self_attention(e, &mut text, &[0, 1], 1, tokens)
        .unwrap();
    let out = dit
        .forward(e, &x, &text, get("timestep").data(), None)
        .unwrap();
    e.download(&out).unwrap()
}

/// Final latents, decoded image and stage statistics of the golden 2-step request (no CFG, with the instruction
/// prefix) from the golden's initial latents, on a pipeline of the tiny model.
pub fn pipeline_2step<E: Engine>(pipe: &Pipeline<E>) -> (HostTensor, HostTensor, StageTimes) {
    let g = SafetensorsFile::open(golden("pipeline_square_2steps_nocfg_chi.safetensors")).unwrap();
    let req = Request::new("a bowl of cherries")
        .size(32, 32)
        .steps(2)
        .guidance(1.0)
        .resolution_binning(false)
        .latents(g.get("latents").unwrap().to_host().unwrap());
    let (latents, times) = pipe.denoise(&req, &mut |_| Control::Continue).unwrap();
    let image = pipe.decode(&latents, VaeTile::Off).unwrap();
    (latents, image, times)
}

/// The tiny model on engine `e`.
pub fn tiny_pipeline<E: Engine>(e: E) -> Pipeline<E> {
    Pipeline::load(e, &tiny_model(), Default::default()).unwrap()
}

/// Runs `req`, counting the step events; asserts they come once per step, in order.
pub fn denoise_counting_steps<E: Engine>(pipe: &Pipeline<E>, req: &Request) -> HostTensor {
    let mut seen = Vec::new();
    let (latents, _) = pipe
        .denoise(req, &mut |event| {
            if let Event::Step { step, steps } = event {
                seen.push((step, steps));
            }
            Control::Continue
        })
        .unwrap();
    let steps = pipe.plan(req).unwrap().steps;
    let want: Vec<_> = (1..=steps).map(|i| (i, steps)).collect();
    assert_eq!(seen, want, "step events");
    latents
}

/// The request of golden `pipeline_<name>` (tools/make_fixtures.py), from its initial latents.
pub fn golden_request(name: &str) -> Request {
    golden_request_as(name, None)
}

/// Another request of a golden's shape and options: its own prompts, and seeded initial latents.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub prompt: &'static str,
    pub negative_prompt: &'static str,
    pub seed: u64,
}

/// A prompt and seed for a second request beside a golden's.
pub const VARIANT: Variant = Variant {
    prompt: "a blue house by a lake",
    negative_prompt: "blurry",
    seed: 11,
};

/// [`golden_request`], or with `variant` its shape and options with the variant's prompts and seed.
pub fn golden_request_as(name: &str, variant: Option<Variant>) -> Request {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden(&format!("pipeline_{name}.json"))).unwrap(),
    )
    .unwrap();
    let number = |key: &str| meta[key].as_u64().unwrap() as usize;
    let req = with_prompts(&meta, variant)
        .size(number("width"), number("height"))
        .steps(number("num_inference_steps"))
        .guidance(meta["guidance_scale"].as_f64().unwrap() as f32)
        .complex_human_instruction(meta["chi"].as_bool().unwrap())
        .resolution_binning(meta["use_resolution_binning"].as_bool().unwrap());
    with_latents(req, variant, &format!("pipeline_{name}"))
}

/// A request with the golden's prompts (`meta`), or the variant's.
fn with_prompts(meta: &serde_json::Value, variant: Option<Variant>) -> Request {
    match variant {
        None => Request::new(meta["prompt"].as_str().unwrap())
            .negative_prompt(meta["negative_prompt"].as_str().unwrap()),
        Some(v) => Request::new(v.prompt).negative_prompt(v.negative_prompt),
    }
}

/// `req` from the initial latents of golden `file`, or from the variant's seed.
fn with_latents(req: Request, variant: Option<Variant>, file: &str) -> Request {
    match variant {
        None => {
            let g = SafetensorsFile::open(golden(&format!("{file}.safetensors"))).unwrap();
            req.latents(g.get("latents").unwrap().to_host().unwrap())
        }
        Some(v) => req.seed(v.seed),
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

/// The request of golden `sprint_img2img_<name>` (tools/make_fixtures.py `img2img`) with PyTorch's initial and per-step
/// noise injected, for a [`sprint_model`] pipeline; and the golden's metadata.
pub fn sprint_img2img_request(name: &str) -> (Request, serde_json::Value) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden(&format!("{name}.json"))).unwrap())
            .unwrap();
    let g = SafetensorsFile::open(golden(&format!("{name}.safetensors"))).unwrap();
    let get = |n: &str| g.get(n).unwrap().to_host().unwrap();
    let number = |key: &str| meta[key].as_u64().unwrap() as usize;
    let init = sana::image::read_png(&golden(meta["init_image"].as_str().unwrap())).unwrap();
    let req = Request::new(meta["prompt"].as_str().unwrap())
        .size(number("width"), number("height"))
        .steps(number("num_inference_steps"))
        .guidance(meta["guidance_scale"].as_f64().unwrap() as f32)
        .resolution_binning(false)
        .init_image(init)
        .strength(meta["strength"].as_f64().unwrap())
        .latents(get("noise"))
        .step_noise(
            (0..number("steps_run"))
                .map(|i| get(&format!("noise.{i}")))
                .collect(),
        );
    (req, meta)
}

/// The request of golden `pag_<name>` (tools/make_fixtures.py `pag`) on the tiny model, from its initial latents.
pub fn pag_request(name: &str) -> Request {
    pag_request_as(name, None)
}

/// [`pag_request`], or with `variant` its shape and options with the variant's prompts and seed.
pub fn pag_request_as(name: &str, variant: Option<Variant>) -> Request {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden(&format!("{name}.json"))).unwrap())
            .unwrap();
    let number = |key: &str| meta[key].as_u64().unwrap() as usize;
    let scale = |key: &str| meta[key].as_f64().unwrap() as f32;
    let mut req = with_prompts(&meta, variant)
        .size(number("width"), number("height"))
        .steps(number("num_inference_steps"))
        .guidance(scale("guidance_scale"))
        .resolution_binning(false)
        .pag_scale(scale("pag_scale"))
        .pag_adaptive_scale(scale("pag_adaptive_scale"));
    if let Some(layers) = meta["pag_applied_layers"].as_array() {
        req = req.pag_layers(layers.iter().map(|l| l.as_str().unwrap().to_string()));
    }
    with_latents(req, variant, name)
}

/// tiny-sana with the tiny ControlNet (tests/fixtures/variants/controlnet) as its controlnet/, under the scratch
/// folder `test`.
pub fn controlnet_model(test: &str) -> Scratch {
    let dir = scratch(test);
    copy_dir(&tiny_model(), &dir);
    copy_dir(
        &fixtures().join("variants/controlnet/controlnet"),
        &dir.join("controlnet"),
    );
    dir
}

/// The request of golden `controlnet_<name>` (tools/make_fixtures.py `controlnet`), from its initial latents.
pub fn controlnet_request(name: &str) -> Request {
    controlnet_request_as(name, None)
}

/// [`controlnet_request`], or with `variant` its shape and options with the variant's prompts and seed, and the
/// conditioning scale halved.
pub fn controlnet_request_as(name: &str, variant: Option<Variant>) -> Request {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden(&format!("{name}.json"))).unwrap())
            .unwrap();
    let number = |key: &str| meta[key].as_u64().unwrap() as usize;
    let control = sana::image::read_png(&golden(meta["control_image"].as_str().unwrap())).unwrap();
    let scale = meta["controlnet_conditioning_scale"].as_f64().unwrap() as f32;
    let req = with_prompts(&meta, variant)
        .size(number("width"), number("height"))
        .steps(number("num_inference_steps"))
        .guidance(meta["guidance_scale"].as_f64().unwrap() as f32)
        .resolution_binning(false)
        .control_image(control)
        .control_scale(if variant.is_some() {
            scale / 2.0
        } else {
            scale
        });
    with_latents(req, variant, name)
}
