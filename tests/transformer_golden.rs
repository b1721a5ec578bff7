//! The CPU engine's Sana DiT against diffusers (tools/make_fixtures.py): every traced intermediate and the output,
//! square and non-square latents, a padded text mask, two timesteps.
//!
//! Tolerance 1e-4 (max abs error over max magnitude): both sides compute in f32; the remaining differences are
//! summation order in GEMMs and attention (ours partly in f64) and libm's exp/tanh/sin/cos vs PyTorch's, each
//! ~1e-7 relative and growing through two blocks to a few 1e-6. A wrong constant, order or mask moves results by
//! 1e-2 or more.

mod common;

use std::collections::HashMap;

use common::{assert_close, golden, tiny_model};
use sana::engine::cpu::CpuEngine;
use sana::engine::Engine;
use sana::model::sana_dit::SanaTransformer;
use sana::weights::SafetensorsFile;
use sana::HostTensor;

const TOL: f32 = 1e-4;

fn check_case(file: &str) {
    check_model_case(&tiny_model().join("transformer"), file);
}

fn check_model_case(model: &std::path::Path, file: &str) {
    let e = CpuEngine;
    let dit = SanaTransformer::from_dir(&e, model).unwrap();
    let g = SafetensorsFile::open(golden(file)).unwrap();
    let get = |name: &str| g.get(name).unwrap().to_host().unwrap();
    let mask = g
        .get("encoder_attention_mask")
        .unwrap()
        .to_mask_host()
        .unwrap();
    assert!(
        mask.data().contains(&0.0),
        "{file}: the golden must exercise a padded mask"
    );
    let text = dit
        .encode_text(&e, &get("encoder_hidden_states"), &mask)
        .unwrap();
    let guidance = g.view("guidance").map(|v| v.to_f32().unwrap());
    let mut seen: HashMap<String, HostTensor> = HashMap::new();
    let out = dit
        .forward_traced(
            &e,
            &get("hidden_states"),
            &text,
            get("timestep").data(),
            guidance.as_deref(),
            &mut |name, t| {
                seen.insert(name.to_string(), e.download(t)?);
                Ok(())
            },
        )
        .unwrap();
    let mut compared = 0;
    for name in g.names() {
        if let Some(actual) = seen.get(name) {
            assert_close(&format!("{file}: {name}"), actual, &get(name), TOL);
            compared += 1;
        }
    }
    let layers = dit.config.num_layers;
    assert!(
        compared >= 4 + 4 * layers,
        "{file}: only {compared} intermediates matched golden names"
    );
    assert_close(&format!("{file}: output"), &out, &get("output"), TOL);
}

#[test]
fn transformer_matches_diffusers_square() {
    check_case("transformer_square.safetensors");
}

#[test]
fn transformer_matches_diffusers_nonsquare() {
    check_case("transformer_nonsquare.safetensors");
}

fn variant(name: &str) -> std::path::PathBuf {
    common::fixtures()
        .join("variants")
        .join(name)
        .join("transformer")
}

#[test]
fn transformer_qk_norm_matches_diffusers() {
    // SANA-1.5: RMSNorm across heads on q/k of both attentions.
    check_model_case(&variant("qk-norm"), "transformer_qk_norm.safetensors");
}

#[test]
fn transformer_position_embedding_matches_diffusers() {
    // 2K/4K: sin-cos PE on a grid stretched to the training base (interpolation scale 2, non-square 3×5).
    check_model_case(&variant("pos-embed"), "transformer_pos_embed.safetensors");
}

#[test]
fn transformer_sprint_guidance_embedding_matches_diffusers() {
    // Sprint: timestep in [0, 1] plus a guidance embedding, q/k norm.
    check_model_case(&variant("sprint"), "transformer_sprint.safetensors");
}

#[test]
fn transformer_sprint_without_guidance_is_an_error() {
    let e = CpuEngine;
    let dit = SanaTransformer::from_dir(&e, &variant("sprint")).unwrap();
    let g = SafetensorsFile::open(golden("transformer_sprint.safetensors")).unwrap();
    let get = |name: &str| g.get(name).unwrap().to_host().unwrap();
    let mask = g
        .get("encoder_attention_mask")
        .unwrap()
        .to_mask_host()
        .unwrap();
    let text = dit
        .encode_text(&e, &get("encoder_hidden_states"), &mask)
        .unwrap();
    let err = dit
        .forward(
            &e,
            &get("hidden_states"),
            &text,
            get("timestep").data(),
            None,
        )
        .err()
        .unwrap();
    assert!(err.to_string().contains("guidance"), "{err}");
}

#[test]
fn transformer_padding_changes_the_output() {
    // The mask must matter: unmasking the padded row changes the conditional output.
    let e = CpuEngine;
    let dit = SanaTransformer::from_dir(&e, &tiny_model().join("transformer")).unwrap();
    let g = SafetensorsFile::open(golden("transformer_square.safetensors")).unwrap();
    let get = |name: &str| g.get(name).unwrap().to_host().unwrap();
    let text = get("encoder_hidden_states");
    let ones = HostTensor::new(
        vec![text.shape()[0], text.shape()[1]],
        vec![1.0; text.shape()[0] * text.shape()[1]],
    )
    .unwrap();
    let cond = dit.encode_text(&e, &text, &ones).unwrap();
    let out = dit
        .forward(
            &e,
            &get("hidden_states"),
            &cond,
            get("timestep").data(),
            None,
        )
        .unwrap();
    let err = common::relative_error(out.data(), get("output").data());
    assert!(
        err > 1e-3,
        "unmasked output equals the masked golden ({err:e})"
    );
}

#[test]
fn position_embedding_cached_per_size_gives_the_golden_again() {
    // The 2K/4K position embedding is computed once per (batch, h, w) and kept: a forward at another size in
    // between must not leave a stale table behind, and the golden size must come back bit for bit.
    let e = CpuEngine;
    let dit = SanaTransformer::from_dir(&e, &variant("pos-embed")).unwrap();
    let g = SafetensorsFile::open(golden("transformer_pos_embed.safetensors")).unwrap();
    let get = |name: &str| g.get(name).unwrap().to_host().unwrap();
    let mask = g
        .get("encoder_attention_mask")
        .unwrap()
        .to_mask_host()
        .unwrap();
    let text = dit
        .encode_text(&e, &get("encoder_hidden_states"), &mask)
        .unwrap();
    let (x, t) = (get("hidden_states"), get("timestep"));
    let run = |x: &HostTensor| {
        e.download(&dit.forward(&e, x, &text, t.data(), None).unwrap())
            .unwrap()
    };
    let first = run(&x);
    assert_close("pos-embed, first forward", &first, &get("output"), TOL);
    let &[b, c, h, w] = x.shape() else {
        panic!("hidden_states is 4-D")
    };
    let taller = HostTensor::new(vec![b, c, h + 2, w], {
        let mut d = x.data().to_vec();
        d.extend(x.data()[..b * c * 2 * w].iter().map(|v| -v));
        d
    })
    .unwrap();
    let other = run(&taller);
    assert_eq!(other.shape(), &[b, c, h + 2, w]);
    let again = run(&x);
    assert_eq!(
        again.data(),
        first.data(),
        "same size, same table, same output"
    );
}
