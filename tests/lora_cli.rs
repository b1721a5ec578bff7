//! `sana-run --lora FILE[:WEIGHT]` as users call it: two adapters at once reproduce diffusers' `set_adapters` golden
//! (tests/lora_golden.rs explains the 1e-4), in both modes; a wrong file fails naming the key and writes nothing.

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_close, fixtures, golden, scratch, tiny_model};
use sana::weights::SafetensorsFile;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs sana-run on the golden `pipeline_lora_ab` request with `extra` flags; returns (success, output).
fn run(dir: &Path, extra: &[&str]) -> (bool, String) {
    let latents = golden("pipeline_lora_ab.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_sana-run"))
        .args([
            "--engine",
            "cpu",
            "--model",
            s(&tiny_model()),
            "--prompt",
            "A red fox in the snow",
            "--height",
            "32",
            "--width",
            "32",
            "--steps",
            "4",
            "--guidance",
            "4.5",
            "--no-resolution-binning",
            "--latents",
            s(&latents),
            "--output",
            s(&dir.join("fox.png")),
            "--save-latents",
            s(&dir.join("final.safetensors")),
        ])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    (o.status.success(), text)
}

#[test]
fn lora_cli_two_adapters_reproduce_diffusers_in_both_modes() {
    let (a, b) = (
        fixtures().join("lora/lora_a.safetensors"),
        fixtures().join("lora/lora_b.safetensors"),
    );
    let (a, b) = (format!("{}:0.8", s(&a)), format!("{}:-1.5", s(&b)));
    let want = SafetensorsFile::open(golden("pipeline_lora_ab.safetensors")).unwrap();
    for mode in ["merged", "unmerged"] {
        let dir = scratch("lora-cli");
        let (ok, text) = run(&dir, &["--lora", &a, "--lora", &b, "--lora-mode", mode]);
        assert!(ok, "{mode}: {text}");
        let got = SafetensorsFile::open(dir.join("final.safetensors")).unwrap();
        assert_close(
            &format!("sana-run --lora ({mode}): final latents"),
            &got.get("latents").unwrap().to_host().unwrap(),
            &want.get("final_latents").unwrap().to_host().unwrap(),
            1e-4,
        );
    }
}

#[test]
fn lora_cli_wrong_file_names_the_key() {
    let dir = scratch("lora-cli-wrong");
    // A checkpoint that is not an adapter: its first key is named.
    let vae = tiny_model().join("vae/diffusion_pytorch_model.safetensors");
    let (ok, text) = run(&dir, &["--lora", s(&vae)]);
    assert!(!ok, "should fail: {text}");
    assert!(
        text.contains("LoRA adapter") && text.contains("not a LoRA tensor"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing is written"
    );
}
