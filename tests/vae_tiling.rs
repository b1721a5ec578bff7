//! Tiled DC-AE decoding against diffusers' `AutoencoderDC.tiled_decode` (tools/make_fixtures.py): 32-px tiles at a
//! 24-px stride over a 10×13 latent of the tiny VAE (factor 4), so there are full tiles, a short last row, a
//! one-latent-pixel last column, and blends against already-blended neighbours.
//!
//! Tolerance 1e-4 as the untiled decoder golden: the blends are two f32 products and a sum, as PyTorch computes
//! them; what differs is the decoder's own summation order. The tiled image is not the untiled one (each tile sees
//! only its own context): the golden's difference between the two is reported, not asserted small.

mod common;

use common::{assert_close, golden, relative_error, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::model::dc_ae::DcAeDecoder;
use sana::model::vae_tiling::{decode_tiled, resolve, untiled_bytes, VaeTile, VaeTiling};
use sana::weights::SafetensorsFile;

fn decoder() -> DcAeDecoder<CpuEngine> {
    DcAeDecoder::from_dir(&CpuEngine, &tiny_model().join("vae")).unwrap()
}

#[test]
fn tiled_decode_matches_diffusers() {
    let g = SafetensorsFile::open(golden("vae_decode_tiled.safetensors")).unwrap();
    let get = |n: &str| g.get(n).unwrap().to_host().unwrap();
    let tiling = VaeTiling {
        tile: 32,
        stride: 24,
    };
    let got = decode_tiled(
        &CpuEngine,
        &decoder(),
        &get("latent"),
        tiling,
        &mut |_, _| Ok(()),
    )
    .unwrap();
    let (tiled, untiled) = (get("tiled"), get("untiled"));
    eprintln!(
        "tiled vs diffusers tiled {:e}; diffusers tiled vs untiled {:e}",
        relative_error(got.data(), tiled.data()),
        relative_error(tiled.data(), untiled.data())
    );
    assert_close("tiled decode", &got, &tiled, 1e-4);
}

#[test]
fn a_latent_within_one_tile_decodes_untiled() {
    let g = SafetensorsFile::open(golden("vae_decode_square.safetensors")).unwrap();
    let latent = g.get("latent").unwrap().to_host().unwrap();
    let got = decode_tiled(
        &CpuEngine,
        &decoder(),
        &latent,
        VaeTiling::with_tile(32),
        &mut |_, _| Ok(()),
    )
    .unwrap();
    assert_close(
        "one tile",
        &got,
        &g.get("sample").unwrap().to_host().unwrap(),
        1e-4,
    );
}

#[test]
fn auto_tiles_only_above_the_budget() {
    let vae = decoder();
    // Widest stage of the tiny VAE: 16 channels at full resolution (4× the latent): 16·(4h·4w) f32 maps, 5 live.
    assert_eq!(untiled_bytes(&vae.config, 10, 13), 16 * 40 * 52 * 5 * 4);
    let budget = untiled_bytes(&vae.config, 10, 13);
    let auto = VaeTile::Auto {
        budget_bytes: budget,
    };
    assert_eq!(resolve(&vae.config, auto, 10, 13), None);
    assert_eq!(
        resolve(&vae.config, auto, 10, 14),
        Some(VaeTiling::DIFFUSERS)
    );
    assert_eq!(resolve(&vae.config, VaeTile::Off, 1000, 1000), None);
}

#[test]
fn tiles_off_the_latent_grid_are_refused() {
    let g = SafetensorsFile::open(golden("vae_decode_tiled.safetensors")).unwrap();
    let latent = g.get("latent").unwrap().to_host().unwrap();
    for tiling in [
        VaeTiling {
            tile: 30,
            stride: 24,
        },
        VaeTiling {
            tile: 32,
            stride: 40,
        },
        VaeTiling {
            tile: 32,
            stride: 0,
        },
    ] {
        let err = decode_tiled(&CpuEngine, &decoder(), &latent, tiling, &mut |_, _| Ok(()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("VAE tiles"), "{err}");
    }
}
