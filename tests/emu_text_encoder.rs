//! The tiny Gemma-2 text encoder on the emulation engine (its embedding, rotary, causal attention, mul and norm
//! kernels compiled for the host, values stored in bf16/f16/f32; GEMMs through the CPU reference rounded once)
//! against the CPU engine: the proof that the Gemma-2 kernels compose into the model.
//!
//! Tolerances (max|emu − cpu| / max|cpu| over the last hidden state, every position, padded ones included): every op
//! rounds its output once to the storage dtype, a relative error of at most u = 2⁻⁸ (bf16) or 2⁻¹¹ (f16). A layer
//! is ~16 roundings in sequence (norm, three projections, two rotaries, attention, output projection, norm, add,
//! norm, two projections, GELU, mul, down projection, norm, add), and Gemma's four RMSNorms per layer rescale each
//! branch to the norm weight's size, so a rounding error made on a small activation comes back at full size; the
//! maximum is then taken over up to 38 400 elements. That rounding floor is measurable: the same model with these
//! four ops run as the CPU reference rounded once (the emu engine before these kernels) is off by 6.0e-2 (golden
//! prompts) and 1.01e-1 ≈ 26u (2 × 300 ids) in bf16, 7.9e-3 and 1.1e-2 ≈ 23u in f16 — to the printed digit what the
//! kernels give (their own f32 error is ≪ u; tests/{embed,causal_attention,elementwise}.rs bound it per element).
//! The tolerances are that floor with 1.5× margin: 0.15 (bf16), 2e-2 (f16). This test is the composition check;
//! a wrong window in the attention kernel (i − j ≤ w) moves the output by 0.76. In f32 only summation order differs
//! from the reference: 1e-4, as the goldens.

mod common;

use common::{golden, relative_error, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::engine::emu::EmuEngine;
use sana::engine::Engine;
use sana::engine::StorageDtype;
use sana::model::gemma2::{Gemma2Model, TokenBatch};
use sana::weights::SafetensorsFile;
use sana::HostTensor;

/// The golden prompt batch (short, padded), and a 2 × 300 batch of random ids, Sana's caption length: the sliding
/// window of 4 and the global layer over many key tiles, the second item right-padded after 123 tokens.
fn batches() -> Vec<(&'static str, TokenBatch)> {
    let g = SafetensorsFile::open(golden("text_encoder.safetensors")).unwrap();
    let ids = g.get("input_ids").unwrap();
    let (b, l) = (ids.shape()[0], ids.shape()[1]);
    let mask = g.get("attention_mask").unwrap().to_i64().unwrap();
    let golden = TokenBatch::new(ids.to_i64().unwrap(), mask, b, l).unwrap();

    let (b, l, valid) = (2, 300, [300, 123]);
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let ids: Vec<i64> = (0..b * l).map(|_| (next() % 664) as i64).collect();
    let mask: Vec<i64> = (0..b * l)
        .map(|i| i64::from(i % l < valid[i / l]))
        .collect();
    let long = TokenBatch::new(ids, mask, b, l).unwrap();
    vec![("golden prompts", golden), ("2 × 300 random ids", long)]
}

fn run<E: Engine>(e: &E, tokens: &TokenBatch) -> HostTensor {
    let model = Gemma2Model::from_dir(e, &tiny_model().join("text_encoder")).unwrap();
    let out = model.forward(e, tokens).unwrap();
    e.download(&out).unwrap()
}

fn check(dtype: StorageDtype, tol: f32) {
    for (what, tokens) in batches() {
        let want = run(&CpuEngine, &tokens);
        let got = run(&EmuEngine::new(dtype), &tokens);
        assert_eq!(got.shape(), want.shape());
        assert!(
            got.data().iter().all(|v| v.is_finite()),
            "{what}: non-finite"
        );
        let err = relative_error(got.data(), want.data());
        eprintln!("text encoder, {what}, {dtype:?}: relative error {err:e} (tolerance {tol:e})");
        assert!(
            err <= tol,
            "{what} {dtype:?}: relative error {err:e} > {tol:e}"
        );
    }
}

#[test]
fn emu_engine_text_encoder_matches_cpu_f32() {
    check(StorageDtype::F32, 1e-4);
}

#[test]
fn emu_engine_text_encoder_matches_cpu_bf16() {
    check(StorageDtype::Bf16, 0.15);
}

#[test]
fn emu_engine_text_encoder_matches_cpu_f16() {
    check(StorageDtype::F16, 2e-2);
}
