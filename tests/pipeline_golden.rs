//! The whole pipeline on the CPU engine against diffusers' `SanaPipeline` (tools/make_fixtures.py): explicit initial
//! latents, binning off; 4 steps with CFG and CHI, 20 steps non-square with CFG and no CHI, 2 steps without CFG.
//!
//! Final latents within 1e-4 relative (max abs error over max magnitude): the f32 per-op differences of the text
//! encoder and DiT goldens (≤ 1e-5) pass through up to 20 solver steps, which damp rather than amplify them. The
//! decoded image in [0, 1] within 1e-4 too; 8-bit pixels equal to diffusers' up to ±1 on at most 0.5% of them
//! (a value within 1e-6 of a rounding boundary may round either way).

mod common;
mod tiny_runs;

use common::{assert_close, assert_pixels_match, golden, relative_error};
use sana::engine::cpu::CpuEngine;
use sana::image::to_rgb8;
use sana::model::vae_tiling::VaeTile;
use sana::weights::SafetensorsFile;
use sana::HostTensor;

const TOL: f32 = 1e-4;

fn check_case(name: &str) {
    let g = SafetensorsFile::open(golden(&format!("pipeline_{name}.safetensors"))).unwrap();
    let get = |n: &str| g.get(n).unwrap().to_host().unwrap();
    let pipe = tiny_runs::tiny_pipeline(CpuEngine);
    let req = tiny_runs::golden_request(name);
    let latents = tiny_runs::denoise_counting_steps(&pipe, &req);
    let final_latents = get("final_latents");
    eprintln!(
        "{name}: final latents relative error {:e}",
        relative_error(latents.data(), final_latents.data())
    );
    assert_close(
        &format!("{name}: final latents"),
        &latents,
        &final_latents,
        TOL,
    );

    let decoded = pipe.decode(&latents, VaeTile::Off).unwrap();
    let [b, c, h, w] = [0, 1, 2, 3].map(|i| decoded.shape()[i]);
    let mut nhwc = vec![0.0f32; decoded.len()];
    for (i, v) in decoded.data().iter().enumerate() {
        let (bi, ci, p) = (i / (c * h * w), (i / (h * w)) % c, i % (h * w));
        nhwc[(bi * h * w + p) * c + ci] = (v * 0.5 + 0.5).clamp(0.0, 1.0);
    }
    let nhwc = HostTensor::new(vec![b, h, w, c], nhwc).unwrap();
    assert_close(&format!("{name}: image"), &nhwc, &get("image"), TOL);

    let pixels = to_rgb8(&decoded).unwrap();
    let want = g.get("image_u8").unwrap().bytes().to_vec();
    let got: Vec<u8> = pixels.iter().flat_map(|p| p.pixels().to_vec()).collect();
    assert_pixels_match(name, &got, &want);
}

#[test]
fn pipeline_square_4steps_cfg_chi_matches_diffusers() {
    check_case("square_4steps_cfg_chi");
}

#[test]
fn pipeline_nonsquare_20steps_cfg_nochi_matches_diffusers() {
    check_case("nonsquare_20steps_cfg_nochi");
}

#[test]
fn pipeline_square_2steps_nocfg_chi_matches_diffusers() {
    check_case("square_2steps_nocfg_chi");
}
