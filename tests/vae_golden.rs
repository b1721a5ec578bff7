//! The CPU engine's DC-AE against diffusers (tools/make_fixtures.py): the tiny three-stage AutoencoderDC's decoder on
//! a square, a non-square and a 2×2 latent (the last takes diffusers' quadratic-attention path at the deepest
//! stage), every stage output and the raw decoded sample; its encoder on a non-square image, every stage and the
//! latent.
//!
//! Tolerance 1e-4 (max abs error over max magnitude), as for the DiT: both sides compute in f32; what remains is
//! summation order in convolutions, GEMMs and attention, a few 1e-7 per op growing through the stages to ~1e-6.
//! A wrong constant, channel order or shortcut moves the results by 1e-2 or more.

mod common;

use std::collections::HashMap;

use common::{assert_close, golden, relative_error, tiny_model};
use sana::cpu;
use sana::engine::cpu::CpuEngine;
use sana::engine::Engine;
use sana::model::dc_ae::{DcAeDecoder, DcAeEncoder};
use sana::weights::SafetensorsFile;
use sana::HostTensor;

const TOL: f32 = 1e-4;

/// Every golden intermediate under `prefix` against the traced one (tokens), and no traced stage without a golden.
fn check_stages(file: &str, g: &SafetensorsFile, seen: &HashMap<String, HostTensor>, prefix: &str) {
    let mut compared = 0;
    for name in g.names().filter(|n| n.starts_with(prefix)) {
        let actual = seen
            .get(name)
            .unwrap_or_else(|| panic!("{file}: {name} was not traced"));
        let expected = g.get(name).unwrap().to_host().unwrap();
        // Hooks see NCHW module outputs, except norm_out, which diffusers applies channels-last.
        let expected = if name == "decoder.norm_out" {
            let s = expected.shape().to_vec();
            expected.reshape(vec![s[0], s[1] * s[2], s[3]]).unwrap()
        } else {
            cpu::layout::nchw_to_tokens(&expected).unwrap()
        };
        assert_close(&format!("{file}: {name}"), actual, &expected, TOL);
        compared += 1;
    }
    assert_eq!(
        compared,
        seen.len(),
        "{file}: every traced stage has a golden"
    );
}

fn check_case(file: &str) {
    let e = CpuEngine;
    let vae = DcAeDecoder::from_dir(&e, &tiny_model().join("vae")).unwrap();
    let g = SafetensorsFile::open(golden(file)).unwrap();
    let get = |name: &str| g.get(name).unwrap().to_host().unwrap();
    let mut seen: HashMap<String, HostTensor> = HashMap::new();
    let sample = vae
        .decode_traced(&e, &get("latent"), &mut |name, t| {
            seen.insert(name.to_string(), e.download(t)?);
            Ok(())
        })
        .unwrap();
    let want = get("sample");
    eprintln!(
        "{file}: sample relative error {:e}",
        relative_error(sample.data(), want.data())
    );
    assert_close(&format!("{file}: sample"), &sample, &want, TOL);
    check_stages(file, &g, &seen, "decoder.");
}

#[test]
fn vae_decode_square_matches_diffusers() {
    check_case("vae_decode_square.safetensors");
}

#[test]
fn vae_decode_nonsquare_matches_diffusers() {
    check_case("vae_decode_nonsquare.safetensors");
}

#[test]
fn vae_decode_quadratic_path_matches_diffusers() {
    check_case("vae_decode_quadratic.safetensors");
}

#[test]
fn vae_encode_nonsquare_matches_diffusers() {
    let file = "vae_encode_nonsquare.safetensors";
    let e = CpuEngine;
    let vae = DcAeEncoder::from_dir(&e, &tiny_model().join("vae")).unwrap();
    let g = SafetensorsFile::open(golden(file)).unwrap();
    let get = |name: &str| g.get(name).unwrap().to_host().unwrap();
    let mut seen: HashMap<String, HostTensor> = HashMap::new();
    let latent = vae
        .encode_traced(&e, &get("image"), &mut |name, t| {
            seen.insert(name.to_string(), e.download(t)?);
            Ok(())
        })
        .unwrap();
    let want = get("latent");
    eprintln!(
        "{file}: latent relative error {:e}",
        relative_error(latent.data(), want.data())
    );
    assert_close(&format!("{file}: latent"), &latent, &want, TOL);
    check_stages(file, &g, &seen, "encoder.");
}

#[test]
fn vae_encode_rejects_sizes_off_the_latent_grid() {
    let e = CpuEngine;
    let vae = DcAeEncoder::from_dir(&e, &tiny_model().join("vae")).unwrap();
    let err = vae
        .encode(&e, &HostTensor::zeros(vec![1, 3, 16, 18]))
        .err()
        .unwrap();
    assert!(err.to_string().contains("multiples of 4"), "{err}");
}
