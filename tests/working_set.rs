//! The per-stage working-set plan (src/memory/working_set.rs) and the out-of-memory error, which need no GPU: the figures
//! for the tiny model counted by hand from its config, their scaling with batch and resolution, and the message.

mod common;

use common::tiny_model;
use sana::memory::working_set::{
    check_fits, decode_elements, denoise_step_elements, text_encode_elements,
};
use sana::model::config::{TransformerConfig, VaeConfig};
use sana::model::gemma2::GemmaConfig;
use sana::Error;

fn dit() -> TransformerConfig {
    TransformerConfig::load(&tiny_model().join("transformer/config.json")).unwrap()
}

#[test]
fn denoise_working_set_counted_by_hand() {
    // Tiny DiT: D = 2 heads × 32 = 64, F = int(2.5 · 64) = 160, patch 1, captions of 64 channels.
    // Per image token: residual + norm (2D = 128) + max(attention 4D = 256, Mix-FFN 3F = 480) = 608.
    // Per text token: caption 64 + projection, keys, values 3D = 192 → 256.
    let cfg = dit();
    assert_eq!((cfg.dim(), cfg.ffn_dim()), (64, 160));
    let one = denoise_step_elements(&cfg, 1, 8, 8, 300);
    assert_eq!(one, 64 * 608 + 300 * 256);
    assert_eq!(
        denoise_step_elements(&cfg, 2, 8, 8, 300),
        2 * one,
        "both CFG halves"
    );
    let image_part = |h, w| denoise_step_elements(&cfg, 1, h, w, 0);
    assert_eq!(
        image_part(16, 16),
        4 * image_part(8, 8),
        "linear in the token count"
    );
}

#[test]
fn text_working_set_counted_by_hand() {
    let g = GemmaConfig::load(&tiny_model().join("text_encoder/config.json")).unwrap();
    let q = g.num_attention_heads * g.head_dim;
    let kv = g.num_key_value_heads * g.head_dim;
    let per_token = 2 * g.hidden_size + (2 * q + 2 * kv).max(3 * g.intermediate_size);
    assert_eq!(text_encode_elements(&g, 2, 300), 2 * 300 * per_token);
}

#[test]
fn decode_working_set_follows_the_widest_stage_and_shrinks_with_tiles() {
    let vae = VaeConfig::load(&tiny_model().join("vae/config.json")).unwrap();
    let f = vae.spatial_factor();
    let mut scale = f;
    let mut widest = 0;
    for (i, s) in vae.stages.iter().enumerate() {
        widest = widest.max(s.channels * scale * scale);
        if vae.has_upsampler(i) {
            scale /= 2;
        }
    }
    assert_eq!(decode_elements(&vae, 8, 8), 5 * widest * 64);
    assert!(decode_elements(&vae, 4, 4) * 4 == decode_elements(&vae, 8, 8));
}

#[test]
fn out_of_memory_error_names_stage_bytes_and_remedies() {
    const MIB: usize = 1 << 20;
    assert!(check_fits("denoise", 100 * MIB, 100 * MIB, 1000 * MIB).is_ok());
    let err = check_fits("denoise", 300 * MIB + 1, 100 * MIB, 1000 * MIB).unwrap_err();
    let Error::OutOfDeviceMemory {
        stage,
        needed_mib,
        free_mib,
        total_mib,
        ..
    } = &err
    else {
        panic!("expected OutOfDeviceMemory, got {err}");
    };
    assert_eq!(
        (stage.as_str(), *needed_mib, *free_mib, *total_mib),
        ("denoise", 201, 100, 1000)
    );
    let msg = err.to_string();
    assert!(
        msg.contains("denoise") && msg.contains("201 MiB") && msg.contains("lower the batch"),
        "{msg}"
    );
    let decode = check_fits("decode", 2 * MIB, MIB, 4 * MIB)
        .unwrap_err()
        .to_string();
    assert!(decode.contains("tile the VAE decode"), "{decode}");
}
