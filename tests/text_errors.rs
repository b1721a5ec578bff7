//! Bad text-side input gets an error naming what is at fault, from the library and from `sana-run` (non-zero exit,
//! message on stderr, no panic): a missing or broken tokenizer.json, a tokenizer without a pad token, token ids
//! outside the vocabulary, a prompt file that is not UTF-8, mismatched negative prompts.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{copy_dir, golden, scratch, tiny_model, Scratch};
use safetensors::tensor::{Dtype, View};
use sana::engine::cpu::CpuEngine;
use sana::model::gemma2::{Gemma2Model, TokenBatch};
use sana::text::{read_prompt_file, tokenize_prompts, GemmaTokenizer, PromptOptions};
use sana::weights::SafetensorsFile;
use sana::Error;

/// Runs `sana-run eval <args>` and returns (success, stderr).
fn sana_run(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .arg("eval")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn expect_failure((ok, stderr): (bool, String), needles: &[&str]) {
    assert!(!ok, "expected a failure, stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks `{n}`: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
}

fn encode_prompt_cli(model: &Path, extra: &[&std::ffi::OsStr], out: &Path) -> (bool, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "encode-prompt".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ];
    args.extend_from_slice(extra);
    sana_run(&args)
}

/// A copy of the tiny model, in `model/` of the returned scratch folder, whose `tokenizer/` folder `edit` may change.
fn model_copy(test: &str, edit: impl FnOnce(&Path)) -> (Scratch, PathBuf) {
    let dir = scratch(test);
    let model = dir.join("model");
    copy_dir(&tiny_model(), &model);
    edit(&model.join("tokenizer"));
    (dir, model)
}

#[test]
fn text_missing_tokenizer_json() {
    let (dir, model) = model_copy("no-tokenizer-json", |t| {
        std::fs::remove_file(t.join("tokenizer.json")).unwrap()
    });
    match GemmaTokenizer::from_dir(&model.join("tokenizer")) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("tokenizer/tokenizer.json")),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("loaded a tokenizer from a folder without tokenizer.json"),
    }
    let out = dir.join("out.safetensors");
    expect_failure(
        encode_prompt_cli(&model, &["--prompt".as_ref(), "a cat".as_ref()], &out),
        &["tokenizer.json", "not found"],
    );
}

#[test]
fn text_broken_tokenizer_json() {
    let (_dir, model) = model_copy("broken-tokenizer-json", |t| {
        std::fs::write(t.join("tokenizer.json"), "{\"model\": 3").unwrap()
    });
    let err = GemmaTokenizer::from_dir(&model.join("tokenizer"))
        .err()
        .expect("a broken tokenizer.json must not load");
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn text_tokenizer_without_pad_token() {
    let (dir, model) = model_copy("no-pad-token", |t| {
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = t.join(name);
            if let Ok(text) = std::fs::read_to_string(&path) {
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let fields = v.as_object_mut().unwrap();
                fields.remove("pad_token");
                // A Gemma tokenizer class would default to `<pad>`, as transformers' does.
                fields.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
                std::fs::write(&path, v.to_string()).unwrap();
            }
        }
        let path = t.join("tokenizer.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["padding"] = serde_json::Value::Null;
        std::fs::write(&path, v.to_string()).unwrap();
    });
    let err = GemmaTokenizer::from_dir(&model.join("tokenizer"))
        .err()
        .expect("a tokenizer without a pad token must be refused");
    assert!(err.to_string().contains("no pad token"), "{err}");
    let out = dir.join("out.safetensors");
    expect_failure(
        encode_prompt_cli(&model, &["--prompt".as_ref(), "a cat".as_ref()], &out),
        &["tokenizer.json", "no pad token"],
    );
}

#[test]
fn text_prompt_file_not_utf8() {
    let dir = scratch("prompt-not-utf8");
    let file = dir.join("prompt.txt");
    std::fs::write(&file, b"a cat \xff\xfe on a mat").unwrap();
    let err = read_prompt_file(&file).unwrap_err().to_string();
    assert!(
        err.contains("not valid UTF-8") && err.contains("byte 6"),
        "{err}"
    );
    assert!(err.contains("prompt.txt"), "{err}");
    expect_failure(
        encode_prompt_cli(
            &tiny_model(),
            &["--prompt-file".as_ref(), file.as_os_str()],
            &dir.join("out.safetensors"),
        ),
        &["prompt.txt", "not valid UTF-8"],
    );
    expect_failure(
        encode_prompt_cli(
            &tiny_model(),
            &[
                "--prompt-file".as_ref(),
                dir.join("missing.txt").as_os_str(),
            ],
            &dir.join("out.safetensors"),
        ),
        &["missing.txt"],
    );
}

#[test]
fn text_negative_prompts_must_match_the_batch() {
    let tok = GemmaTokenizer::from_dir(&tiny_model().join("tokenizer")).unwrap();
    let err = tokenize_prompts(
        &tok,
        &["a", "b", "c"],
        &["x", "y"],
        &PromptOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("2 negative prompts for 3 prompts"), "{err}");
    let dir = scratch("no-prompt");
    expect_failure(
        encode_prompt_cli(&tiny_model(), &[], &dir.join("out.safetensors")),
        &["at least one prompt"],
    );
}

/// An I64 tensor for writing input files.
struct I64s(Vec<usize>, Vec<i64>);

impl View for &I64s {
    fn dtype(&self) -> Dtype {
        Dtype::I64
    }
    fn shape(&self) -> &[usize] {
        &self.0
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.1.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.1.len() * 8
    }
}

#[test]
fn text_ids_outside_the_vocabulary() {
    let te = tiny_model().join("text_encoder");
    let model = Gemma2Model::from_dir(&CpuEngine, &te).unwrap();
    let vocab = model.config.vocab_size as i64;
    for bad in [vocab, -1] {
        let tokens = TokenBatch::new(vec![2, 5, bad], vec![1, 1, 1], 1, 3).unwrap();
        let err = model.forward(&CpuEngine, &tokens).unwrap_err().to_string();
        assert!(
            err.contains(&format!("input_ids[0, 2] = {bad}"))
                && err.contains("outside the vocabulary"),
            "{err}"
        );
    }
    let g = SafetensorsFile::open(golden("text_encoder.safetensors")).unwrap();
    let ids = g.get("input_ids").unwrap();
    let shape = ids.shape().to_vec();
    let mut values = ids.to_i64().unwrap();
    values[1] = vocab + 7;
    let mask = I64s(
        shape.clone(),
        g.get("attention_mask").unwrap().to_i64().unwrap(),
    );
    let ids = I64s(shape, values);
    let dir = scratch("ids-out-of-range");
    let inputs = dir.join("in.safetensors");
    safetensors::serialize_to_file(
        [("input_ids", &ids), ("attention_mask", &mask)],
        None,
        &inputs,
    )
    .unwrap();
    let out = dir.join("out.safetensors");
    expect_failure(
        sana_run(&[
            "text-encoder".as_ref(),
            "--model".as_ref(),
            tiny_model().as_os_str(),
            "--inputs".as_ref(),
            inputs.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
        ]),
        &[&format!("= {}", vocab + 7), "outside the vocabulary"],
    );
    assert!(!out.exists(), "no output may be written on failure");
}
