//! The whole tiny Sana DiT on the emulation engine (the CUDA kernels compiled for the host, values stored in
//! bf16/f16/f32) against the CPU engine: the proof that the kernels compose into the model.
//!
//! Tolerances (max|emu − cpu| / max|cpu| over the output): every op rounds its output once to the storage dtype,
//! a relative error of at most u = 2⁻⁸ (bf16) or 2⁻¹¹ (f16). Two blocks are ~40 roundings in sequence on the
//! residual stream; independent errors grow like √40·u ≈ 6u on typical elements, and LayerNorm/attention can
//! amplify an input error by the ratio of the largest to the typical activation (≈ 3 here), so 20u bounds the
//! output: 7.8e-2 (bf16), 1e-2 (f16). In f32 only summation order differs from the reference: 1e-4, as the goldens.

mod common;
mod tiny_runs;

use common::{fixtures, relative_error, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::engine::emu::EmuEngine;
use sana::engine::Engine;
use sana::engine::StorageDtype;
use sana::HostTensor;

/// The model each golden belongs to: tiny-sana's transformer, or a variant's (tests/fixtures/variants).
fn model_of(file: &str) -> std::path::PathBuf {
    match file {
        "transformer_qk_norm.safetensors" => fixtures().join("variants/qk-norm/transformer"),
        "transformer_pos_embed.safetensors" => fixtures().join("variants/pos-embed/transformer"),
        "transformer_sprint.safetensors" => fixtures().join("variants/sprint/transformer"),
        _ => tiny_model().join("transformer"),
    }
}

fn run<E: Engine>(e: &E, file: &str) -> HostTensor {
    tiny_runs::dit(e, &model_of(file), file)
}

fn check(dtype: StorageDtype, tol: f32) {
    // The base model on square and non-square latents, then each variant family's switches (q/k norm of Sana
    // 1.5, the 2K/4K position embedding, Sprint's guidance embedding); the variants have one block, well inside
    // the two-block budget.
    for file in [
        "transformer_square.safetensors",
        "transformer_nonsquare.safetensors",
        "transformer_qk_norm.safetensors",
        "transformer_pos_embed.safetensors",
        "transformer_sprint.safetensors",
    ] {
        let want = run(&CpuEngine, file);
        let got = run(&EmuEngine::new(dtype), file);
        assert!(
            got.data().iter().all(|v| v.is_finite()),
            "{file}: non-finite"
        );
        let err = relative_error(got.data(), want.data());
        eprintln!("{file} {dtype:?}: relative error {err:e} (tolerance {tol:e})");
        assert!(
            err <= tol,
            "{file} {dtype:?}: relative error {err:e} > {tol:e}"
        );
    }
}

#[test]
fn emu_engine_dit_matches_cpu_f32() {
    check(StorageDtype::F32, 1e-4);
}

#[test]
fn emu_engine_dit_matches_cpu_bf16() {
    check(StorageDtype::Bf16, 7.8e-2);
}

#[test]
fn emu_engine_dit_matches_cpu_f16() {
    check(StorageDtype::F16, 1e-2);
}
