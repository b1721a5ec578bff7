//! LoRA adapters on the emulation engine (the GPU kernels on the host) against the CPU engine: `lora_a` 1.6 +
//! `lora_b` −3 (twice the golden weights, so that the adapters move the latents by twice the tolerance) on the golden
//! 2-step request, merged and unmerged, in bf16.
//!
//! Tolerance 40u (u = 2⁻⁸), the budget of tests/emu_pipeline.rs for this request: the adapters change which weights
//! the GEMMs read (merged: W + ΔW rounded once to bf16, as any weight is) or add two GEMMs whose output is a tenth
//! of the base layer's (unmerged: the rank-r product rounded to bf16, then the sum), so each forward keeps the per-op
//! rounding behind the 20u per forward that tests/emu_engine.rs measures.

mod common;
mod tiny_runs;

use common::{fixtures, relative_error};
use sana::engine::cpu::CpuEngine;
use sana::engine::emu::EmuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::lora::{Adapter, LoraMode};
use sana::HostTensor;

fn adapters() -> Vec<Adapter> {
    [("lora_a", 1.6), ("lora_b", -3.0)]
        .map(|(n, w)| Adapter::open(fixtures().join(format!("lora/{n}.safetensors")), w).unwrap())
        .to_vec()
}

fn final_latents<E: Engine>(e: E, mode: LoraMode) -> HostTensor {
    let pipe = tiny_runs::tiny_pipeline(e);
    pipe.set_adapters(&adapters(), mode).unwrap();
    tiny_runs::pipeline_2step(&pipe).0
}

#[test]
fn emu_lora_bf16_matches_cpu_merged_and_unmerged() {
    let u = 2f32.powi(-8);
    let want = final_latents(CpuEngine, LoraMode::Merged);
    let base = tiny_runs::pipeline_2step(&tiny_runs::tiny_pipeline(CpuEngine)).0;
    let moved = relative_error(base.data(), want.data());
    eprintln!(
        "the adapters move the cpu latents by {moved:e} ({:.1}u)",
        moved / u
    );
    assert!(
        moved > 80.0 * u,
        "the adapters must move the latents well beyond the tolerance: {moved:e}"
    );
    for mode in [LoraMode::Merged, LoraMode::Unmerged] {
        let got = final_latents(EmuEngine::new(StorageDtype::Bf16), mode);
        let err = relative_error(got.data(), want.data());
        eprintln!(
            "emu bf16 {mode:?}: final latents relative error {err:e} ({:.1}u)",
            err / u
        );
        assert!(err <= 40.0 * u, "emu bf16 {mode:?}: {err:e} > 40u");
    }
}
