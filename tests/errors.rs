//! Bad input gets a clear error naming what is at fault, and `sana-run` exits non-zero.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{copy_dir, golden, scratch, tiny_model, Scratch};
use safetensors::tensor::{Dtype, View};
use sana::weights::SafetensorsFile;

/// Runs `sana-run eval transformer` and returns (success, stderr).
fn eval_transformer(model: &Path, inputs: &Path, out: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args(["eval", "transformer", "--model"])
        .arg(model)
        .arg("--inputs")
        .arg(inputs)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn golden_inputs() -> PathBuf {
    golden("transformer_square.safetensors")
}

#[track_caller]
fn expect_failure(model: &Path, inputs: &Path, needles: &[&str]) {
    let dir = scratch("out");
    let (ok, stderr) = eval_transformer(model, inputs, &dir.join("out.safetensors"));
    assert!(!ok, "expected a failure, stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks `{n}`: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
}

/// A raw tensor for writing files with arbitrary dtypes.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Rewrites a safetensors file through `edit`, which sees every tensor and may drop or change it.
fn rewrite(path: &Path, edit: impl Fn(&str, Raw) -> Option<(String, Raw)>) {
    let src = SafetensorsFile::open(path).unwrap();
    let mut names: Vec<String> = src.names().map(str::to_string).collect();
    names.sort();
    let tensors: Vec<(String, Raw)> = names
        .iter()
        .filter_map(|n| {
            let v = src.get(n).unwrap();
            let raw = Raw {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                bytes: v.bytes().to_vec(),
            };
            edit(n, raw)
        })
        .collect();
    drop(src);
    safetensors::serialize_to_file(tensors.iter().map(|(n, r)| (n.as_str(), r)), None, path)
        .unwrap();
}

/// A scratch copy of the tiny model.
fn model_copy(test: &str) -> Scratch {
    let dir = scratch(test);
    copy_dir(&tiny_model(), &dir);
    dir
}

fn transformer_weights(model: &Path) -> PathBuf {
    model.join("transformer/diffusion_pytorch_model.safetensors")
}

#[test]
fn error_missing_model_folder() {
    expect_failure(
        Path::new("/nonexistent/sana-model"),
        &golden_inputs(),
        &["/nonexistent/sana-model"],
    );
}

#[test]
fn error_missing_weights_file() {
    let model = model_copy("missing_file");
    std::fs::remove_file(transformer_weights(&model)).unwrap();
    expect_failure(
        &model,
        &golden_inputs(),
        &["diffusion_pytorch_model.safetensors", "no weights"],
    );
}

#[test]
fn error_truncated_safetensors() {
    let model = model_copy("truncated");
    let path = transformer_weights(&model);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 100).unwrap();
    expect_failure(
        &model,
        &golden_inputs(),
        &["diffusion_pytorch_model.safetensors", "truncated"],
    );
}

#[test]
fn error_missing_tensor_is_named() {
    let model = model_copy("missing_tensor");
    rewrite(&transformer_weights(&model), |n, r| {
        (n != "transformer_blocks.1.ff.conv_depth.bias").then(|| (n.to_string(), r))
    });
    expect_failure(
        &model,
        &golden_inputs(),
        &["transformer_blocks.1.ff.conv_depth.bias", "not found"],
    );
}

#[test]
fn error_wrong_shape_names_both_shapes() {
    let model = model_copy("wrong_shape");
    rewrite(&transformer_weights(&model), |n, mut r| {
        if n == "caption_norm.weight" {
            let d = r.shape[0];
            r.shape = vec![d / 2, 2];
        }
        Some((n.to_string(), r))
    });
    let d =
        sana::model::config::TransformerConfig::load(&tiny_model().join("transformer/config.json"))
            .unwrap()
            .dim();
    expect_failure(
        &model,
        &golden_inputs(),
        &[
            "caption_norm.weight",
            &format!("[{}, 2]", d / 2),
            &format!("[{d}]"),
        ],
    );
}

#[test]
fn error_unsupported_dtype() {
    let model = model_copy("dtype");
    rewrite(&transformer_weights(&model), |n, mut r| {
        if n == "proj_out.bias" {
            // same byte count, an integer dtype a checkpoint never uses for weights
            r.dtype = Dtype::I32;
        }
        Some((n.to_string(), r))
    });
    expect_failure(&model, &golden_inputs(), &["proj_out.bias", "I32"]);
}

#[test]
fn error_config_unknown_field_value() {
    let model = model_copy("config");
    let path = model.join("transformer/config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["qk_norm"] = serde_json::Value::String("layer_norm_per_head".into());
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    expect_failure(
        &model,
        &golden_inputs(),
        &["qk_norm", "layer_norm_per_head", "config.json"],
    );
}

#[test]
fn error_inputs_missing_tensor() {
    let dir = scratch("inputs_missing");
    let inputs = dir.join("in.safetensors");
    std::fs::copy(golden_inputs(), &inputs).unwrap();
    rewrite(&inputs, |n, r| {
        (n != "timestep").then(|| (n.to_string(), r))
    });
    expect_failure(&tiny_model(), &inputs, &["timestep", "in.safetensors"]);
}

#[test]
fn error_inputs_wrong_shape() {
    let dir = scratch("inputs_shape");
    let inputs = dir.join("in.safetensors");
    std::fs::copy(golden_inputs(), &inputs).unwrap();
    rewrite(&inputs, |n, mut r| {
        if n == "hidden_states" {
            // [B, C, H, W] → [B·C, H, W]: rank 3
            r.shape = vec![r.shape[0] * r.shape[1], r.shape[2], r.shape[3]];
        }
        Some((n.to_string(), r))
    });
    expect_failure(&tiny_model(), &inputs, &["hidden_states"]);
}

#[test]
fn eval_transformer_writes_the_golden_output() {
    let dir = scratch("eval_ok");
    let out = dir.join("out.safetensors");
    let (ok, stderr) = eval_transformer(&tiny_model(), &golden_inputs(), &out);
    assert!(ok, "{stderr}");
    let got = SafetensorsFile::open(&out)
        .unwrap()
        .get("output")
        .unwrap()
        .to_host()
        .unwrap();
    let want = SafetensorsFile::open(golden_inputs())
        .unwrap()
        .get("output")
        .unwrap()
        .to_host()
        .unwrap();
    common::assert_close("eval transformer output", &got, &want, 1e-4);
}
