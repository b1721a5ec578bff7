//! LoRA adapters on the CPU engine against diffusers' `load_lora_weights` + `set_adapters` (tools/make_fixtures.py,
//! tests/fixtures/README.md): the golden 4-step CFG request with `lora_a` alone and with `lora_a` 0.8 + `lora_b`
//! −1.5, merged and unmerged, and adapters added, re-weighted and removed on a loaded pipeline.
//!
//! Final latents within 1e-4 relative, as the base pipeline goldens (tests/pipeline_golden.rs): merging only
//! reorders f32 sums (diffusers adds B·(A·x) after the base layer; merged, B·A is added to W first), a few ulp per
//! layer, damped by the solver as the base differences are.

mod common;
mod tiny_runs;

use common::{assert_close, golden, relative_error};
use sana::engine::cpu::CpuEngine;
use sana::engine::Engine;
use sana::lora::{Adapter, LoraMode};
use sana::pipeline::Pipeline;
use sana::weights::SafetensorsFile;
use sana::HostTensor;

const TOL: f32 = 1e-4;

fn adapter(name: &str, weight: f32) -> Adapter {
    Adapter::open(
        common::fixtures().join(format!("lora/{name}.safetensors")),
        weight,
    )
    .unwrap()
}

/// The adapters of golden `pipeline_<name>`.
fn golden_adapters(name: &str) -> Vec<Adapter> {
    match name {
        "lora_a" => vec![adapter("lora_a", 1.0)],
        "lora_ab" => vec![adapter("lora_a", 0.8), adapter("lora_b", -1.5)],
        other => panic!("no adapters for {other}"),
    }
}

/// Runs golden `pipeline_<name>`'s request on `pipe` and compares its final latents.
fn check<E: Engine>(pipe: &Pipeline<E>, name: &str, what: &str, tol: f32) {
    let g = SafetensorsFile::open(golden(&format!("pipeline_{name}.safetensors"))).unwrap();
    let want: HostTensor = g.get("final_latents").unwrap().to_host().unwrap();
    let latents = tiny_runs::denoise_counting_steps(pipe, &tiny_runs::golden_request(name));
    eprintln!(
        "{what}: final latents relative error {:e}",
        relative_error(latents.data(), want.data())
    );
    assert_close(&format!("{what}: final latents"), &latents, &want, tol);
}

#[test]
fn lora_one_adapter_merged_matches_diffusers() {
    let pipe = tiny_runs::tiny_pipeline(CpuEngine);
    pipe.set_adapters(&golden_adapters("lora_a"), LoraMode::Merged)
        .unwrap();
    check(&pipe, "lora_a", "lora_a merged", TOL);
}

#[test]
fn lora_two_adapters_merged_matches_diffusers() {
    let pipe = tiny_runs::tiny_pipeline(CpuEngine);
    pipe.set_adapters(&golden_adapters("lora_ab"), LoraMode::Merged)
        .unwrap();
    check(&pipe, "lora_ab", "lora_a 0.8 + lora_b -1.5 merged", TOL);
}

#[test]
fn lora_two_adapters_unmerged_matches_diffusers() {
    let pipe = tiny_runs::tiny_pipeline(CpuEngine);
    pipe.set_adapters(&golden_adapters("lora_ab"), LoraMode::Unmerged)
        .unwrap();
    check(&pipe, "lora_ab", "lora_a 0.8 + lora_b -1.5 unmerged", TOL);
}

/// On a loaded transformer `Auto` keeps adapters unmerged: added, re-weighted and removed in place, each state
/// matching its golden.
#[test]
fn lora_adapters_switch_on_a_loaded_pipeline() {
    let pipe = tiny_runs::tiny_pipeline(CpuEngine);
    check(&pipe, "square_4steps_cfg_chi", "no adapter", TOL);
    pipe.set_adapters(&golden_adapters("lora_ab"), LoraMode::Auto)
        .unwrap();
    check(&pipe, "lora_ab", "added: lora_a 0.8 + lora_b -1.5", TOL);
    let reweighted: Vec<_> = golden_adapters("lora_ab")
        .iter()
        .zip([1.0, 0.0])
        .map(|(a, w)| a.reweighted(w))
        .collect();
    pipe.set_adapters(&reweighted, LoraMode::Auto).unwrap();
    check(&pipe, "lora_a", "re-weighted: lora_a 1.0 + lora_b 0", TOL);
    pipe.set_adapters(&[], LoraMode::Auto).unwrap();
    check(&pipe, "square_4steps_cfg_chi", "removed", TOL);
}
