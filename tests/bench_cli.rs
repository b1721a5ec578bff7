//! `sana-run bench` on the tiny fixture model: the JSON report has every stage with sane figures (times positive,
//! FLOPs equal to the cost model's, floors far below the CPU times), `--plan-only` runs nothing, and `--engine cuda`
//! without a usable GPU is reported as skipped — exit 0, with the reason and the plan — not a crash.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::scratch;
use serde_json::Value;

/// Runs `sana-run bench args… --json` with `tmp` as its temp directory.
fn run_bench(args: &[&str], tmp: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("TMPDIR", tmp)
        .output()
        .unwrap()
}

/// What a run left in its temp directory (a `--variant` writes its synthetic model there and must remove it).
fn leftovers(tmp: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// Runs `sana-run bench args… --json`, checks it cleaned up after itself and parses stdout.
fn bench(args: &[&str]) -> Value {
    let tmp = scratch("bench");
    let o = run_bench(args, &tmp);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "sana-run bench {args:?} failed: {stderr}"
    );
    let left = leftovers(&tmp);
    assert!(left.is_empty(), "sana-run bench {args:?} left {left:?}");
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"))
}

const SMALL: [&str; 8] = [
    "--height", "64", "--width", "96", "--steps", "2", "--runs", "1",
];

const STAGES: [&str; 5] = ["text_encode", "step", "denoise", "decode", "total"];

#[test]
fn cpu_run_reports_every_stage() {
    let r = bench(&SMALL);
    assert_eq!(r["status"], "ok");
    assert_eq!(r["engine"], "cpu");
    assert_eq!(
        (r["height"].as_u64(), r["width"].as_u64()),
        (Some(64), Some(96))
    );
    let stage = |k: &str, f: &str| r["stages"][k][f].as_f64().unwrap();
    for k in STAGES {
        let t = stage(k, "time_s");
        assert!(t > 0.0 && t < 600.0, "{k}: time {t}");
        assert!(stage(k, "flops") > 0.0, "{k}: flops");
        assert!(stage(k, "bytes_bf16") > 0.0, "{k}: bytes");
        for device in ["H100 SXM", "H200"] {
            let floor = r["stages"][k]["floor_s"][device].as_f64().unwrap();
            assert!(
                floor > 0.0 && floor < t,
                "{k}: {device} floor {floor} vs {t} s"
            );
        }
    }
    assert!(stage("text_encode", "peak_host_bytes") > 0.0);
    assert!(stage("step", "time_s") <= stage("denoise", "time_s"));
    let parts =
        stage("text_encode", "time_s") + stage("denoise", "time_s") + stage("decode", "time_s");
    assert!(
        parts <= stage("total", "time_s") * 1.5,
        "stages {parts} s vs total"
    );
    assert_eq!(
        stage("denoise", "flops") as u64,
        // conditioning + 2 steps
        stage("total", "flops") as u64
            - stage("text_encode", "flops") as u64
            - stage("decode", "flops") as u64
    );
    assert!(stage("denoise", "flops") > 2.0 * stage("step", "flops"));
    assert!(r["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["peak_device_bytes"].is_null());
}

#[test]
fn plan_only_runs_nothing() {
    let r = bench(&["--plan-only", "--steps", "20"]);
    assert_eq!(r["status"], "plan-only");
    assert!(r["stages"]["total"]["time_s"].is_null());
    assert!(r["stages"]["step"]["flops"].as_f64().unwrap() > 0.0);
}

#[test]
fn cuda_without_an_engine_is_skipped_not_an_error() {
    if let Ok((_, gpu)) = sana::engine::cuda::probe::open(0) {
        eprintln!(
            "skipped: {} is usable here, so --engine cuda runs",
            gpu.name
        );
        return;
    }
    let r = bench(&["--engine", "cuda", "--steps", "2"]);
    assert_eq!(r["status"], "skipped");
    assert_eq!(r["engine"], "cuda");
    let reason = r["skipped_reason"].as_str().unwrap();
    assert!(reason.contains("cuda"), "{reason}");
    assert!(
        r["stages"]["step"]["flops"].as_f64().unwrap() > 0.0,
        "the plan is still reported"
    );
    assert!(r["stages"]["step"]["time_s"].is_null());
}

#[test]
fn a_published_variant_plans_at_real_size() {
    // Synthetic weights: only configs and key lists are written; --plan-only never materialises the DiT or Gemma.
    let r = bench(&["--variant", "sana-1600m-1024", "--plan-only"]);
    assert_eq!(
        (r["height"].as_u64(), r["width"].as_u64()),
        (Some(1024), Some(1024))
    );
    let step = r["stages"]["step"]["matmul_flops"].as_f64().unwrap();
    // 2 × (CFG) 1024 tokens × 2 FLOPs × ~1.6e9 parameters, plus attention: a few TFLOP.
    assert!((5e12..2e13).contains(&step), "one step: {step} FLOPs");
}

#[test]
fn a_failed_variant_run_removes_its_synthetic_model() {
    let tmp = scratch("bench-variant-fails");
    let o = run_bench(
        &[
            "--variant",
            "sana-1600m-1024",
            "--plan-only",
            "--height",
            "7",
        ],
        &tmp,
    );
    assert!(!o.status.success(), "a height of 7 must be refused");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("height"), "{stderr}");
    let left = leftovers(&tmp);
    assert!(
        left.is_empty(),
        "the synthetic model is left behind: {left:?}"
    );
}

/// `--pag-scale` and `--control` add their work to the model (the perturbed copy of the batch; the ControlNet's
/// blocks in each step) and say so in the report; `--control` on a folder without a ControlNet is an error naming it.
#[test]
fn pag_and_controlnet_runs_count_their_extra_work() {
    let plan = |extra: &[&str]| {
        let mut args = SMALL.to_vec();
        args.extend(["--plan-only"]);
        args.extend(extra);
        bench(&args)
    };
    let step_flops = |r: &Value| r["stages"]["step"]["flops"].as_f64().unwrap();
    let base = plan(&[]);
    let pag = plan(&["--pag-scale", "2"]);
    assert_eq!(
        (base["model_batch"].as_u64(), pag["model_batch"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(pag["pag_blocks"], serde_json::json!([0]));
    assert!(step_flops(&pag) > 1.4 * step_flops(&base), "{pag}");

    let dir = scratch("bench-controlnet");
    common::copy_dir(&common::tiny_model(), &dir);
    common::copy_dir(
        &common::fixtures().join("variants/controlnet/controlnet"),
        &dir.join("controlnet"),
    );
    let control = plan(&["--control", "--model", dir.to_str().unwrap()]);
    assert_eq!(control["controlnet_scale"].as_f64(), Some(1.0));
    assert!(step_flops(&control) > 1.5 * step_flops(&base), "{control}");

    let tmp = scratch("bench-no-controlnet");
    let o = run_bench(&["--plan-only", "--control"], &tmp);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("--control:") && stderr.contains("no controlnet/"),
        "{stderr}"
    );
}
