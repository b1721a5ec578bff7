//! The demo model (models/sana-shapes) draws what its prompt asks for: for every colour × shape × position, the
//! picture's largest blob has that colour and position by tests/common/shape_detector.rs. This judges the images
//! themselves, where the golden tests judge their distance to diffusers'.
//!
//! Bars, from what this model measures (2026-12-02, 8000 transformer steps, models/sana-shapes/README.md): colour and
//! position 100% on both engines; shape 87% on the CPU engine and 90% on emu — above chance (25%), below issue 21's
//! goal (≥ 90%) on the grid: some squares read as circles and some stars as triangles. Shape bars sit below the
//! measurements by a margin for engine-to-engine rounding: a few of the grid's squares and stars sit near the
//! detector's fill cuts.
//!
//! CPU engine (f32): the 100-prompt grid at seed 0, colour and position ≥ 95%, shape ≥ 80% (measured 87%).
//! Emulation engine (bf16, the GPU kernels built for the host): 10 prompts covering every colour, shape and
//! position, colour and position ≥ 90% (one miss allowed; measured 100% and 100%), shape ≥ 60% (measured 9 of 10;
//! 8 of 10 after the first 4000 steps). The two took 50 s together here (release, two shared cores).

#[path = "common/shape_detector.rs"]
mod shape_detector;
#[path = "common/shape_grid.rs"]
mod shape_grid;

use sana::engine::cpu::CpuEngine;
use sana::engine::emu::EmuEngine;
use sana::engine::StorageDtype;
use sana::pipeline::Pipeline;

use shape_grid::{demo_model, draw, grid, Score};

#[test]
fn demo_model_draws_the_prompt_on_cpu() {
    let pipe = Pipeline::load(CpuEngine, &demo_model(), Default::default()).unwrap();
    let cases = grid();
    let mut score = Score::default();
    score.add(&cases, &draw(&pipe, &cases, 0));
    score.assert_at_least("cpu f32", 0.95, 0.8, 0.95);
}

#[test]
fn demo_model_draws_the_prompt_on_emu_bf16() {
    let pipe = Pipeline::load(
        EmuEngine::new(StorageDtype::Bf16),
        &demo_model(),
        Default::default(),
    )
    .unwrap();
    let cases: Vec<_> = grid().into_iter().step_by(11).collect();
    let mut score = Score::default();
    score.add(&cases, &draw(&pipe, &cases, 0));
    score.assert_at_least("emu bf16", 0.9, 0.6, 0.9);
}
