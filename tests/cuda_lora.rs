//! LoRA adapters on the CUDA engine against the CPU engine: `lora_a` 1.6 + `lora_b` −3 on the golden 2-step request,
//! merged and unmerged, in bf16 and f16, within the 40u of the whole 2-step pipeline (tests/cuda_engine.rs,
//! tests/emu_lora.rs explain it; the adapters move the latents by 94.6u in bf16 units, so dropping them fails).
//! Without a usable GPU the test prints why and passes — or fails, when `SANA_REQUIRE_GPU=1` (CI's software device).

mod common;
mod tiny_runs;

use common::{fixtures, relative_error, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::engine::{Engine, StorageDtype};
use sana::lora::{Adapter, LoraMode};
use sana::pipeline::Pipeline;
use sana::HostTensor;

fn adapters() -> Vec<Adapter> {
    [("lora_a", 1.6), ("lora_b", -3.0)]
        .map(|(n, w)| Adapter::open(fixtures().join(format!("lora/{n}.safetensors")), w).unwrap())
        .to_vec()
}

fn final_latents<E: Engine>(pipe: Pipeline<E>, mode: LoraMode) -> HostTensor {
    pipe.set_adapters(&adapters(), mode).unwrap();
    tiny_runs::pipeline_2step(&pipe).0
}

#[test]
fn cuda_lora_matches_cpu_merged_and_unmerged() {
    let want = final_latents(tiny_runs::tiny_pipeline(CpuEngine), LoraMode::Merged);
    for (dtype, u) in [
        (StorageDtype::Bf16, 2f32.powi(-8)),
        (StorageDtype::F16, 2f32.powi(-11)),
    ] {
        for mode in [LoraMode::Merged, LoraMode::Unmerged] {
            let Some(engine) = common::cuda_or_skip("cuda_lora", dtype) else {
                return;
            };
            let pipe = Pipeline::load(engine, &tiny_model(), Default::default()).unwrap();
            let got = final_latents(pipe, mode);
            let err = relative_error(got.data(), want.data());
            eprintln!(
                "cuda {dtype:?} {mode:?}: final latents relative error {err:e} ({:.1}u)",
                err / u
            );
            assert!(err <= 40.0 * u, "cuda {dtype:?} {mode:?}: {err:e} > 40u");
        }
    }
}

/// Adapters swapped in place on a loaded transformer change the layers its kept step graph reads, so the pipeline
/// drops that graph: the next run captures afresh and equals, bit for bit, a pipeline given the adapters before its
/// first run.
#[test]
fn swapping_adapters_in_place_drops_the_kept_step_graph() {
    let engine = || {
        common::cuda_or_skip(
            "swapping_adapters_in_place_drops_the_kept_step_graph",
            StorageDtype::Bf16,
        )
    };
    let (Some(first), Some(second)) = (engine(), engine()) else {
        return;
    };
    let pipe = Pipeline::load(first, &tiny_model(), Default::default()).unwrap();
    let base = tiny_runs::pipeline_2step(&pipe).0;
    pipe.set_adapters(&adapters(), LoraMode::Unmerged).unwrap();
    let swapped = tiny_runs::pipeline_2step(&pipe).0;
    let report = pipe.engine().step_graph_report().unwrap();
    assert!(!report.reused, "the graph kept before the swap was dropped");
    let want = final_latents(
        Pipeline::load(second, &tiny_model(), Default::default()).unwrap(),
        LoraMode::Unmerged,
    );
    assert_ne!(swapped.data(), base.data(), "the adapters change the run");
    assert_eq!(
        swapped.data(),
        want.data(),
        "swapped in place vs loaded with them"
    );
}
