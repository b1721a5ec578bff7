//! The demo model (models/sana-shapes) draws what its prompt asks for: for every colour × shape × position, the
//! picture's largest blob has that colour and position by tests/common/shape_detector.rs. This judges the images
//! themselves, where the golden tests judge their distance to diffusers'.
//!
//! Bars, from what this model measures (2026-12-02, models/sana-shapes/README.md), below issue 21's goal for shape:
//! the model colours the shape right and places it (100% and 100% on the CPU engine), but its transformer draws
//! every shape as the same rounded blob — its VAE reconstructs the shape (74% of dataset drawings by the detector),
//! the transformer does not follow the shape word — so the detector's shape verdict is at chance (28%): the shape
//! accuracy is printed and not asserted (a bar at chance would catch nothing) until a model reaches the goal (≥ 90%).
//!
//! CPU engine (f32): the 100-prompt grid at seed 0, colour and position ≥ 95%. Emulation engine (bf16, the GPU
//! kernels built for the host): 10 prompts covering every colour, shape and position, colour and position ≥ 90% (one
//! miss allowed; measured 100% and 100%). The two took 39 s together here (release, two shared cores).

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
    score.assert_at_least("cpu f32", 0.95, 0.0, 0.95);
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
    score.assert_at_least("emu bf16", 0.9, 0.0, 0.9);
}
