//! The tiny DC-AE on the emulation engine against the CPU engine, from the same inputs: the decoder on the
//! non-square latent and on the 2×2 one (the quadratic-attention path), the encoder on the non-square image. This
//! runs every DC-AE kernel — `conv3x3` at stride 1 and 2 (Cin = 3 at the encoder's input, Cout = 3 at the
//! decoder's output), `depthwise_conv`, `grouped_linear`, the channel groupings and shuffles — in model context.
//!
//! Tolerance (max|emu − cpu| / max|cpu|): per-op rounding is u = 2⁻⁸ (bf16) or 2⁻¹¹ (f16). Each direction is ~25
//! sequential rounded ops whose channel norms renormalise every stage, so the errors add like a random walk,
//! ~√25·u = 5u; 20u (as for one DiT forward, tests/emu_engine.rs) leaves 4× for growth through the convolutions:
//! 7.8e-2 (bf16), 9.8e-3 (f16). In f32 only summation order differs: 1e-4, as the goldens. Measured 2026-12-01
//! (decode non-square, decode 2×2, encode): 1.8u, 1.4u, 1.7u (bf16); 1.7u, 1.6u, 1.7u (f16); ≤ 5.1e-7 (f32).

mod common;

use common::{golden, relative_error, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::engine::emu::EmuEngine;
use sana::engine::Engine;
use sana::engine::StorageDtype;
use sana::model::dc_ae::{DcAeDecoder, DcAeEncoder};
use sana::weights::SafetensorsFile;
use sana::HostTensor;

fn input(file: &str, name: &str) -> HostTensor {
    SafetensorsFile::open(golden(file))
        .unwrap()
        .get(name)
        .unwrap()
        .to_host()
        .unwrap()
}

fn decode<E: Engine>(e: &E, z: &HostTensor) -> HostTensor {
    let vae = DcAeDecoder::from_dir(e, &tiny_model().join("vae")).unwrap();
    e.download(&vae.decode(e, &e.upload(z).unwrap()).unwrap())
        .unwrap()
}

fn encode<E: Engine>(e: &E, image: &HostTensor) -> HostTensor {
    let vae = DcAeEncoder::from_dir(e, &tiny_model().join("vae")).unwrap();
    e.download(&vae.encode(e, &e.upload(image).unwrap()).unwrap())
        .unwrap()
}

fn check(dtype: StorageDtype, u: f32) {
    let tol = if dtype == StorageDtype::F32 {
        1e-4
    } else {
        20.0 * u
    };
    let emu = EmuEngine::new(dtype);
    let mut cases = Vec::new();
    for file in [
        "vae_decode_nonsquare.safetensors",
        "vae_decode_quadratic.safetensors",
    ] {
        let z = input(file, "latent");
        cases.push((file, decode(&emu, &z), decode(&CpuEngine, &z)));
    }
    let file = "vae_encode_nonsquare.safetensors";
    let image = input(file, "image");
    cases.push((file, encode(&emu, &image), encode(&CpuEngine, &image)));
    for (file, got, want) in cases {
        assert_eq!(got.shape(), want.shape(), "{file}");
        let err = relative_error(got.data(), want.data());
        eprintln!("{dtype:?} {file}: {err:e} (tol {tol:e}, {:.1}u)", err / u);
        assert!(err.is_finite() && err <= tol, "{dtype:?} {file}: {err:e}");
    }
}

#[test]
fn emu_vae_matches_cpu_f32() {
    check(StorageDtype::F32, f32::EPSILON / 2.0);
}

#[test]
fn emu_vae_matches_cpu_bf16() {
    check(StorageDtype::Bf16, 2f32.powi(-8));
}

#[test]
fn emu_vae_matches_cpu_f16() {
    check(StorageDtype::F16, 2f32.powi(-11));
}
