//! `encode_prompt` against diffusers' `SanaPipeline.encode_prompt` (tools/make_fixtures.py, transformers 5.24 eager):
//! with the CHI prefix (the kept rows come from the end of a 568-token sequence) and without it (one prompt
//! truncated at 300 tokens), through the library and through `sana-run eval encode-prompt`.
//!
//! Tolerance 1e-4 as for the Gemma-2 golden (tests/gemma2_golden.rs); masks must be identical.

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_close, golden, scratch, tiny_model};
use safetensors::tensor::Dtype;
use sana::engine::cpu::CpuEngine;
use sana::text::{PromptEmbeddings, PromptOptions, TextEncoder};
use sana::weights::SafetensorsFile;
use sana::HostTensor;
use serde_json::Value;

const TOL: f32 = 1e-4;

struct Case {
    prompts: Vec<String>,
    negative: String,
    opts: PromptOptions,
}

fn case(name: &str) -> Case {
    let text = std::fs::read_to_string(golden(&format!("{name}.json"))).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut opts = PromptOptions {
        max_sequence_length: v["max_sequence_length"].as_u64().unwrap() as usize,
        ..Default::default()
    };
    if !v["complex_human_instruction"].as_bool().unwrap() {
        opts.complex_human_instruction.clear();
    }
    Case {
        prompts: v["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect(),
        negative: v["negative_prompt"].as_str().unwrap().to_string(),
        opts,
    }
}

const OUTPUTS: [&str; 4] = [
    "prompt_embeds",
    "prompt_attention_mask",
    "negative_prompt_embeds",
    "negative_prompt_attention_mask",
];

fn field<'a>(out: &'a PromptEmbeddings, name: &str) -> &'a HostTensor {
    match name {
        "prompt_embeds" => &out.prompt_embeds,
        "prompt_attention_mask" => &out.prompt_attention_mask,
        "negative_prompt_embeds" => &out.negative_prompt_embeds,
        _ => &out.negative_prompt_attention_mask,
    }
}

#[track_caller]
fn compare(what: &str, name: &str, actual: &HostTensor, g: &SafetensorsFile) {
    let view = g.get(name).unwrap();
    if name.ends_with("mask") {
        assert_eq!(view.dtype(), Dtype::I64, "diffusers' masks are int64");
        assert_eq!(actual.shape(), view.shape(), "{what}: {name}");
        assert_eq!(actual.data(), view.to_mask_f32().unwrap(), "{what}: {name}");
    } else {
        assert_close(
            &format!("{what}: {name}"),
            actual,
            &view.to_host().unwrap(),
            TOL,
        );
    }
}

fn check_library(name: &str) {
    let e = CpuEngine;
    let c = case(name);
    let encoder = TextEncoder::from_dir(&e, &tiny_model()).unwrap();
    let prompts: Vec<&str> = c.prompts.iter().map(String::as_str).collect();
    let out = encoder
        .encode_prompt(&e, &prompts, &[c.negative.as_str()], &c.opts)
        .unwrap();
    let g = SafetensorsFile::open(golden(&format!("{name}.safetensors"))).unwrap();
    for n in OUTPUTS {
        compare(name, n, field(&out, n), &g);
    }
    assert!(
        out.prompt_attention_mask.data().contains(&0.0),
        "{name}: the golden should exercise padded rows"
    );
}

#[test]
fn text_encode_prompt_matches_diffusers_with_chi() {
    check_library("encode_prompt_chi");
}

#[test]
fn text_encode_prompt_matches_diffusers_without_chi() {
    check_library("encode_prompt_no_chi");
}

fn check_cli(name: &str, model: &Path) {
    let c = case(name);
    let dir = scratch(&format!("cli-{name}"));
    let out = dir.join("out.safetensors");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sana-run"));
    cmd.args(["eval", "encode-prompt", "--model"])
        .arg(model)
        .arg("--output")
        .arg(&out)
        .args(["--negative-prompt", &c.negative])
        .args([
            "--max-sequence-length",
            &c.opts.max_sequence_length.to_string(),
        ]);
    for p in &c.prompts {
        cmd.args(["--prompt", p]);
    }
    if c.opts.chi_prompt().is_none() {
        cmd.arg("--no-chi");
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = SafetensorsFile::open(&out).unwrap();
    let g = SafetensorsFile::open(golden(&format!("{name}.safetensors"))).unwrap();
    for n in OUTPUTS {
        let view = got.get(n).unwrap();
        let actual = view.to_mask_host().unwrap();
        if n.ends_with("mask") {
            assert_eq!(view.dtype(), Dtype::I64, "{n} is written as I64");
        }
        compare(name, n, &actual, &g);
    }
}

#[test]
fn text_eval_encode_prompt_matches_diffusers() {
    check_cli("encode_prompt_chi", &tiny_model());
    check_cli("encode_prompt_no_chi", &tiny_model());
}

#[test]
fn text_eval_encode_prompt_reads_prompt_files() {
    let c = case("encode_prompt_chi");
    let dir = scratch("prompt-files");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sana-run"));
    let out = dir.join("out.safetensors");
    cmd.args(["eval", "encode-prompt", "--model"])
        .arg(tiny_model())
        .arg("--output")
        .arg(&out);
    for (i, p) in c.prompts.iter().enumerate() {
        let file = dir.join(format!("p{i}.txt"));
        std::fs::write(&file, format!("{p}\n")).unwrap();
        cmd.arg("--prompt-file").arg(file);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = SafetensorsFile::open(&out).unwrap();
    let g = SafetensorsFile::open(golden("encode_prompt_chi.safetensors")).unwrap();
    let actual = got.get("prompt_embeds").unwrap().to_host().unwrap();
    compare("prompt files", "prompt_embeds", &actual, &g);
}
