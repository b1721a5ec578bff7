//! Sana-Sprint end to end on the CPU engine against diffusers' `SanaSprintPipeline` (tools/make_fixtures.py): the
//! variants/sprint transformer (guidance embedding, q/k norm) with tiny-sana's text encoder and VAE and an
//! `SCMScheduler`, one and two steps, explicit initial latents and PyTorch's per-step noise injected.
//! Tolerances as the SanaPipeline goldens (tests/pipeline_golden.rs): 1e-4 on the final latents, 8-bit pixels
//! equal up to ±1 on at most 0.5% of values.

mod common;
mod tiny_runs;

use common::{
    assert_close, assert_pixels_match, copy_dir, golden, relative_error, scratch, tiny_model,
};
use sana::engine::cpu::CpuEngine;
use sana::image::to_rgb8;
use sana::model::vae_tiling::VaeTile;
use sana::pipeline::Pipeline;
use sana::weights::SafetensorsFile;
use sana::{Control, Request};
use tiny_runs::{sprint_model, SCM_CONFIG};

fn check(steps: usize) {
    let name = format!("sprint_pipeline_{steps}step.safetensors");
    let g = SafetensorsFile::open(golden(&name)).unwrap();
    let get = |n: &str| g.get(n).unwrap().to_host().unwrap();
    let dir = sprint_model(&format!("sprint-{steps}"));
    let pipe = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    assert!(pipe.is_sprint());
    let req = Request::new("a neon sign in the rain")
        .size(32, 32)
        .steps(steps)
        .guidance(4.5)
        .resolution_binning(false)
        .latents(get("latents"))
        .step_noise((0..steps).map(|i| get(&format!("noise.{i}"))).collect());
    assert_eq!(pipe.plan(&req).unwrap().steps, steps);
    let (latents, _) = pipe.denoise(&req, &mut |_| Control::Continue).unwrap();
    let want = get("final_latents");
    eprintln!(
        "{name}: final latents relative error {:e}",
        relative_error(latents.data(), want.data())
    );
    assert_close(&format!("{name}: final latents"), &latents, &want, 1e-4);
    let pixels: Vec<u8> = to_rgb8(&pipe.decode(&latents, VaeTile::Off).unwrap())
        .unwrap()
        .iter()
        .flat_map(|p| p.pixels().to_vec())
        .collect();
    let want = g.get("image_u8").unwrap().bytes().to_vec();
    assert_pixels_match(&name, &pixels, &want);
}

#[test]
fn sprint_one_step_matches_diffusers() {
    check(1);
}

#[test]
fn sprint_two_steps_match_diffusers() {
    check(2);
}

#[test]
fn sprint_weights_with_a_flow_scheduler_are_refused() {
    let dir = sprint_model("sprint-mismatch");
    std::fs::copy(
        tiny_model().join("scheduler/scheduler_config.json"),
        dir.join("scheduler/scheduler_config.json"),
    )
    .unwrap();
    let err = Pipeline::load(CpuEngine, &dir, Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("guidance_embeds") && err.contains("SCMScheduler"),
        "{err}"
    );
}

#[test]
fn scm_scheduler_with_non_sprint_weights_is_refused() {
    let dir = scratch("sprint-mismatch-2");
    copy_dir(&tiny_model(), &dir);
    std::fs::write(dir.join("scheduler/scheduler_config.json"), SCM_CONFIG).unwrap();
    let err = Pipeline::load(CpuEngine, &dir, Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("is not a Sana-Sprint model"), "{err}");
}
