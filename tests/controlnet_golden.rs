//! ControlNet on the CPU engine against diffusers' `SanaControlNetPipeline` (tools/make_fixtures.py `controlnet`):
//! tiny-sana with a tiny random `SanaControlNetModel` (2 blocks, every weight non-zero) in controlnet/, 4 DPM-Solver
//! steps from the initial latents of `pipeline_square_4steps_cfg_chi`: under CFG at conditioning scale 0.7 with a
//! 32×32 control PNG, and without CFG at scale 1 with a 90×74 one resized (PIL Lanczos) to 32×32. Tolerances as the
//! SanaPipeline goldens (tests/pipeline_golden.rs): 1e-4 on the final latents, 8-bit pixels equal up to ±1 on at
//! most 0.5% of values. Then the errors and `sana-run --control-image` end to end.

mod common;
mod tiny_runs;

use std::path::Path;
use std::process::Command;

use common::{assert_close, assert_pixels_match, golden, relative_error, scratch, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::image::{read_png, to_rgb8};
use sana::model::vae_tiling::VaeTile;
use sana::pipeline::Pipeline;
use sana::weights::SafetensorsFile;
use sana::{Control, Error, Request};
use tiny_runs::{controlnet_model, controlnet_request, sprint_model};

fn check(name: &str) {
    let req = controlnet_request(name);
    let g = SafetensorsFile::open(golden(&format!("{name}.safetensors"))).unwrap();
    let dir = controlnet_model(&format!("controlnet-{name}"));
    let pipe = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    assert!(pipe.has_controlnet());
    let (latents, _) = pipe.denoise(&req, &mut |_| Control::Continue).unwrap();
    let want = g.get("final_latents").unwrap().to_host().unwrap();
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
    assert_pixels_match(name, &pixels, g.get("image_u8").unwrap().bytes());
}

#[test]
fn controlnet_with_cfg_matches_diffusers() {
    check("controlnet_cfg");
}

#[test]
fn controlnet_without_cfg_resized_matches_diffusers() {
    check("controlnet_nocfg_resized");
}

/// `Error::Request` naming `field`, with `needle` in its reason.
#[track_caller]
fn assert_request_error(err: Error, field: &str, needle: &str) {
    match err {
        Error::Request { field: f, reason } => {
            assert_eq!(f, field, "{reason}");
            assert!(reason.contains(needle), "{reason}");
        }
        other => panic!("expected a request error on {field}, got {other}"),
    }
}

#[test]
fn bad_controlnet_requests_are_refused() {
    let control = read_png(&golden("img2img_init_32x32.png")).unwrap();
    let req = || {
        Request::new("a fox")
            .size(32, 32)
            .control_image(control.clone())
    };
    let plain = Pipeline::load(CpuEngine, &tiny_model(), Default::default()).unwrap();
    assert!(!plain.has_controlnet());
    assert_request_error(
        plain.plan(&req()).err().unwrap(),
        "control_image",
        "no controlnet/",
    );
    let dir = controlnet_model("controlnet-errors");
    let pipe = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    assert_request_error(
        pipe.plan(&req().control_scale(f32::INFINITY))
            .err()
            .unwrap(),
        "control_scale",
        "finite",
    );
    assert_request_error(
        pipe.plan(&req().pag_scale(2.0)).err().unwrap(),
        "control_image",
        "perturbed-attention",
    );
    let sprint_dir = sprint_model("controlnet-sprint");
    common::copy_dir(
        &common::fixtures().join("variants/controlnet/controlnet"),
        &sprint_dir.join("controlnet"),
    );
    let sprint = Pipeline::load(CpuEngine, &sprint_dir, Default::default()).unwrap();
    assert_request_error(
        sprint.plan(&req()).err().unwrap(),
        "control_image",
        "Sana-Sprint",
    );
    // A ControlNet whose width does not fit the transformer is refused when the folder opens.
    let bad = controlnet_model("controlnet-mismatch");
    let path = bad.join("controlnet/config.json");
    let config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 4");
    std::fs::write(&path, config).unwrap();
    let err = Pipeline::load(CpuEngine, &bad, Default::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("controlnet/config.json") && err.contains("width"),
        "{err}"
    );
}

fn sana_run(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    (o.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn sana_run_controlnet_reproduces_diffusers() {
    let dir = controlnet_model("controlnet-cli");
    let work = scratch("controlnet-cli-out");
    let (out, saved) = (work.join("out.png"), work.join("final.safetensors"));
    let g = golden("controlnet_cfg.safetensors");
    let control = golden("img2img_init_32x32.png");
    let tiny = tiny_model();
    let base = |model: &Path| {
        [
            "--engine",
            "cpu",
            "--model",
            s(model),
            "--prompt",
            "A red fox in the snow",
            "--height",
            "32",
            "--width",
            "32",
            "--steps",
            "4",
            "--no-resolution-binning",
            "--output",
            s(&out),
        ]
        .map(String::from)
        .to_vec()
    };
    let mut args = base(&dir);
    args.extend(
        [
            "--control-image",
            s(&control),
            "--control-scale",
            "0.7",
            "--latents",
            s(&g),
            "--save-latents",
            s(&saved),
        ]
        .map(String::from),
    );
    let (ok, text) = sana_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{text}");
    assert_close(
        "sana-run ControlNet latents",
        &SafetensorsFile::open(&saved)
            .unwrap()
            .get("latents")
            .unwrap()
            .to_host()
            .unwrap(),
        &SafetensorsFile::open(&g)
            .unwrap()
            .get("final_latents")
            .unwrap()
            .to_host()
            .unwrap(),
        1e-4,
    );
    std::fs::remove_file(&out).unwrap();
    let mut args = base(&tiny);
    args.extend(["--control-image", s(&control)].map(String::from));
    let (ok, text) = sana_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !ok && text.contains("--control-image needs a ControlNet"),
        "{text}"
    );
    let mut args = base(&dir);
    args.extend(["--control-scale", "0.5"].map(String::from));
    let (ok, text) = sana_run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && text.contains("--control-image"), "{text}");
    assert!(!out.exists(), "nothing written");
}
