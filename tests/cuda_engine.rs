//! The CUDA engine against the CPU reference. Without a usable GPU (no driver, no device, no cuBLASLt, or a build
//! without nvcc) every GPU test prints that it was skipped and why — or fails, when `SANA_REQUIRE_GPU=1` (the GPU
//! bundle's run.sh and CI's software-device run set it); the probe, argument and kernel-list checks run everywhere.
//!
//! Tolerances (max|cuda − cpu| / max|cpu|, the CPU run on the same rounded inputs), with u = 2⁻⁸ (bf16: 8
//! significand bits) or 2⁻¹¹ (f16: 11) the unit roundoff of the storage dtype:
//! - each op: the kernel-family tests check every op of this engine, one check body per family shared with the
//!   emulation engine, at the models' shapes under per-element bounds (tests/<family>.rs, their `*_on_cuda` tests;
//!   tests/linear.rs for cuBLASLt's linear); the linear of the GEMM-plan test here: its output is rounded once
//!   (≤ u of the largest value), f32 accumulation order and the epilogue's `tanhf` far below that: 4u.
//! - the tiny DiT (two blocks): 20u, the budget tests/emu_engine.rs justifies for the same kernels in emulation; the
//!   DC-AE decoder and the whole 2-step pipeline: 40u as in tests/emu_pipeline.rs; Gemma: the measured rounding
//!   floor of bf16/f16 storage with 1.5× margin, 0.15 (bf16) and 2e-2 (f16), as tests/emu_text_encoder.rs derives.

mod common;
mod emu_check;
mod tiny_runs;

use common::{relative_error, tiny_model};
use emu_check::{rounded, Rng};
use sana::engine::cpu::CpuEngine;
use sana::engine::cuda::CudaEngine;
use sana::engine::StorageDtype;
use sana::engine::{Activation, Engine};
use sana::text::{PromptOptions, TextEncoder};
use sana::{Error, HostTensor};

const DTYPES: [StorageDtype; 2] = [StorageDtype::Bf16, StorageDtype::F16];

fn unit_roundoff(dtype: StorageDtype) -> f32 {
    match dtype {
        StorageDtype::Bf16 => 2f32.powi(-8),
        _ => 2f32.powi(-11),
    }
}

/// The engine on GPU 0, or `None` after printing why `test` is skipped (see [`common::cuda_or_skip`]).
fn gpu(test: &str, dtype: StorageDtype) -> Option<CudaEngine> {
    common::cuda_or_skip(test, dtype)
}

fn check(what: &str, got: &HostTensor, want: &HostTensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let err = relative_error(got.data(), want.data());
    eprintln!("{what}: {err:e} (tol {tol:e})");
    assert!(err.is_finite() && err <= tol, "{what}: {err:e} > {tol:e}");
}

#[test]
fn without_a_gpu_the_probe_says_what_is_missing() {
    match sana::engine::cuda::probe::open(0) {
        Ok((_, info)) => {
            eprintln!("GPU present: {info:?}");
            assert!(!info.name.is_empty());
            assert!(info.compute_capability >= (8, 0));
            assert!(info.total_bytes > 0);
        }
        Err(Error::EngineUnavailable { engine, reason }) => {
            assert_eq!(engine, "cuda");
            assert!(
                ["libcuda", "device", "cuBLASLt", "compute capability"]
                    .iter()
                    .any(|w| reason.contains(w)),
                "the reason names what is missing: {reason}"
            );
        }
        Err(other) => panic!("the probe must report EngineUnavailable, got {other}"),
    }
}

#[test]
fn f32_storage_is_refused_with_the_dtypes_it_takes() {
    let Err(err) = CudaEngine::new(0, StorageDtype::F32) else {
        panic!("f32 storage must be refused");
    };
    let msg = err.to_string();
    assert!(msg.contains("bf16") && msg.contains("f16"), "{msg}");
}

/// A pipeline of the model in `dir` on a GPU engine like `g` (a pipeline owns its engine).
fn gpu_pipeline(g: &CudaEngine, dir: &std::path::Path) -> sana::pipeline::Pipeline<CudaEngine> {
    let engine = CudaEngine::new(g.info().ordinal, g.dtype()).unwrap();
    sana::pipeline::Pipeline::load(engine, dir, Default::default()).unwrap()
}

/// Runs `f` on the GPU in each storage dtype, or prints why `test` is skipped.
fn on_each_gpu(test: &str, mut f: impl FnMut(&CudaEngine, f32)) {
    for dtype in DTYPES {
        match gpu(test, dtype) {
            Some(g) => f(&g, unit_roundoff(dtype)),
            None => return,
        }
    }
}

#[test]
fn tiny_dit_matches_cpu() {
    let (model, file) = (
        tiny_model().join("transformer"),
        "transformer_square.safetensors",
    );
    let want = tiny_runs::dit(&CpuEngine, &model, file);
    on_each_gpu("tiny_dit_matches_cpu", |g, u| {
        let got = tiny_runs::dit(g, &model, file);
        check(&format!("DiT {:?}", g.dtype()), &got, &want, 20.0 * u);
    });
}

fn text<E: Engine>(e: &E) -> HostTensor {
    let enc = TextEncoder::from_dir(e, &tiny_model()).unwrap();
    enc.encode_positive(e, &["a bowl of cherries"], &PromptOptions::default())
        .unwrap()
        .0
}

#[test]
fn tiny_text_encoder_matches_cpu() {
    let want = text(&CpuEngine);
    on_each_gpu("tiny_text_encoder_matches_cpu", |g, _| {
        let tol = if g.dtype() == StorageDtype::Bf16 {
            0.15
        } else {
            2e-2
        };
        check(&format!("Gemma {:?}", g.dtype()), &text(g), &want, tol);
    });
}

#[test]
fn tiny_pipeline_matches_cpu() {
    let (want_latents, want_image, _) =
        tiny_runs::pipeline_2step(&tiny_runs::tiny_pipeline(CpuEngine));
    on_each_gpu("tiny_pipeline_matches_cpu", |g, u| {
        let pipe = gpu_pipeline(g, &tiny_model());
        let (latents, image, times) = tiny_runs::pipeline_2step(&pipe);
        let dtype = g.dtype();
        let report = pipe
            .engine()
            .step_graph_report()
            .expect("a denoising loop ran");
        assert_eq!(report.capture_error, None, "the step must be capturable");
        assert_eq!(
            (report.eager, report.replayed),
            (1, 1),
            "step 2 replays the graph"
        );
        eprintln!(
            "{dtype:?}: peak device memory: text encode {:?}, denoise {:?} bytes",
            times.text_encode.peak_device_bytes, times.denoise.peak_device_bytes
        );
        check(
            &format!("pipeline latents {dtype:?}"),
            &latents,
            &want_latents,
            40.0 * u,
        );
        check(
            &format!("pipeline image {dtype:?}"),
            &image,
            &want_image,
            40.0 * u,
        );
    });
}

/// The 4-step CFG golden request with the step captured once and replayed three times, against the same request
/// queued op by op: the same kernels on the same buffers, so the latents must agree bit for bit; and progress comes
/// once per step, in order. (Against the CPU, guidance 4.5 multiplies per-step errors by up to 1 + 2·4.5: the
/// precise bounds are the 2-step pipeline's in `tiny_pipeline_matches_cpu` and the bit-exact sampler's above.)
#[test]
fn step_graph_replays_match_eager_steps() {
    let req = tiny_runs::golden_request("square_4steps_cfg_chi");
    let steps = 4;
    on_each_gpu("step_graph_replays_match_eager_steps", |g, _| {
        let pipe = gpu_pipeline(g, &tiny_model());
        let g = pipe.engine();
        let run = |graphs: bool| {
            g.use_step_graphs(graphs);
            let latents = tiny_runs::denoise_counting_steps(&pipe, &req);
            (latents, g.step_graph_report().unwrap())
        };
        let (eager, eager_report) = run(false);
        let (replayed, report) = run(true);
        g.use_step_graphs(true);
        eprintln!(
            "{:?}: step graph {report:?}; all eager: {eager_report:?}",
            g.dtype()
        );
        assert_eq!(eager_report.replayed, 0);
        assert_eq!(eager_report.eager, steps);
        assert_eq!(report.capture_error, None, "the step must be capturable");
        assert_eq!((report.eager, report.replayed), (1, steps - 1));
        assert_eq!(replayed.data(), eager.data(), "graph replay vs eager steps");
    });
}

/// A pipeline of `dir` on a GPU engine like `g` keeping `kept` denoising loops' step graphs.
fn gpu_pipeline_keeping(
    g: &CudaEngine,
    dir: &std::path::Path,
    kept: usize,
) -> sana::pipeline::Pipeline<CudaEngine> {
    let engine = CudaEngine::new(g.info().ordinal, g.dtype()).unwrap();
    let options = sana::pipeline::PipelineOptions {
        kept_step_graphs: kept,
        ..Default::default()
    };
    sana::pipeline::Pipeline::load(engine, dir, options).unwrap()
}

/// Runs `first` then `second` (the same shape and options, other prompts and noise) on a pipeline that keeps one
/// loop: `first` captures its step, `second` replays that graph from its first step on its own inputs, written into
/// the kept buffers. Its latents must equal, bit for bit, those of a pipeline that keeps nothing (which runs an
/// eager step and captures): the same kernels on the same values — unless a buffer kept `first`'s values.
fn kept_graph_replays_match_a_fresh_capture(
    test: &str,
    dir: &std::path::Path,
    (first, second): (&sana::Request, &sana::Request),
) {
    on_each_gpu(test, |g, _| {
        let kept = gpu_pipeline_keeping(g, dir, 1);
        let fresh = gpu_pipeline_keeping(g, dir, 0);
        let a = tiny_runs::denoise_counting_steps(&kept, first);
        let captured = kept.engine().step_graph_report().unwrap();
        let b = tiny_runs::denoise_counting_steps(&kept, second);
        let reused = kept.engine().step_graph_report().unwrap();
        let want = tiny_runs::denoise_counting_steps(&fresh, second);
        let recaptured = fresh.engine().step_graph_report().unwrap();
        let steps = kept.plan(second).unwrap().steps;
        eprintln!(
            "{test} {:?}: captured {captured:?}; reused {reused:?}",
            g.dtype()
        );
        assert_eq!(captured.capture_error, None, "the step must be capturable");
        assert!(!captured.reused && !recaptured.reused);
        assert_eq!((captured.eager, recaptured.eager), (1, 1));
        assert!(reused.reused, "the second loop replays the kept graph");
        assert_eq!((reused.eager, reused.replayed), (0, steps));
        assert_ne!(a.data(), b.data(), "the two requests must differ");
        assert_eq!(b.data(), want.data(), "kept graph vs a fresh capture");
    });
}

/// The CFG flow loop: text conditioning, schedule and latents are rewritten.
#[test]
fn a_kept_graph_replays_a_cfg_loop_on_new_inputs() {
    let first = tiny_runs::golden_request("square_4steps_cfg_chi");
    let second = tiny_runs::golden_request_as("square_4steps_cfg_chi", Some(tiny_runs::VARIANT));
    kept_graph_replays_match_a_fresh_capture(
        "a_kept_graph_replays_a_cfg_loop_on_new_inputs",
        &tiny_model(),
        (&first, &second),
    );
}

/// Sana-Sprint's SCM loop: its per-step noise and guidance embedding are rewritten too.
#[test]
fn a_kept_graph_replays_a_sprint_loop_on_new_inputs() {
    let dir = tiny_runs::sprint_model("cuda-sprint-kept-graph");
    let request = |prompt: &str, seed: u64| {
        sana::Request::new(prompt)
            .size(64, 64)
            .steps(3)
            .resolution_binning(false)
            .seed(seed)
    };
    let (first, second) = (
        request("a lighthouse at dusk", 5),
        request("a red fox", 6).guidance(3.0),
    );
    kept_graph_replays_match_a_fresh_capture(
        "a_kept_graph_replays_a_sprint_loop_on_new_inputs",
        &dir,
        (&first, &second),
    );
}

/// PAG (its perturbation masks) and ControlNet (its text side, control latents and scale) loops.
#[test]
fn a_kept_graph_replays_pag_and_controlnet_loops_on_new_inputs() {
    let test = "a_kept_graph_replays_pag_and_controlnet_loops_on_new_inputs";
    let pag = "pag_nocfg_adaptive";
    kept_graph_replays_match_a_fresh_capture(
        test,
        &tiny_model(),
        (
            &tiny_runs::pag_request(pag).steps(3),
            &tiny_runs::pag_request_as(pag, Some(tiny_runs::VARIANT)).steps(3),
        ),
    );
    let dir = tiny_runs::controlnet_model("cuda-controlnet-kept-graph");
    let control = "controlnet_nocfg_resized";
    kept_graph_replays_match_a_fresh_capture(
        test,
        &dir,
        (
            &tiny_runs::controlnet_request(control).steps(3),
            &tiny_runs::controlnet_request_as(control, Some(tiny_runs::VARIANT)).steps(3),
        ),
    );
}

/// Kept loops are keyed by everything their step's work depends on, and the least recently used goes first: with
/// room for two, a loop of another size or step count captures its own graph, a return to a kept shape replays
/// it (and gives the first run's latents again), and a third shape evicts the oldest.
#[test]
fn kept_graphs_are_keyed_by_shape_and_evicted_least_recently_used() {
    let a = tiny_runs::golden_request("square_4steps_cfg_chi");
    let b = tiny_runs::golden_request_as("square_4steps_cfg_chi", Some(tiny_runs::VARIANT))
        .size(64, 32);
    let c =
        tiny_runs::golden_request_as("square_4steps_cfg_chi", Some(tiny_runs::VARIANT)).steps(5);
    let Some(g) = gpu(
        "kept_graphs_are_keyed_by_shape_and_evicted_least_recently_used",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let pipe = gpu_pipeline_keeping(&g, &tiny_model(), 2);
    let run = |req: &sana::Request| {
        let latents = tiny_runs::denoise_counting_steps(&pipe, req);
        (latents, pipe.engine().step_graph_report().unwrap().reused)
    };
    let (first, reused) = run(&a);
    assert!(!reused);
    assert!(!run(&b).1, "another size captures");
    let (again, reused) = run(&a);
    assert!(reused, "a is still kept");
    assert_eq!(again.data(), first.data(), "the same request again");
    assert!(
        !run(&c).1,
        "another step count captures (its schedule differs)"
    );
    assert!(!run(&b).1, "b was the least recently used: evicted by c");
    assert!(run(&c).1, "c is still kept");
}

/// Perturbed-attention guidance's identity self-attention in one DiT forward: 20u, as the DiT.
#[test]
fn tiny_dit_perturbed_matches_cpu() {
    let want = tiny_runs::dit_perturbed(&CpuEngine);
    on_each_gpu("tiny_dit_perturbed_matches_cpu", |g, u| {
        let got = tiny_runs::dit_perturbed(g);
        check(
            &format!("perturbed DiT {:?}", g.dtype()),
            &got,
            &want,
            20.0 * u,
        );
    });
}

/// The PAG golden request without CFG, 2 steps, with the second replayed from the step graph (the perturbed copy
/// and the 2-chunk step must capture): 200u as tests/emu_pipeline.rs derives.
#[test]
fn pag_pipeline_matches_cpu() {
    let req = tiny_runs::pag_request("pag_nocfg_adaptive").steps(2);
    let (want, _) = tiny_runs::tiny_pipeline(CpuEngine)
        .denoise(&req, &mut |_| sana::Control::Continue)
        .unwrap();
    on_each_gpu("pag_pipeline_matches_cpu", |g, u| {
        let pipe = gpu_pipeline(g, &tiny_model());
        let (got, _) = pipe
            .denoise(&req, &mut |_| sana::Control::Continue)
            .unwrap();
        let report = pipe.engine().step_graph_report().expect("a loop ran");
        assert_eq!(
            report.capture_error, None,
            "the PAG step must be capturable"
        );
        assert_eq!((report.eager, report.replayed), (1, 1));
        check(
            &format!("PAG latents {:?}", g.dtype()),
            &got,
            &want,
            200.0 * u,
        );
    });
}

/// ControlNet (the golden `controlnet_nocfg_resized` request, 2 steps) with the second step, ControlNet included,
/// replayed from the graph: 100u as tests/emu_pipeline.rs derives.
#[test]
fn controlnet_pipeline_matches_cpu() {
    let dir = tiny_runs::controlnet_model("cuda-controlnet");
    let req = tiny_runs::controlnet_request("controlnet_nocfg_resized").steps(2);
    let cpu = sana::pipeline::Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    let (want, _) = cpu.denoise(&req, &mut |_| sana::Control::Continue).unwrap();
    on_each_gpu("controlnet_pipeline_matches_cpu", |g, u| {
        let pipe = gpu_pipeline(g, &dir);
        let (got, _) = pipe
            .denoise(&req, &mut |_| sana::Control::Continue)
            .unwrap();
        let report = pipe.engine().step_graph_report().expect("a loop ran");
        assert_eq!(
            report.capture_error, None,
            "the ControlNet step must be capturable"
        );
        assert_eq!((report.eager, report.replayed), (1, 1));
        check(
            &format!("ControlNet latents {:?}", g.dtype()),
            &got,
            &want,
            100.0 * u,
        );
    });
}

/// Sana-Sprint image-to-image on the GPU against the CPU engine: the golden `sprint_img2img_4step_s0.5_resized`
/// request (the VAE encoder on the resized init image, then two SCM steps, the second replayed from the graph).
/// 60u: the encoder's 20u plus the SCM loop's 40u, as tests/emu_pipeline.rs derives.
#[test]
fn sprint_img2img_matches_cpu() {
    let dir = tiny_runs::sprint_model("cuda-sprint-img2img");
    let (req, _) = tiny_runs::sprint_img2img_request("sprint_img2img_4step_s0.5_resized");
    let cpu = sana::pipeline::Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    let (want, _) = cpu.denoise(&req, &mut |_| sana::Control::Continue).unwrap();
    on_each_gpu("sprint_img2img_matches_cpu", |g, u| {
        let pipe = gpu_pipeline(g, &dir);
        let (got, _) = pipe
            .denoise(&req, &mut |_| sana::Control::Continue)
            .unwrap();
        let report = pipe.engine().step_graph_report().expect("a loop ran");
        assert_eq!(
            report.capture_error, None,
            "the img2img step must be capturable"
        );
        assert_eq!((report.eager, report.replayed), (1, 1));
        check(
            &format!("Sprint img2img latents {:?}", g.dtype()),
            &got,
            &want,
            60.0 * u,
        );
    });
}

/// Sana-Sprint's 3-step SCM loop (seeded per-step noise) with steps 2 and 3 replayed from the graph, against the
/// same loop queued op by op: bit-identical latents.
#[test]
fn sprint_step_graph_replays_match_eager_steps() {
    let dir = tiny_runs::sprint_model("cuda-sprint-graph");
    let req = sana::Request::new("a lighthouse at dusk")
        .size(64, 64)
        .steps(3)
        .resolution_binning(false)
        .seed(5);
    on_each_gpu("sprint_step_graph_replays_match_eager_steps", |g, _| {
        let pipe = gpu_pipeline(g, &dir);
        let g = pipe.engine();
        let run = |graphs: bool| {
            g.use_step_graphs(graphs);
            let latents = tiny_runs::denoise_counting_steps(&pipe, &req);
            (latents, g.step_graph_report().unwrap())
        };
        let (eager, _) = run(false);
        let (replayed, report) = run(true);
        eprintln!("{:?}: sprint step graph {report:?}", g.dtype());
        assert_eq!(
            report.capture_error, None,
            "the Sprint step must be capturable"
        );
        assert_eq!((report.eager, report.replayed), (1, 2));
        assert_eq!(replayed.data(), eager.data(), "graph replay vs eager steps");
    });
}

#[test]
fn out_of_memory_names_the_stage_and_the_bytes() {
    let Some(g) = gpu(
        "out_of_memory_names_the_stage_and_the_bytes",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let total = g.info().total_bytes;
    // A working set of twice the device: refused before anything is queued.
    let err = g.begin_stage("denoise", total).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::OutOfDeviceMemory { .. }), "{msg}");
    assert!(
        msg.contains("denoise") && msg.contains("MiB") && msg.contains("lower the batch"),
        "{msg}"
    );
    // An allocation larger than the device fails as an error value too, naming the stage set above: a linear
    // whose [2^17, 2^20] bf16 output is 256 GiB, from inputs of a few MiB.
    g.begin_stage("decode", 0).unwrap();
    let x = g.upload(&HostTensor::zeros(vec![1 << 17, 1])).unwrap();
    let w = g.upload(&HostTensor::zeros(vec![1 << 20, 1])).unwrap();
    assert!(256 << 30 > total, "the device is smaller than 256 GiB");
    match Engine::linear(&g, &x, &w, None, Activation::Identity) {
        Err(Error::OutOfDeviceMemory { stage, .. }) => assert_eq!(stage, "decode"),
        Err(other) => panic!("expected OutOfDeviceMemory, got {other}"),
        Ok(_) => panic!("an allocation of the whole device cannot succeed"),
    }
}

/// A capture that fails inside the step — a stream synchronisation injected at the step's first launch, an illegal
/// call during capture that invalidates it, after which the buffers the failing op drops fail to free into the
/// capture — is abandoned and every step runs eagerly: the loop completes, the report gives the reason, and the
/// latents equal the all-eager run bit for bit. The stream has left capture mode: the next loop captures and replays.
#[test]
fn a_failed_capture_falls_back_to_eager_steps() {
    let req = tiny_runs::golden_request("square_4steps_cfg_chi");
    let steps = 4;
    let Some(g) = gpu(
        "a_failed_capture_falls_back_to_eager_steps",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let pipe = gpu_pipeline(&g, &tiny_model());
    let g = pipe.engine();
    let run = |graphs: bool, inject: bool| {
        g.use_step_graphs(graphs);
        g.inject_sync_during_capture(inject);
        let latents = tiny_runs::denoise_counting_steps(&pipe, &req);
        (latents, g.step_graph_report().unwrap())
    };
    let (eager, _) = run(false, false);
    let (fallback, report) = run(true, true);
    eprintln!("failed capture: {report:?}");
    let why = report
        .capture_error
        .as_deref()
        .expect("the synchronisation inside the capture must fail it");
    assert!(
        why.contains("STREAM_CAPTURE"),
        "the reason names the driver's capture error: {why}"
    );
    assert_eq!((report.eager, report.replayed), (steps, 0));
    assert_eq!(
        fallback.data(),
        eager.data(),
        "eager fallback vs eager steps"
    );
    let (replayed, report) = run(true, false);
    assert_eq!(
        report.capture_error, None,
        "the engine captures again after a failed capture"
    );
    assert_eq!((report.eager, report.replayed), (1, steps - 1));
    assert_eq!(
        replayed.data(),
        eager.data(),
        "graph replay after the fallback"
    );
}

/// cuBLASLt descriptors and the heuristic's algorithm are made once per problem: a repeated problem adds no plan, a
/// new epilogue or shape adds one; and each call uses its own bias, the one attribute set per call (two biases
/// resident at different addresses, alternated).
#[test]
fn gemm_plans_are_cached_per_problem_and_take_each_calls_bias() {
    let Some(g) = gpu(
        "gemm_plans_are_cached_per_problem_and_take_each_calls_bias",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let (dtype, act) = (g.dtype(), Activation::GeluTanh);
    let mut rng = Rng(77);
    let mut input = |s: &[usize]| rounded(&rng.tensor(s, -1.0, 1.0), dtype);
    let (x, w, b1, b2) = (
        input(&[3, 19, 40]),
        input(&[24, 40]),
        input(&[24]),
        input(&[24]),
    );
    let up = |t: &HostTensor| g.upload(t).unwrap();
    let (xd, wd, b1d, b2d) = (up(&x), up(&w), up(&b1), up(&b2));
    let before = g.gemm_plans();
    for (i, (bd, b)) in [(&b1d, &b1), (&b2d, &b2), (&b1d, &b1)]
        .into_iter()
        .enumerate()
    {
        let got = g
            .download(&Engine::linear(&g, &xd, &wd, Some(bd), act).unwrap())
            .unwrap();
        let want = sana::cpu::linear::linear(&x, &w, Some(b), act).unwrap();
        check(
            &format!("linear call {i}"),
            &got,
            &want,
            4.0 * unit_roundoff(dtype),
        );
    }
    assert_eq!(g.gemm_plans(), before + 1, "one problem, one plan");
    Engine::linear(&g, &xd, &wd, None, act).unwrap();
    assert_eq!(g.gemm_plans(), before + 2, "no bias is another epilogue");
    Engine::linear(&g, &up(&input(&[5, 40])), &wd, Some(&b1d), act).unwrap();
    assert_eq!(
        g.gemm_plans(),
        before + 3,
        "another row count, another plan"
    );
}

/// Weights larger than both pinned staging buffers together (20M bf16 elements: three chunks of 8M, so a buffer is
/// refilled while the other's copy may still run) arrive exactly; a second load right after, which `load` does not
/// wait for the first to finish before starting, too.
#[test]
fn weights_larger_than_the_staging_buffers_load_exactly() {
    use half::bf16;
    use safetensors::tensor::{Dtype, TensorView};
    use sana::weights::SafetensorsFile;
    let Some(g) = gpu(
        "weights_larger_than_the_staging_buffers_load_exactly",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    let n = 20 << 20;
    // Distinct from chunk to chunk at the same offset (8M is not a multiple of 4093).
    let values = |seed: usize| -> Vec<bf16> {
        (0..n)
            .map(|i| bf16::from_f32(((i + seed) % 4093) as f32 / 64.0 - 32.0))
            .collect()
    };
    let (first, second) = (values(0), values(1000));
    let bytes = |v: &[bf16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (b1, b2) = (bytes(&first), bytes(&second));
    let dir = common::scratch("staging");
    let path = dir.join("large.safetensors");
    safetensors::serialize_to_file(
        [
            ("first", TensorView::new(Dtype::BF16, vec![n], &b1).unwrap()),
            (
                "second",
                TensorView::new(Dtype::BF16, vec![n], &b2).unwrap(),
            ),
        ],
        None,
        &path,
    )
    .unwrap();
    let file = SafetensorsFile::open(&path).unwrap();
    let loaded = [
        g.load(&file.get("first").unwrap(), &[n]).unwrap(),
        g.load(&file.get("second").unwrap(), &[n]).unwrap(),
    ];
    for (name, t, want) in [
        ("first", &loaded[0], &first),
        ("second", &loaded[1], &second),
    ] {
        let got = g.download(t).unwrap();
        let wrong = got
            .data()
            .iter()
            .zip(want.iter())
            .position(|(g, w)| *g != w.to_f32());
        assert_eq!(wrong, None, "{name}: first wrong element");
    }
}

/// The kernel list the engine loads (`Family::symbols`, the one list) against each family's PTX: every listed kernel
/// is an entry and every entry is listed, so a kernel added to a .cu without the list, or listed without a kernel,
/// fails here and not at engine start on a GPU. Runs wherever nvcc ran at build time.
#[test]
fn kernel_lists_match_the_ptx_entries() {
    use sana::engine::cuda::embedded::{self, Family};
    for family in Family::ALL {
        let ptx = match embedded::ptx(family) {
            Ok(ptx) => ptx,
            Err(Error::KernelsNotBuilt)
                if !embedded::NVCC_BUILT && option_env!("SANA_REQUIRE_NVCC") != Some("1") =>
            {
                eprintln!("skipped: no nvcc at build time");
                return;
            }
            Err(e) => panic!("kernels/{}.cu: {e}", family.name()),
        };
        let mut entries: Vec<String> = ptx
            .lines()
            .filter_map(|line| line.split(".entry ").nth(1))
            .map(|rest| rest.split('(').next().unwrap_or(rest).trim().to_string())
            .collect();
        entries.sort();
        let mut listed = family.symbols();
        listed.sort();
        assert_eq!(listed, entries, "kernels/{}.cu", family.name());
    }
}

/// Cancelling from the callback while graph replays are queued stops the loop at that step with
/// `Error::Cancelled`: step 2 reports and cancels while step 3 is already queued, so three steps ran and the fourth
/// never did; then the same pipeline denoises the full request again, bit for bit. Once on a loop that captures its
/// graph in that run (step 1 eager), once on one that replays the graph kept from the run before (kept through the
/// cancel, and rewritten by the next run).
#[test]
fn cancelling_a_replayed_loop_stops_it_and_the_pipeline_stays_usable() {
    use sana::{Control, Event};
    let req = tiny_runs::golden_request("square_4steps_cfg_chi");
    let Some(g) = gpu(
        "cancelling_a_replayed_loop_stops_it_and_the_pipeline_stays_usable",
        StorageDtype::Bf16,
    ) else {
        return;
    };
    for (kept, want) in [(0, (1, 2, false)), (1, (0, 3, true))] {
        let pipe = gpu_pipeline_keeping(&g, &tiny_model(), kept);
        let full = tiny_runs::denoise_counting_steps(&pipe, &req);
        let mut seen = Vec::new();
        let err = pipe
            .denoise(&req, &mut |event| {
                if let Event::Step { step, .. } = event {
                    seen.push(step);
                    if step == 2 {
                        return Control::Cancel;
                    }
                }
                Control::Continue
            })
            .unwrap_err();
        assert!(matches!(err, Error::Cancelled), "{err}");
        assert_eq!(seen, [1, 2]);
        let report = pipe.engine().step_graph_report().unwrap();
        assert_eq!(report.capture_error, None);
        assert_eq!(
            (report.eager, report.replayed, report.reused),
            want,
            "keeping {kept}: steps 1 to 3 ran, step 4 never queued"
        );
        let again = tiny_runs::denoise_counting_steps(&pipe, &req);
        assert_eq!(again.data(), full.data(), "the run after a cancel");
    }
}

/// A panic in the caller's callback while graph replays are queued unwinds out of the loop; the queued work
/// finishes on its own, and the same pipeline then denoises the full request again, bit for bit.
#[test]
fn a_panicking_callback_mid_replay_leaves_the_pipeline_usable() {
    use sana::{Control, Event};
    let test = "a_panicking_callback_mid_replay_leaves_the_pipeline_usable";
    let req = tiny_runs::golden_request("square_4steps_cfg_chi");
    let Some(g) = gpu(test, StorageDtype::Bf16) else {
        return;
    };
    let pipe = gpu_pipeline(&g, &tiny_model());
    let full = tiny_runs::denoise_counting_steps(&pipe, &req);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pipe.denoise(&req, &mut |event| {
            if let Event::Step { step: 2, .. } = event {
                panic!("the caller's bug");
            }
            Control::Continue
        })
    }));
    assert!(unwound.is_err(), "the panic reaches the caller");
    let again = tiny_runs::denoise_counting_steps(&pipe, &req);
    assert_eq!(again.data(), full.data(), "the run after the panic");
}
