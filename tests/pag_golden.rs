//! Perturbed-attention guidance on the CPU engine against diffusers' `SanaPAGPipeline` (tools/make_fixtures.py
//! `pag`): the tiny model, 4 DPM-Solver steps from the initial latents of `pipeline_square_4steps_cfg_chi`, PAG on
//! `transformer_blocks.1` under CFG (batch [uncond, cond, perturbed]) and on the default `transformer_blocks.0`
//! without CFG ([cond, perturbed]) with adaptive scaling. Tolerances as the SanaPipeline goldens
//! (tests/pipeline_golden.rs): 1e-4 on the final latents, 8-bit pixels equal up to ±1 on at most 0.5% of values.
//! Then the errors (a layer that does not exist, a malformed one, PAG on a Sprint folder, a negative scale) and
//! `sana-run --pag-scale` end to end.

mod common;
mod tiny_runs;

use std::path::Path;
use std::process::Command;

use common::{assert_close, assert_pixels_match, golden, relative_error, scratch, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::image::to_rgb8;
use sana::model::vae_tiling::VaeTile;
use sana::pipeline::Pipeline;
use sana::weights::SafetensorsFile;
use sana::{Control, Error, Request};
use tiny_runs::{pag_request, sprint_model};

fn check(name: &str) {
    let req = pag_request(name);
    let g = SafetensorsFile::open(golden(&format!("{name}.safetensors"))).unwrap();
    let pipe = Pipeline::load(CpuEngine, &tiny_model(), Default::default()).unwrap();
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
fn pag_with_cfg_on_a_chosen_layer_matches_diffusers() {
    check("pag_cfg_layer1");
}

#[test]
fn pag_without_cfg_adaptive_on_the_default_layer_matches_diffusers() {
    check("pag_nocfg_adaptive");
}

#[test]
fn pag_plans_three_copies_with_cfg_and_two_without() {
    let pipe = Pipeline::load(CpuEngine, &tiny_model(), Default::default()).unwrap();
    let base = Request::new("a fox").size(32, 32).batch(2).pag_scale(3.0);
    let plan = pipe.plan(&base.clone().guidance(4.5)).unwrap();
    assert_eq!(
        (
            plan.model_batch(),
            plan.pag.as_ref().unwrap().blocks.clone()
        ),
        (6, vec![0])
    );
    assert_eq!(
        pipe.plan(&base.clone().guidance(1.0))
            .unwrap()
            .model_batch(),
        4
    );
    assert!(
        pipe.plan(&base.pag_scale(0.0)).unwrap().pag.is_none(),
        "0 is off"
    );
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
fn bad_pag_requests_are_refused() {
    let pipe = Pipeline::load(CpuEngine, &tiny_model(), Default::default()).unwrap();
    let req = || Request::new("a fox").size(32, 32).pag_scale(3.0);
    let cases = [
        (
            req().pag_layers(["transformer_blocks.2"]),
            "pag_layers",
            "names no layer",
        ),
        (
            req().pag_layers(["transformer_blocks.0", "transformer_blocks.7"]),
            "pag_layers",
            "2 blocks",
        ),
        (
            req().pag_layers(["blocks.0"]),
            "pag_layers",
            "transformer_blocks.N",
        ),
        (
            req().pag_layers(["transformer_blocks.x"]),
            "pag_layers",
            "transformer_blocks.N",
        ),
        (
            req().pag_layers(Vec::<String>::new()),
            "pag_layers",
            "empty",
        ),
        (req().pag_scale(-1.0), "pag_scale", "≥ 0"),
        (req().pag_scale(f32::NAN), "pag_scale", "finite"),
        (req().pag_adaptive_scale(-0.1), "pag_adaptive_scale", "≥ 0"),
    ];
    for (req, field, needle) in cases {
        assert_request_error(pipe.plan(&req).err().unwrap(), field, needle);
    }
    let dir = sprint_model("pag-sprint");
    let sprint = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    assert_request_error(
        sprint.plan(&req()).err().unwrap(),
        "pag_scale",
        "Sana-Sprint",
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
fn sana_run_pag_reproduces_diffusers() {
    let work = scratch("pag-cli");
    let (out, saved) = (work.join("out.png"), work.join("final.safetensors"));
    let g = golden("pag_cfg_layer1.safetensors");
    let tiny = tiny_model();
    let base = [
        "--engine",
        "cpu",
        "--model",
        s(&tiny),
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
    ];
    let mut args = base.to_vec();
    args.extend([
        "--guidance",
        "4.5",
        "--pag-scale",
        "3",
        "--pag-layers",
        "transformer_blocks.1",
        "--latents",
        s(&g),
        "--save-latents",
        s(&saved),
    ]);
    let (ok, text) = sana_run(&args);
    assert!(ok, "{text}");
    let got = SafetensorsFile::open(&saved).unwrap();
    assert_close(
        "sana-run PAG latents",
        &got.get("latents").unwrap().to_host().unwrap(),
        &SafetensorsFile::open(&g)
            .unwrap()
            .get("final_latents")
            .unwrap()
            .to_host()
            .unwrap(),
        1e-4,
    );
    std::fs::remove_file(&out).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--pag-scale", "3", "--pag-layers", "transformer_blocks.5"],
            "--pag-layers `transformer_blocks.5` names no layer",
        ),
        (vec!["--pag-layers", "transformer_blocks.0"], "--pag-scale"),
        (
            vec!["--pag-scale=-2"],
            "--pag-scale -2 is not a finite number",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        let (ok, text) = sana_run(&args);
        assert!(!ok && text.contains(needle), "{needle}: {text}");
        assert!(!out.exists(), "{needle}: nothing written");
    }
}
