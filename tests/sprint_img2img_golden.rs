//! Sana-Sprint image-to-image on the CPU engine against diffusers' `SanaSprintImg2ImgPipeline`
//! (tools/make_fixtures.py `img2img`): the tiny Sprint pipeline from a random 8-bit PNG, at strength 0.6 (the whole
//! 2-step schedule), 0.4 (one step, from the intermediate time) and 0.5 of a 4-step linspace schedule with a 45×37
//! image resized (PIL Lanczos) to 64×32. PyTorch's initial and per-step noise are injected. Tolerances as the
//! Sprint goldens (tests/sprint_pipeline_golden.rs): 1e-4 on the final latents, 8-bit pixels equal up to ±1 on at
//! most 0.5% of values; the preprocessed image is compared exactly (8-bit levels through the same f32 arithmetic).
//! Then the errors: a non-Sprint folder, strengths outside (0, 1], an unreadable PNG; and `sana-run --init-image`.

mod common;
mod tiny_runs;

use std::path::Path;
use std::process::Command;

use common::{assert_close, assert_pixels_match, golden, relative_error, scratch, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::image::{read_png, to_rgb8, to_vae_input};
use sana::model::vae_tiling::VaeTile;
use sana::pipeline::Pipeline;
use sana::weights::SafetensorsFile;
use sana::{Control, Error, Request};
use tiny_runs::{sprint_img2img_request, sprint_model};

/// The golden's request and file.
fn golden_request(name: &str) -> (Request, SafetensorsFile, serde_json::Value) {
    let (req, meta) = sprint_img2img_request(name);
    let g = SafetensorsFile::open(golden(&format!("{name}.safetensors"))).unwrap();
    (req, g, meta)
}

fn check(name: &str) {
    let (req, g, meta) = golden_request(name);
    let get = |n: &str| g.get(n).unwrap().to_host().unwrap();
    let init = read_png(&golden(meta["init_image"].as_str().unwrap())).unwrap();
    let (w, h) = (
        meta["width"].as_u64().unwrap() as usize,
        meta["height"].as_u64().unwrap() as usize,
    );
    let prepared = to_vae_input(&init, w, h).unwrap();
    let want = get("image");
    assert_eq!(prepared.shape(), want.shape(), "{name}: preprocessed image");
    let differing = prepared
        .data()
        .iter()
        .zip(want.data())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing,
        0,
        "{name}: {differing} of {} preprocessed values differ (max {:e})",
        want.len(),
        relative_error(prepared.data(), want.data())
    );

    let dir = sprint_model(&format!("img2img-{name}"));
    let pipe = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    let plan = pipe.plan(&req).unwrap();
    assert_eq!(
        plan.steps,
        meta["steps_run"].as_u64().unwrap() as usize,
        "steps run"
    );
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
    assert_pixels_match(name, &pixels, &want);
}

#[test]
fn img2img_whole_schedule_matches_diffusers() {
    check("sprint_img2img_2step_s0.6");
}

#[test]
fn img2img_from_the_intermediate_time_matches_diffusers() {
    check("sprint_img2img_2step_s0.4");
}

#[test]
fn img2img_resized_half_way_into_four_steps_matches_diffusers() {
    check("sprint_img2img_4step_s0.5_resized");
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
fn img2img_on_a_non_sprint_folder_is_refused() {
    let init = read_png(&golden("img2img_init_32x32.png")).unwrap();
    let pipe = Pipeline::load(CpuEngine, &tiny_model(), Default::default()).unwrap();
    let req = Request::new("a fox").size(32, 32).init_image(init);
    let err = pipe.plan(&req).err().unwrap();
    assert_request_error(err, "init_image", "Sana-Sprint folders only");
}

#[test]
fn strength_outside_zero_to_one_is_refused() {
    let init = read_png(&golden("img2img_init_32x32.png")).unwrap();
    let dir = sprint_model("img2img-strength");
    let pipe = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    for strength in [0.0, -0.5, 1.0000001, f64::NAN, f64::INFINITY] {
        let req = Request::new("a fox")
            .size(32, 32)
            .init_image(init.clone())
            .strength(strength);
        let err = pipe.plan(&req).err().unwrap();
        assert_request_error(err, "strength", "outside (0, 1]");
    }
    // A strength so small that no step is left (2 − 2·1e-20 rounds to 2).
    let req = Request::new("a fox")
        .size(32, 32)
        .init_image(init.clone())
        .strength(1e-20);
    assert_request_error(pipe.plan(&req).err().unwrap(), "strength", "leaves none");
    // The edges inside: 1 runs both steps, a tiny strength one.
    for (strength, steps) in [(1.0, 2), (0.01, 1), (0.5, 1), (0.5000001, 2)] {
        let req = Request::new("a fox")
            .size(32, 32)
            .init_image(init.clone())
            .strength(strength);
        assert_eq!(pipe.plan(&req).unwrap().steps, steps, "strength {strength}");
    }
}

#[test]
fn an_unreadable_init_image_names_the_file() {
    let dir = scratch("img2img-bad-png");
    let path = dir.join("not-a.png");
    std::fs::write(&path, b"GIF89a not a png").unwrap();
    let err = read_png(&path).err().unwrap().to_string();
    assert!(err.contains("not-a.png") && err.contains("PNG"), "{err}");
    let missing = dir.join("missing.png");
    let err = read_png(&missing).err().unwrap().to_string();
    assert!(err.contains("missing.png"), "{err}");
}

/// Grey, grey+alpha, RGBA and palette PNGs read as PIL's `convert("RGB")` reads them.
#[test]
fn png_colour_types_read_as_rgb() {
    fn encode(color: png::ColorType, data: &[u8], palette: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, 2, 1);
        e.set_color(color);
        e.set_depth(png::BitDepth::Eight);
        if let Some(p) = palette {
            e.set_palette(p.to_vec());
        }
        let mut w = e.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
        out
    }
    let rgb = |bytes: Vec<u8>| sana::image::decode_png(&bytes).unwrap().into_pixels();
    assert_eq!(
        rgb(encode(png::ColorType::Grayscale, &[7, 200], None)),
        [7, 7, 7, 200, 200, 200]
    );
    assert_eq!(
        rgb(encode(
            png::ColorType::GrayscaleAlpha,
            &[7, 0, 200, 255],
            None
        )),
        [7, 7, 7, 200, 200, 200]
    );
    assert_eq!(
        rgb(encode(
            png::ColorType::Rgba,
            &[1, 2, 3, 0, 4, 5, 6, 9],
            None
        )),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        rgb(encode(
            png::ColorType::Indexed,
            &[1, 0],
            Some(&[10, 20, 30, 40, 50, 60])
        )),
        [40, 50, 60, 10, 20, 30]
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

/// `sana-run --init-image --strength 0.4` on the one-step golden: its only step's noise is multiplied by sin 0 = 0,
/// so the initial noise (`--latents`) alone fixes the result, which matches diffusers'.
#[test]
fn sana_run_img2img_reproduces_diffusers() {
    let name = "sprint_img2img_2step_s0.4";
    let (_, g, _) = golden_request(name);
    let dir = sprint_model("img2img-cli");
    let work = scratch("img2img-cli-out");
    let noise = work.join("noise.safetensors");
    sana::tensor_file::stage_f32(
        &noise,
        &[("latents", &g.get("noise").unwrap().to_host().unwrap())],
    )
    .unwrap()
    .commit()
    .unwrap();
    let (out, saved) = (work.join("out.png"), work.join("final.safetensors"));
    let init = golden("img2img_init_32x32.png");
    let base = [
        "--engine",
        "cpu",
        "--model",
        s(&dir),
        "--prompt",
        "a neon sign in the rain",
        "--height",
        "32",
        "--width",
        "32",
        "--no-resolution-binning",
        "--output",
        s(&out),
    ];
    let mut args = base.to_vec();
    args.extend([
        "--init-image",
        s(&init),
        "--strength",
        "0.4",
        "--latents",
        s(&noise),
        "--save-latents",
        s(&saved),
    ]);
    let (ok, text) = sana_run(&args);
    assert!(ok, "{text}");
    assert!(text.contains("1 steps"), "one step runs: {text}");
    assert_close(
        "sana-run img2img latents",
        &SafetensorsFile::open(&saved)
            .unwrap()
            .get("latents")
            .unwrap()
            .to_host()
            .unwrap(),
        &g.get("final_latents").unwrap().to_host().unwrap(),
        1e-4,
    );

    // The errors, each naming its flag or file, and no output written.
    std::fs::remove_file(&out).unwrap();
    let bad_png = work.join("bad.png");
    std::fs::write(&bad_png, b"not a png").unwrap();
    let tiny = tiny_model();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--init-image", s(&init), "--strength", "1.5"],
            "--strength 1.5 is outside (0, 1]",
        ),
        (
            vec!["--init-image", s(&init), "--strength", "0"],
            "--strength 0 is outside (0, 1]",
        ),
        (vec!["--init-image", s(&bad_png)], "bad.png"),
        (vec!["--strength", "0.5"], "--init-image"),
    ];
    for (extra, needle) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        let (ok, text) = sana_run(&args);
        assert!(!ok && text.contains(needle), "{needle}: {text}");
        assert!(!out.exists(), "{needle}: nothing written");
    }
    let mut args = base.to_vec();
    args[3] = s(&tiny);
    args.extend(["--init-image", s(&init)]);
    let (ok, text) = sana_run(&args);
    assert!(
        !ok && text.contains("--init-image is for Sana-Sprint folders only"),
        "{text}"
    );
}
