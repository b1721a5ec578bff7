//! `sana-run` as users call it: generation by default (flags, latents in and out, batch naming, determinism),
//! `eval vae-decode`, `inspect`, and bad input failing with a message that names the fault and writes nothing.

mod common;
#[path = "common/shape_detector.rs"]
mod shape_detector;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_close, assert_pixels_match, golden, scratch, tiny_model};
use sana::weights::SafetensorsFile;

/// Runs `sana-run args…` and returns (success, stderr + stdout).
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

/// Decodes an 8-bit RGB PNG.
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Flags of a quick generation on the demo model at 32×32 (8×8 latents), on the cpu engine (the goldens are f32;
/// without `--engine` a GPU host would run the cuda engine).
fn quick(out: &Path) -> Vec<String> {
    [
        "--engine",
        "cpu",
        "--model",
        s(&tiny_model()),
        "--prompt",
        "a bowl of cherries",
        "--height",
        "32",
        "--width",
        "32",
        "--steps",
        "2",
        "--no-resolution-binning",
        "--output",
        s(out),
    ]
    .map(String::from)
    .to_vec()
}

/// Adds `extra` (flag, value…) to `args`, replacing the value of a flag already there (clap rejects repeats).
fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    let mut i = 0;
    while i < extra.len() {
        let flag = extra[i];
        let value = extra
            .get(i + 1)
            .filter(|v| !v.starts_with("--"))
            .map(|v| v.to_string());
        match (args.iter().position(|a| a == flag), &value) {
            (Some(at), Some(v)) => args[at + 1] = v.clone(),
            (Some(_), None) => {}
            (None, _) => {
                args.push(flag.to_string());
                args.extend(value.clone());
            }
        }
        i += 1 + usize::from(value.is_some());
    }
    args
}

fn run_owned(args: &[String]) -> (bool, String) {
    sana_run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn generate_from_golden_latents_reproduces_diffusers() {
    let dir = scratch("generate-golden");
    let (out, saved) = (dir.join("cherries.png"), dir.join("final.safetensors"));
    let mut args = quick(&out);
    let latents = golden("pipeline_square_2steps_nocfg_chi.safetensors");
    args.extend(
        [
            "--guidance",
            "1",
            "--latents",
            s(&latents),
            "--save-latents",
            s(&saved),
        ]
        .map(String::from),
    );
    let (ok, text) = run_owned(&args);
    assert!(ok, "{text}");
    assert!(text.contains("time: load"), "a timing summary: {text}");
    let g = SafetensorsFile::open(&latents).unwrap();
    let got = SafetensorsFile::open(&saved).unwrap();
    assert_close(
        "saved latents",
        &got.get("latents").unwrap().to_host().unwrap(),
        &g.get("final_latents").unwrap().to_host().unwrap(),
        1e-4,
    );
    let (w, h, pixels) = read_png(&out);
    assert_eq!((w, h), (32, 32));
    let want = g.get("image_u8").unwrap().bytes().to_vec();
    assert_pixels_match("sana-run from golden latents", &pixels, &want);
}

#[test]
fn generate_is_deterministic_per_seed_and_names_batch_outputs() {
    let dir = scratch("generate-seed");
    let png = |name: &str, extra: &[&str]| -> Vec<PathBuf> {
        let out = dir.join(name);
        let mut args = quick(&out);
        args.extend(extra.iter().map(|a| a.to_string()));
        let (ok, text) = run_owned(&args);
        assert!(ok, "{text}");
        let batch = extra
            .iter()
            .position(|&a| a == "--batch")
            .map_or(1, |i| extra[i + 1].parse().unwrap());
        if batch == 1 {
            vec![out]
        } else {
            (0..batch)
                .map(|i| dir.join(name.replace(".png", &format!("-{i}.png"))))
                .collect()
        }
    };
    let a = read_png(&png("a.png", &["--seed", "7"])[0]).2;
    let b = read_png(&png("b.png", &["--seed", "7"])[0]).2;
    let c = read_png(&png("c.png", &["--seed", "8"])[0]).2;
    assert_eq!(a, b, "same seed, same image");
    assert_ne!(a, c, "another seed, another image");
    let batch = png("batch.png", &["--seed", "7", "--batch", "2"]);
    assert_eq!(read_png(&batch[0]).2, a, "image 0 of a batch uses the seed");
    assert_eq!(read_png(&batch[1]).2, c, "image 1 of a batch uses seed + 1");
}

#[test]
fn generate_with_flow_euler_and_without_chi_runs() {
    let dir = scratch("generate-euler");
    let out = dir.join("euler.png");
    let args = with(
        quick(&out),
        // --no-step-graph only changes how a GPU queues the steps; here it must just be accepted.
        &[
            "--sampler",
            "flow-euler",
            "--no-chi",
            "--width",
            "64",
            "--no-step-graph",
        ],
    );
    let (ok, text) = run_owned(&args);
    assert!(ok, "{text}");
    let (w, h, _) = read_png(&out);
    assert_eq!((w, h), (64, 32), "the requested size");
}

#[test]
fn eval_vae_decode_writes_the_raw_decoder_output() {
    let dir = scratch("eval-vae");
    let out = dir.join("image.safetensors");
    let inputs = golden("vae_decode_nonsquare.safetensors");
    let (ok, text) = sana_run(&[
        "eval",
        "vae-decode",
        "--model",
        s(&tiny_model()),
        "--inputs",
        s(&inputs),
        "--output",
        s(&out),
    ]);
    assert!(ok, "{text}");
    let got = SafetensorsFile::open(&out)
        .unwrap()
        .get("image")
        .unwrap()
        .to_host()
        .unwrap();
    let want = SafetensorsFile::open(&inputs)
        .unwrap()
        .get("sample")
        .unwrap()
        .to_host()
        .unwrap();
    assert_close("eval vae-decode image", &got, &want, 1e-4);
}

/// README's first command (no `--model`: the demo model), as README gives it: the picture shows what the prompt asks
/// (tests/common/shape_detector.rs) and is the one README shows (docs/demo/red-circle-left.png), up to rounding.
#[test]
fn readme_first_command_draws_a_red_circle_on_the_left() {
    let dir = scratch("readme_first_command");
    let out = dir.join("shape.png");
    let prompt = "a red circle on the left, on a white background";
    let (ok, text) = sana_run(&[
        "--engine",
        "cpu",
        "--prompt",
        prompt,
        "--no-resolution-binning",
        "--output",
        s(&out),
    ]);
    assert!(ok, "{text}");
    let (width, height, got) = read_png(&out);
    let verdict = shape_detector::detect(width as usize, height as usize, &got)
        .expect("a shape in the picture");
    assert_eq!(
        (verdict.colour, verdict.shape, verdict.position),
        ("red", "circle", "left"),
        "{prompt}: {verdict:?}"
    );
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/demo/red-circle-left.png");
    let (_, _, shown) = read_png(&readme);
    assert_pixels_match("README's picture", &got, &shown);
}

#[test]
fn inspect_describes_the_demo_model() {
    let (ok, text) = sana_run(&["inspect", s(&tiny_model())]);
    assert!(ok, "{text}");
    assert!(
        text.contains("custom") && text.contains("transformer"),
        "{text}"
    );
}

/// Runs a generation that must fail, checks the message names the fault, and that no PNG appeared.
fn expect_failure(test: &str, extra: &[&str], needles: &[&str]) {
    let dir = scratch(test);
    let out = dir.join("never.png");
    let (ok, text) = run_owned(&with(quick(&out), extra));
    assert!(!ok, "{test}: should fail");
    for n in needles {
        assert!(text.contains(n), "{test}: '{n}' not in: {text}");
    }
    assert!(!out.exists(), "{test}: a PNG was written");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "{test}: nothing at all is written"
    );
}

#[test]
fn error_height_not_a_multiple_of_32() {
    expect_failure("err-height", &["--height", "40"], &["--height 40", "32"]);
}

#[test]
fn error_unknown_sampler() {
    expect_failure(
        "err-sampler",
        &["--sampler", "ddim"],
        &["ddim", "flow-euler"],
    );
}

#[test]
fn error_cuda_engine_unavailable() {
    if let Ok((_, gpu)) = sana::engine::cuda::probe::open(0) {
        eprintln!(
            "skipped: {} is usable here, so --engine cuda does not fail",
            gpu.name
        );
        return;
    }
    expect_failure("err-cuda", &["--engine", "cuda"], &["cuda"]);
}

#[test]
fn auto_engine_falls_back_to_cpu_with_a_notice() {
    if sana::engine::cuda::probe::open(0).is_ok() {
        eprintln!("skipped: a GPU is usable here, so the default engine is cuda");
        return;
    }
    let dir = scratch("auto-engine");
    let out = dir.join("auto.png");
    let args: Vec<String> = quick(&out).into_iter().skip(2).collect();
    assert_eq!(args[0], "--model", "quick() starts with --engine cpu");
    let (ok, text) = run_owned(&args);
    assert!(ok, "{text}");
    assert!(text.contains("note: running on the cpu engine"), "{text}");
    assert!(out.exists());
}

#[test]
fn error_missing_model_folder() {
    expect_failure(
        "err-model",
        &["--model", "/nonexistent/sana"],
        &["/nonexistent/sana"],
    );
}

#[test]
fn error_latents_of_the_wrong_shape() {
    let latents = golden("pipeline_nonsquare_20steps_cfg_nochi.safetensors");
    expect_failure(
        "err-latents",
        &["--latents", s(&latents)],
        &["[1, 32, 16, 8]", "[1, 32, 8, 8]"],
    );
}

#[test]
fn error_latents_file_without_the_tensor() {
    let file = golden("vae_decode_square.safetensors");
    expect_failure("err-latents-name", &["--latents", s(&file)], &["latents"]);
}
