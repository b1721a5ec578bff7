//! The demo model (models/sana-shapes) draws what its prompt asks for: for every colour × shape × position, the
//! picture's largest blob has that colour and position by tests/common/shape_detector.rs. This judges the images
//! themselves, where the golden tests judge their distance to diffusers'.
//!
//! Bars, from what this model measures (2026-12-03, the sharper decoder, models/sana-shapes/README.md): colour and
//! position 100% on both engines; shape 92% on the CPU engine and 100% on emu, issue 21's goal (≥ 90%) on the grid;
//! the misses are squares whose corners are round enough to read as circles (fill 0.86–0.90, the cut at 0.90) and
//! stars read as triangles. Shape bars sit below the measurements by a margin for engine-to-engine and
//! machine-to-machine rounding: a few of the grid's squares sit at the detector's fill cut.
//!
//! CPU engine (f32): the 100-prompt grid at seed 0, colour and position ≥ 95%, shape ≥ 89% (measured 92%; 87%
//! with the previous decoder).
//! Emulation engine (bf16, the GPU kernels built for the host): 10 prompts covering every colour, shape and
//! position, colour and position ≥ 90% (one miss allowed; measured 100% and 100%), shape ≥ 80% (two misses
//! allowed; measured 10 of 10, 9 of 10 with the previous decoder). The two took 32 s together here (release, two
//! shared cores).

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
    score.assert_at_least("cpu f32", 0.95, 0.89, 0.95);
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
    score.assert_at_least("emu bf16", 0.9, 0.8, 0.9);
}
