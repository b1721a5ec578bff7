//! The whole tiny pipeline (Gemma-2 with the instruction prefix, the DiT in a 2-step Flow-DPM-Solver loop, the DC-AE
//! decoder) on the emulation engine against the CPU engine, from the same initial latents. (Without CFG: guidance is
//! host arithmetic checked by the CPU goldens, and batch 2 would double the slowest part of the emulation.)
//!
//! Tolerances (max|emu − cpu| / max|cpu|): per-op rounding is u = 2⁻⁸ (bf16) or 2⁻¹¹ (f16), and one DiT forward
//! stays within 20u (tests/emu_engine.rs). The final latents are the exact initial noise plus two solver updates
//! built from one velocity each, and the text embeddings carry Gemma's own rounding (two layers, a few u): 2 × 20u
//! = 40u. The decoder's channel norms renormalise each stage and its ~25 sequential roundings add ~√25·u = 5u, so
//! the image gets the same 40u: 1.6e-1 (bf16), 2.0e-2 (f16); measured 2026-12-01: 2.5u and 4.3u (bf16), 2.8u and
//! 2.3u (f16). In f32 only summation order differs: 1e-4, as the goldens. Sana-Sprint's 2-step SCM loop gets the
//! same budget (see `check_sprint`); measured 2026-12-01: 1.9u (bf16), 2.0u (f16). Sana-Sprint image-to-image adds
//! the VAE encoder before that loop (see `check_sprint_img2img`).

mod common;
mod tiny_runs;

use common::relative_error;
use sana::engine::cpu::CpuEngine;
use sana::engine::emu::EmuEngine;
use sana::engine::Engine;
use sana::engine::StorageDtype;
use sana::pipeline::Pipeline;
use sana::HostTensor;
use sana::{Control, Request};

/// Final latents and decoded image of the golden 2-step request.
fn run<E: Engine>(e: E) -> (HostTensor, HostTensor) {
    let (latents, image, _) = tiny_runs::pipeline_2step(&tiny_runs::tiny_pipeline(e));
    (latents, image)
}

fn check(dtype: StorageDtype, u: f32) {
    let (want_latents, want_image) = run(CpuEngine);
    let (latents, image) = run(EmuEngine::new(dtype));
    let (tol_latents, tol_image) = if dtype == StorageDtype::F32 {
        (1e-4, 1e-4)
    } else {
        (40.0 * u, 40.0 * u)
    };
    let el = relative_error(latents.data(), want_latents.data());
    let ei = relative_error(image.data(), want_image.data());
    eprintln!(
        "{dtype:?}: final latents {el:e} (tol {tol_latents:e}), image {ei:e} (tol {tol_image:e})"
    );
    assert!(
        el.is_finite() && el <= tol_latents,
        "{dtype:?} latents {el:e}"
    );
    assert!(ei.is_finite() && ei <= tol_image, "{dtype:?} image {ei:e}");
}

#[test]
fn emu_pipeline_matches_cpu_bf16() {
    check(StorageDtype::Bf16, 2f32.powi(-8));
}

#[test]
fn emu_pipeline_matches_cpu_f16() {
    check(StorageDtype::F16, 2f32.powi(-11));
}

#[test]
fn emu_pipeline_matches_cpu_f32() {
    check(StorageDtype::F32, 0.0);
}

/// Sana-Sprint's 2-step SCM loop (seeded noise, no CFG, no instruction prefix) on the emulation engine against the
/// CPU engine: the SCM kernels composed with the Sprint DiT in the loop. Final latents are the last clean estimate
/// `x0 = cos τ·x − sin τ·f(F)`, linear in the two model outputs with coefficients of order 1, so the same 2 × 20u
/// budget as the flow loop applies.
fn check_sprint(dtype: StorageDtype, u: f32) {
    let dir = tiny_runs::sprint_model(&format!("emu-sprint-{dtype:?}"));
    let req = Request::new("a lighthouse at dusk")
        .size(96, 64)
        .steps(2)
        .resolution_binning(false)
        .seed(9)
        .complex_human_instruction(false);
    let cpu = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    let (want, _) = cpu.denoise(&req, &mut |_| Control::Continue).unwrap();
    let pipe = Pipeline::load(EmuEngine::new(dtype), &dir, Default::default()).unwrap();
    let (got, _) = pipe.denoise(&req, &mut |_| Control::Continue).unwrap();
    let err = relative_error(got.data(), want.data());
    let tol = if dtype == StorageDtype::F32 {
        1e-4
    } else {
        40.0 * u
    };
    eprintln!("{dtype:?}: Sprint final latents {err:e} (tol {tol:e})");
    assert!(
        err.is_finite() && err <= tol,
        "{dtype:?} Sprint latents {err:e}"
    );
}

#[test]
fn emu_sprint_pipeline_matches_cpu_bf16() {
    check_sprint(StorageDtype::Bf16, 2f32.powi(-8));
}

#[test]
fn emu_sprint_pipeline_matches_cpu_f16() {
    check_sprint(StorageDtype::F16, 2f32.powi(-11));
}

/// Sana-Sprint image-to-image (the golden `sprint_img2img_4step_s0.5_resized` request: a resized init image through
/// the VAE encoder, noised to the third of four TrigFlow times, two SCM steps) on the emulation engine against the
/// CPU engine. The encoded latents enter the start `cos τ₀·z + sin τ₀·n` with a coefficient below 1 and carry the
/// encoder's rounding, within 20u (tests/emu_vae.rs); the two steps add the SCM loop's 40u (`check_sprint`): 60u.
fn check_sprint_img2img(dtype: StorageDtype, u: f32) {
    let dir = tiny_runs::sprint_model(&format!("emu-img2img-{dtype:?}"));
    let (req, _) = tiny_runs::sprint_img2img_request("sprint_img2img_4step_s0.5_resized");
    let cpu = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    let (want, _) = cpu.denoise(&req, &mut |_| Control::Continue).unwrap();
    let pipe = Pipeline::load(EmuEngine::new(dtype), &dir, Default::default()).unwrap();
    let (got, _) = pipe.denoise(&req, &mut |_| Control::Continue).unwrap();
    let err = relative_error(got.data(), want.data());
    let tol = if dtype == StorageDtype::F32 {
        1e-4
    } else {
        60.0 * u
    };
    eprintln!(
        "{dtype:?}: Sprint img2img final latents {err:e} (tol {tol:e}, {:.1}u)",
        err / u.max(f32::MIN_POSITIVE)
    );
    assert!(
        err.is_finite() && err <= tol,
        "{dtype:?} Sprint img2img latents {err:e}"
    );
}

#[test]
fn emu_sprint_img2img_matches_cpu_bf16() {
    check_sprint_img2img(StorageDtype::Bf16, 2f32.powi(-8));
}

#[test]
fn emu_sprint_img2img_matches_cpu_f16() {
    check_sprint_img2img(StorageDtype::F16, 2f32.powi(-11));
}

/// Perturbed-attention guidance's identity self-attention (the `keep`/`identity` mixing after the linear attention)
/// in one DiT forward on the emulation engine against the CPU engine: one forward's 20u (tests/emu_engine.rs).
fn check_dit_perturbed(dtype: StorageDtype, u: f32) {
    let want = tiny_runs::dit_perturbed(&CpuEngine);
    let got = tiny_runs::dit_perturbed(&EmuEngine::new(dtype));
    let err = relative_error(got.data(), want.data());
    eprintln!(
        "{dtype:?}: perturbed DiT {err:e} ({:.1}u, tol 20u)",
        err / u
    );
    assert!(
        err.is_finite() && err <= 20.0 * u,
        "{dtype:?} perturbed DiT {err:e}"
    );
}

#[test]
fn emu_perturbed_dit_matches_cpu_bf16() {
    check_dit_perturbed(StorageDtype::Bf16, 2f32.powi(-8));
}

#[test]
fn emu_perturbed_dit_matches_cpu_f16() {
    check_dit_perturbed(StorageDtype::F16, 2f32.powi(-11));
}

/// The PAG golden request without CFG (`pag_nocfg_adaptive`, batch [cond, perturbed]), 2 steps (t = 999, 749), on
/// the emulation engine against the CPU engine. Each step's velocity `c + s·(c − p)` weighs the two outputs' errors,
/// each within one forward's 20u, by at most 1 + 2s: with the adaptive scales s = 2.992 then 0.992,
/// (1 + 2·2.992)·20u + (1 + 2·0.992)·20u < 200u. The kernels themselves are checked bit-exactly
/// (tests/sampler.rs) and the perturbed forward at 20u (`check_dit_perturbed`).
fn check_pag_pipeline(dtype: StorageDtype, u: f32) {
    let req = tiny_runs::pag_request("pag_nocfg_adaptive").steps(2);
    let (want, _) = tiny_runs::tiny_pipeline(CpuEngine)
        .denoise(&req, &mut |_| Control::Continue)
        .unwrap();
    let (got, _) = tiny_runs::tiny_pipeline(EmuEngine::new(dtype))
        .denoise(&req, &mut |_| Control::Continue)
        .unwrap();
    let err = relative_error(got.data(), want.data());
    eprintln!(
        "{dtype:?}: PAG final latents {err:e} ({:.1}u, tol 200u)",
        err / u
    );
    assert!(
        err.is_finite() && err <= 200.0 * u,
        "{dtype:?} PAG latents {err:e}"
    );
}

#[test]
fn emu_pag_pipeline_matches_cpu_bf16() {
    check_pag_pipeline(StorageDtype::Bf16, 2f32.powi(-8));
}

#[test]
fn emu_pag_pipeline_matches_cpu_f16() {
    check_pag_pipeline(StorageDtype::F16, 2f32.powi(-11));
}

/// ControlNet (the golden `controlnet_nocfg_resized` request, 2 steps) on the emulation engine against the CPU
/// engine. Each step runs the ControlNet's forward, whose residuals join the transformer's blocks: as one forward of
/// twice the depth, 2 × 20u per step, over 2 steps 80u; the control latents carry the VAE encoder's 20u
/// (tests/emu_vae.rs): 100u.
fn check_controlnet(dtype: StorageDtype, u: f32) {
    let dir = tiny_runs::controlnet_model(&format!("emu-controlnet-{dtype:?}"));
    let req = tiny_runs::controlnet_request("controlnet_nocfg_resized").steps(2);
    let cpu = Pipeline::load(CpuEngine, &dir, Default::default()).unwrap();
    let (want, _) = cpu.denoise(&req, &mut |_| Control::Continue).unwrap();
    let pipe = Pipeline::load(EmuEngine::new(dtype), &dir, Default::default()).unwrap();
    let (got, _) = pipe.denoise(&req, &mut |_| Control::Continue).unwrap();
    let err = relative_error(got.data(), want.data());
    eprintln!(
        "{dtype:?}: ControlNet final latents {err:e} ({:.1}u, tol 100u)",
        err / u
    );
    assert!(
        err.is_finite() && err <= 100.0 * u,
        "{dtype:?} ControlNet latents {err:e}"
    );
}

#[test]
fn emu_controlnet_matches_cpu_bf16() {
    check_controlnet(StorageDtype::Bf16, 2f32.powi(-8));
}

#[test]
fn emu_controlnet_matches_cpu_f16() {
    check_controlnet(StorageDtype::F16, 2f32.powi(-11));
}
