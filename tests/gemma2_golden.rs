//! The CPU engine's Gemma-2 against transformers 5.24 eager (tools/make_fixtures.py): every hidden state
//! (`hidden_states.0` = scaled embeddings … `hidden_states.{n}` = normed output) at every position, padded ones
//! included; the sharded copy of the checkpoint; `sana-run eval text-encoder`.
//!
//! Tolerance 1e-4 (max abs error over max magnitude): both sides compute in f32; what remains is summation order in
//! GEMMs and attention (ours partly in f64) and libm's tanh/exp/sin/cos/pow against PyTorch's, ~1e-7 relative per
//! op, a few 1e-6 after the stack. A wrong constant, mask or norm moves results by 1e-2 or more.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{assert_close, fixtures, golden, relative_error, scratch, tiny_model};
use sana::engine::{cpu::CpuEngine, Engine};
use sana::model::gemma2::{Gemma2Model, TokenBatch};
use sana::weights::SafetensorsFile;
use sana::HostTensor;

const TOL: f32 = 1e-4;

fn golden_file() -> SafetensorsFile {
    SafetensorsFile::open(golden("text_encoder.safetensors")).unwrap()
}

fn golden_tokens(g: &SafetensorsFile) -> TokenBatch {
    let ids = g.get("input_ids").unwrap();
    let (b, l) = (ids.shape()[0], ids.shape()[1]);
    let mask = g.get("attention_mask").unwrap().to_i64().unwrap();
    TokenBatch::new(ids.to_i64().unwrap(), mask, b, l).unwrap()
}

fn load(dir: &Path) -> Gemma2Model<CpuEngine> {
    Gemma2Model::from_dir(&CpuEngine, dir).unwrap()
}

#[test]
fn gemma2_matches_transformers_at_every_layer() {
    let e = CpuEngine;
    let model = load(&tiny_model().join("text_encoder"));
    let g = golden_file();
    let tokens = golden_tokens(&g);
    assert!(
        tokens.mask.contains(&0),
        "the golden must exercise padded positions"
    );
    let mut seen: HashMap<String, HostTensor> = HashMap::new();
    let out = model
        .forward_traced(&e, &tokens, &mut |name, t| {
            seen.insert(name.to_string(), e.download(t)?);
            Ok(())
        })
        .unwrap();
    let layers = model.config.num_hidden_layers;
    for i in 0..=layers {
        let name = format!("hidden_states.{i}");
        let expected = g.get(&name).unwrap().to_host().unwrap();
        assert_close(&name, &seen[&name], &expected, TOL);
    }
    let expected = g.get("last_hidden_state").unwrap().to_host().unwrap();
    assert_close("last_hidden_state", &out, &expected, TOL);
}

#[test]
fn gemma2_padded_positions_match_too() {
    // The whole-tensor check above is dominated by the largest values; check the padded rows on their own.
    let e = CpuEngine;
    let model = load(&tiny_model().join("text_encoder"));
    let g = golden_file();
    let tokens = golden_tokens(&g);
    let out = model.forward(&e, &tokens).unwrap();
    let expected = g.get("last_hidden_state").unwrap().to_host().unwrap();
    let d = model.config.hidden_size;
    let pick = |t: &HostTensor| -> Vec<f32> {
        tokens
            .mask
            .iter()
            .enumerate()
            .filter(|(_, &m)| m == 0)
            .flat_map(|(r, _)| t.data()[r * d..(r + 1) * d].to_vec())
            .collect()
    };
    let (a, b) = (pick(&out), pick(&expected));
    assert!(a.iter().all(|v| v.is_finite()));
    let err = relative_error(&a, &b);
    assert!(err <= TOL, "padded rows: relative error {err:e}");
}

#[test]
fn gemma2_soft_cap_switch_changes_the_output() {
    let e = CpuEngine;
    let mut model = load(&tiny_model().join("text_encoder"));
    model.attn_softcap = false;
    let g = golden_file();
    let out = model.forward(&e, &golden_tokens(&g)).unwrap();
    let expected = g.get("last_hidden_state").unwrap().to_host().unwrap();
    let err = relative_error(out.data(), expected.data());
    assert!(
        err > 1e-3,
        "without the soft-cap the output still matches the eager golden ({err:e})"
    );
}

#[test]
fn gemma2_sharded_checkpoint_gives_identical_output() {
    let e = CpuEngine;
    let g = golden_file();
    let tokens = golden_tokens(&g);
    let single = load(&tiny_model().join("text_encoder"))
        .forward(&e, &tokens)
        .unwrap();
    let sharded = load(&fixtures().join("sharded-text-encoder"))
        .forward(&e, &tokens)
        .unwrap();
    assert_eq!(single, sharded);
}

#[test]
fn gemma2_eval_text_encoder_writes_last_hidden_state() {
    let dir = scratch("eval-text-encoder");
    let out = dir.join("out.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args(["eval", "text-encoder", "--model"])
        .arg(tiny_model())
        .arg("--inputs")
        .arg(golden("text_encoder.safetensors"))
        .arg("--output")
        .arg(&out)
        .args(["--engine", "cpu"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = SafetensorsFile::open(&out).unwrap();
    let actual = got.get("last_hidden_state").unwrap().to_host().unwrap();
    let expected = golden_file()
        .get("last_hidden_state")
        .unwrap()
        .to_host()
        .unwrap();
    assert_close("eval text-encoder", &actual, &expected, TOL);
}
