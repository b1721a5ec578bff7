//! LoRA files that do not fit the model fail naming the file and key, before anything changes; a Kohya copy of
//! `lora_a` (keys `lora_unet_…`, `.lora_down`/`.lora_up`, `.alpha` tensors) gives diffusers' `lora_a` golden.

mod common;
mod tiny_runs;

use std::collections::HashMap;
use std::path::Path;

use common::{assert_close, golden, scratch};
use sana::engine::cpu::CpuEngine;
use sana::lora::{Adapter, LoraMode};
use sana::weights::SafetensorsFile;
use sana::HostTensor;

/// `lora_a`'s tensors (f32, stored shapes) and its `lora_adapter_metadata`.
fn lora_a() -> (Vec<(String, HostTensor)>, String) {
    let f = SafetensorsFile::open(common::fixtures().join("lora/lora_a.safetensors")).unwrap();
    let mut tensors: Vec<_> = f
        .views()
        .map(|v| (v.name().to_string(), v.to_host().unwrap()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (tensors, f.metadata("lora_adapter_metadata").unwrap())
}

fn write(path: &Path, tensors: &[(String, HostTensor)], metadata: Option<&str>) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let b = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.clone(), t.shape().to_vec(), b)
        })
        .collect();
    let views: Vec<_> = bytes
        .iter()
        .map(|(n, shape, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .unwrap();
            (n.as_str(), v)
        })
        .collect();
    let meta =
        metadata.map(|m| HashMap::from([("lora_adapter_metadata".to_string(), m.to_string())]));
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

/// Writes `lora_a` with `edit` applied to its tensor list and opens it as an adapter on the tiny model.
fn expect_error(test: &str, edit: impl FnOnce(&mut Vec<(String, HostTensor)>), needles: &[&str]) {
    let dir = scratch(test);
    let path = dir.join("edited.safetensors");
    let (mut tensors, meta) = lora_a();
    edit(&mut tensors);
    write(&path, &tensors, Some(&meta));
    let pipe = tiny_runs::tiny_pipeline(CpuEngine);
    let err = Adapter::open(&path, 1.0)
        .and_then(|a| pipe.set_adapters(&[a], LoraMode::Merged))
        .err()
        .unwrap_or_else(|| panic!("{test}: should fail"))
        .to_string();
    eprintln!("{err}");
    for n in needles.iter().chain([&"edited.safetensors"]) {
        assert!(err.contains(n), "{test}: '{n}' not in: {err}");
    }
}

fn rename(tensors: &mut [(String, HostTensor)], from: &str, to: &str) {
    for (name, _) in tensors.iter_mut() {
        *name = name.replace(from, to);
    }
}

#[test]
fn lora_error_target_the_model_lacks() {
    expect_error(
        "lora-err-target",
        |t| {
            rename(
                t,
                "transformer_blocks.1.attn1.to_q",
                "transformer_blocks.7.attn1.to_q",
            )
        },
        &[
            "transformer.transformer_blocks.7.attn1.to_q.lora_A.weight",
            "does not have",
        ],
    );
}

#[test]
fn lora_error_target_not_a_linear_layer() {
    expect_error(
        "lora-err-conv3x3",
        |t| {
            rename(
                t,
                "transformer_blocks.0.ff.conv_point",
                "transformer_blocks.0.ff.conv_depth",
            )
        },
        &["ff.conv_depth.lora_A.weight", "not a linear layer"],
    );
}

#[test]
fn lora_error_factor_shape_does_not_fit() {
    expect_error(
        "lora-err-shape",
        |t| {
            let (_, b) = t
                .iter_mut()
                .find(|(n, _)| n == "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight")
                .unwrap();
            *b = HostTensor::new(vec![32, 4], b.data()[..128].to_vec()).unwrap();
        },
        &[
            "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight",
            "[32, 4]",
        ],
    );
}

#[test]
fn lora_error_ranks_disagree() {
    expect_error(
        "lora-err-rank",
        |t| {
            let (_, a) = t
                .iter_mut()
                .find(|(n, _)| n == "transformer.time_embed.linear.lora_A.weight")
                .unwrap();
            let cols = a.shape()[1];
            *a = HostTensor::new(vec![3, cols], a.data()[..3 * cols].to_vec()).unwrap();
        },
        &["transformer.time_embed.linear.lora_B.weight", "rank"],
    );
}

#[test]
fn lora_error_dora_is_refused() {
    expect_error(
        "lora-err-dora",
        |t| {
            let m = HostTensor::new(vec![64], vec![1.0; 64]).unwrap();
            t.push(("transformer.proj_out.lora_magnitude_vector".to_string(), m));
        },
        &["transformer.proj_out.lora_magnitude_vector", "DoRA"],
    );
}

#[test]
fn lora_error_half_a_pair() {
    expect_error(
        "lora-err-pair",
        |t| t.retain(|(n, _)| n != "transformer.caption_projection.linear_2.lora_B.weight"),
        &[
            "transformer.caption_projection.linear_2.lora_A.weight",
            "no matching up",
        ],
    );
}

/// The same adapter in Kohya's layout, α as a tensor per layer (6, 3 on `conv_point` from the alpha pattern).
#[test]
fn lora_kohya_keys_match_diffusers() {
    let dir = scratch("lora-kohya");
    let path = dir.join("kohya.safetensors");
    let (tensors, _) = lora_a();
    let mut kohya = Vec::new();
    for (name, t) in tensors {
        let module = name
            .strip_prefix("transformer.")
            .and_then(|n| n.rsplit_once(".lora_"))
            .unwrap()
            .0;
        let flat = format!("lora_unet_{}", module.replace('.', "_"));
        if name.ends_with(".lora_A.weight") {
            let alpha = if module.ends_with("ff.conv_point") {
                3.0
            } else {
                6.0
            };
            kohya.push((
                format!("{flat}.alpha"),
                HostTensor::new(vec![], vec![alpha]).unwrap(),
            ));
            kohya.push((format!("{flat}.lora_down.weight"), t));
        } else {
            kohya.push((format!("{flat}.lora_up.weight"), t));
        }
    }
    write(&path, &kohya, None);
    let pipe = tiny_runs::tiny_pipeline(CpuEngine);
    pipe.set_adapters(&[Adapter::open(&path, 1.0).unwrap()], LoraMode::Merged)
        .unwrap();
    let latents = tiny_runs::denoise_counting_steps(&pipe, &tiny_runs::golden_request("lora_a"));
    let g = SafetensorsFile::open(golden("pipeline_lora_a.safetensors")).unwrap();
    let want = g.get("final_latents").unwrap().to_host().unwrap();
    assert_close("kohya lora_a: final latents", &latents, &want, 1e-4);
}

/// A PEFT-layout file without `lora_adapter_metadata` (as older trainers write them) scales each layer by α/r with
/// α = r, diffusers' default: every term counts once, whatever its rank.
#[test]
fn lora_file_without_metadata_takes_alpha_equal_to_rank() {
    let dir = scratch("lora-no-metadata");
    let path = dir.join("bare.safetensors");
    let (tensors, _) = lora_a();
    write(&path, &tensors, None);
    let file = sana::lora::LoraFile::open(&path).unwrap();
    let mut layers = 0;
    for (_, layer) in file.layers() {
        assert_eq!(layer.scale, 1.0, "{}", layer.down_key);
        layers += 1;
    }
    assert_eq!(layers * 2, tensors.len(), "every pair read");
}
