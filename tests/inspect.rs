//! `sana::inspect`: variant detection, parameter counts from the headers, missing/unexpected/wrong-shaped tensors,
//! and the cross-component findings, on tiny-sana, the variant fixtures and scratch copies of them.

mod common;

use std::path::Path;

use common::{copy_dir, fixtures, scratch, tiny_model, Scratch};
use safetensors::SafeTensors;
use sana::inspect::{
    inspect, parameter_count, text_encoder_keys, transformer_keys, vae_decoder_keys, Family,
    Finding, Variant,
};
use sana::model::config::{TransformerConfig, VaeConfig};
use sana::model::gemma2::GemmaConfig;
use sana::Error;

/// (tensors, parameters = Σ shape products, data bytes) straight from a safetensors header.
fn header_totals(path: &Path) -> (usize, u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let (header_len, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = meta.tensors();
    let params = tensors
        .values()
        .map(|t| t.shape.iter().product::<usize>() as u64)
        .sum();
    (tensors.len(), params, (bytes.len() - 8 - header_len) as u64)
}

fn names(list: &[(String, Vec<usize>)]) -> Vec<&str> {
    list.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn inspect_tiny_sana_is_clean_custom_and_counts_match_the_headers() {
    let report = inspect(&tiny_model()).unwrap();
    println!("{report}");
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.variant(), Some(Variant::Custom));
    assert_eq!(report.pipeline_class.as_deref(), Some("SanaPipeline"));
    assert_eq!(
        report.scheduler.as_deref(),
        Some("DPMSolverMultistepScheduler")
    );
    assert!(report.tokenizer.is_some());
    assert_eq!(report.vae_spatial_factor, Some(4));
    let t = report.transformer.as_ref().unwrap();
    assert_eq!((t.width, t.layers, t.family), (64, 2, Family::Sana));
    assert!(!t.qk_norm && !t.guidance_embeds);

    let cases = [
        ("text_encoder", "text_encoder/model.safetensors"),
        (
            "transformer",
            "transformer/diffusion_pytorch_model.safetensors",
        ),
        ("vae", "vae/diffusion_pytorch_model.safetensors"),
    ];
    for (name, file) in cases {
        let c = report.component(name).unwrap();
        let (tensors, params, bytes) = header_totals(&tiny_model().join(file));
        assert_eq!(
            (c.tensors, c.parameters, c.bytes),
            (tensors, params, bytes),
            "{name}"
        );
        assert_eq!(c.dtypes.get("F32"), Some(&tensors), "{name}: all F32");
        assert_eq!(c.dtypes.len(), 1, "{name}");
        assert!(c.other_files.is_empty(), "{name}");
    }
    // By hand, D = 64, F = 160, 2 blocks: patch 2112 + time 20608 + 24960 + caption 8320 + 64
    // + 2 × (384 + 16448 + 16640 + 34240) + 128 + proj_out 2080.
    assert_eq!(report.component("transformer").unwrap().parameters, 193_696);
    let vae = report.component("vae").unwrap();
    assert_eq!(vae.keys.not_used + vae.keys.expected, vae.tensors);
    assert!(vae.keys.not_used > 0, "the encoder tensors are counted");
    let text = report.component("text_encoder").unwrap();
    assert_eq!((text.keys.expected, text.keys.prefix.as_str()), (24, ""));
}

/// tiny-sana with `transformer/` replaced by a variant fixture's.
fn pipeline_with(variant: &str, name: &str) -> Scratch {
    let dir = scratch(name);
    copy_dir(&tiny_model(), &dir);
    std::fs::remove_dir_all(dir.join("transformer")).unwrap();
    copy_dir(
        &fixtures()
            .join("variants")
            .join(variant)
            .join("transformer"),
        &dir.join("transformer"),
    );
    dir
}

#[test]
fn inspect_qk_norm_variant_shows_sana15_switches() {
    let dir = pipeline_with("qk-norm", "inspect-qk");
    let report = inspect(&dir).unwrap();
    assert!(report.is_clean(), "{report}");
    let t = report.transformer.as_ref().unwrap();
    assert_eq!(
        t.variant,
        Variant::Custom,
        "tiny numbers match no published model"
    );
    assert_eq!(t.family, Family::Sana15);
    assert!(t.qk_norm && !t.guidance_embeds);
    let text = report.to_string();
    assert!(text.contains("Sana 1.5 family"), "{text}");
    assert!(text.contains("q/k norm: yes"), "{text}");
}

#[test]
fn inspect_sprint_variant_wants_the_scm_scheduler() {
    let dir = pipeline_with("sprint", "inspect-sprint");
    let report = inspect(&dir).unwrap();
    let t = report.transformer.as_ref().unwrap();
    assert_eq!((t.variant, t.family), (Variant::Custom, Family::Sprint));
    assert!(t.qk_norm && t.guidance_embeds);
    assert!(
        report.components.iter().all(|c| c.keys.is_clean()),
        "{report}"
    );
    assert_eq!(
        report.findings,
        [
            Finding::SchedulerMismatch {
                guidance_embeds: true,
                scheduler: "DPMSolverMultistepScheduler".into()
            },
            Finding::PipelineMismatch {
                guidance_embeds: true,
                pipeline: "SanaPipeline".into()
            },
        ]
    );
    assert!(report.to_string().contains("guidance embeds: yes"));

    std::fs::write(
        dir.join("scheduler/scheduler_config.json"),
        r#"{"_class_name": "SCMScheduler", "prediction_type": "trigflow", "sigma_data": 0.5}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("model_index.json"),
        r#"{"_class_name": "SanaSprintPipeline"}"#,
    )
    .unwrap();
    let report = inspect(&dir).unwrap();
    assert_eq!(report.scheduler.as_deref(), Some("SCMScheduler"));
    assert!(report.is_clean(), "{report}");
}

#[test]
fn inspect_a_transformer_only_folder_reports_the_missing_components() {
    for variant in ["qk-norm", "pos-embed", "sprint"] {
        let report = inspect(&fixtures().join("variants").join(variant)).unwrap();
        let keys = &report.component("transformer").unwrap().keys;
        assert!(keys.is_clean(), "{variant}: {report}");
    }
    let report = inspect(&fixtures().join("variants/pos-embed")).unwrap();
    assert_eq!(
        report.transformer.as_ref().unwrap().interpolation_scale,
        Some(2.0)
    );
    let report = inspect(&fixtures().join("variants/sprint")).unwrap();
    assert_eq!(report.transformer.as_ref().unwrap().family, Family::Sprint);
    let missing: Vec<&str> = report
        .findings
        .iter()
        .filter_map(|f| match f {
            Finding::MissingComponent { component, .. } => Some(component.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(missing, ["tokenizer", "text_encoder", "vae", "scheduler"]);
}

#[test]
fn inspect_reports_exactly_the_missing_unexpected_and_misshapen_tensors() {
    let dir = scratch("inspect-keys");
    copy_dir(&tiny_model(), &dir);
    let file = dir.join("transformer/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let original = SafeTensors::deserialize(&bytes).unwrap();
    let extra = vec![0u8; 4 * 3];
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = original
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "transformer_blocks.1.attn2.to_k.bias")
        .map(|(n, v)| {
            if n == "caption_norm.weight" {
                // 64 values stored as [8, 8]
                let v =
                    safetensors::tensor::TensorView::new(v.dtype(), vec![8, 8], v.data()).unwrap();
                (n, v)
            } else {
                (n, v)
            }
        })
        .collect();
    tensors.push((
        "transformer_blocks.1.attn2.to_k.scale".into(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3], &extra).unwrap(),
    ));
    safetensors::serialize_to_file(tensors, None, &file).unwrap();
    let fp16 = dir.join("transformer/diffusion_pytorch_model.fp16.safetensors");
    std::fs::write(&fp16, &bytes).unwrap();

    let report = inspect(&dir).unwrap();
    println!("{report}");
    let transformer = report.component("transformer").unwrap();
    assert_eq!(transformer.files, [file]);
    assert_eq!(
        transformer.other_files,
        [fp16],
        "the loader reads the f32 file only"
    );
    let keys = &transformer.keys;
    assert_eq!(
        names(&keys.missing),
        ["transformer_blocks.1.attn2.to_k.bias"]
    );
    assert_eq!(keys.missing[0].1, [64]);
    assert_eq!(
        keys.unexpected,
        [("transformer_blocks.1.attn2.to_k.scale".to_string(), vec![3])]
    );
    assert_eq!(keys.wrong_shape.len(), 1);
    assert_eq!(keys.wrong_shape[0].name, "caption_norm.weight");
    assert_eq!(
        (
            keys.wrong_shape[0].expected.as_slice(),
            keys.wrong_shape[0].actual.as_slice()
        ),
        (&[64][..], &[8, 8][..])
    );
    assert!(!report.is_clean());
    assert!(report.findings.is_empty(), "key problems are not findings");
    let text = report.to_string();
    assert!(
        text.contains("1 missing, 1 unexpected, 1 with a wrong shape"),
        "{text}"
    );
    assert!(
        text.contains("transformer_blocks.1.attn2.to_k.bias [64]"),
        "{text}"
    );
}

#[test]
fn inspect_accepts_a_model_prefixed_gemma_and_flags_the_lm_head() {
    let dir = scratch("inspect-gemma-prefix");
    copy_dir(&tiny_model(), &dir);
    let file = dir.join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let original = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = original
        .tensors()
        .into_iter()
        .map(|(n, v)| (format!("model.{n}"), v))
        .collect();
    let head = original.tensor("embed_tokens.weight").unwrap();
    tensors.push(("lm_head.weight".into(), head));
    safetensors::serialize_to_file(tensors, None, &file).unwrap();

    let report = inspect(&dir).unwrap();
    let keys = &report.component("text_encoder").unwrap().keys;
    assert_eq!(keys.prefix, "model.");
    assert!(
        keys.missing.is_empty() && keys.wrong_shape.is_empty(),
        "{report}"
    );
    assert_eq!(names(&keys.unexpected), ["lm_head.weight"]);
}

#[test]
fn inspect_flags_vae_latent_and_caption_channel_mismatches() {
    let dir = scratch("inspect-latent");
    copy_dir(&tiny_model(), &dir);
    let path = dir.join("vae/config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace("\"latent_channels\": 32", "\"latent_channels\": 16");
    assert_ne!(text, edited);
    std::fs::write(&path, edited).unwrap();
    let path = dir.join("text_encoder/config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace("\"hidden_size\": 64", "\"hidden_size\": 48");
    assert_ne!(text, edited);
    std::fs::write(&path, edited).unwrap();

    let report = inspect(&dir).unwrap();
    assert!(report.findings.contains(&Finding::LatentChannels {
        transformer: 32,
        vae: 16
    }));
    assert!(report.findings.contains(&Finding::CaptionChannels {
        transformer: 64,
        text_encoder: 48
    }));
    // The decoder's conv_in now expects 16 input channels.
    let vae = &report.component("vae").unwrap().keys;
    assert_eq!(vae.wrong_shape.len(), 1);
    assert_eq!(vae.wrong_shape[0].name, "decoder.conv_in.weight");
    assert!(report
        .to_string()
        .contains("in_channels 32 ≠ vae latent_channels 16"));
}

#[test]
fn inspect_errors_name_the_folder_or_config() {
    let missing = fixtures().join("no-such-folder");
    match inspect(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an Io error, got {other:?}"),
    }
    let dir = scratch("inspect-bad-config");
    copy_dir(&tiny_model(), &dir);
    let config = dir.join("transformer/config.json");
    std::fs::write(&config, "{ not json").unwrap();
    match inspect(&dir) {
        Err(Error::Json { path, .. }) => assert_eq!(path, config),
        other => panic!("expected a Json error, got {other:?}"),
    }
    std::fs::remove_file(&config).unwrap();
    match inspect(&dir) {
        Err(Error::Io { path, .. }) => assert_eq!(path, config),
        other => panic!("expected an Io error, got {other:?}"),
    }
}

#[test]
fn inspect_reports_unreadable_weights_as_a_finding() {
    let dir = scratch("inspect-truncated");
    copy_dir(&tiny_model(), &dir);
    let file = dir.join("vae/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let report = inspect(&dir).unwrap();
    assert!(report.component("vae").is_none());
    assert!(
        matches!(&report.findings[..], [Finding::UnreadableWeights { component, .. }] if component == "vae"),
        "{report}"
    );
}

/// A transformer config with the diffusers defaults (the 1.6B numbers: 70 × 32 heads, 20 layers, 20 × 112
/// cross-attention, sample_size 32) overridden by `fields`.
fn transformer_config(fields: serde_json::Value) -> TransformerConfig {
    serde_json::from_value(fields).unwrap()
}

/// The 0.6B numbers (36 × 32 heads, 28 layers, 16 × 72 cross-attention) plus `extra`.
fn small(extra: serde_json::Value) -> serde_json::Value {
    let mut json = serde_json::json!({
        "num_attention_heads": 36, "num_layers": 28, "num_cross_attention_heads": 16,
        "cross_attention_head_dim": 72, "cross_attention_dim": 1152
    });
    if let (Some(base), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    json
}

#[test]
fn variant_names_from_synthetic_configs() {
    use serde_json::json;
    let cases = [
        (json!({}), "sana-1600m-1024"),
        (json!({"sample_size": 16}), "sana-1600m-512"),
        (
            json!({"sample_size": 64, "interpolation_scale": 1.0}),
            "sana-1600m-2048",
        ),
        (
            json!({"sample_size": 128, "interpolation_scale": 2.0}),
            "sana-1600m-4096",
        ),
        (
            json!({"qk_norm": "rms_norm_across_heads"}),
            "sana1.5-1600m-1024",
        ),
        (
            json!({"qk_norm": "rms_norm_across_heads", "num_layers": 60}),
            "sana1.5-4800m-1024",
        ),
        (
            json!({"qk_norm": "rms_norm_across_heads", "guidance_embeds": true}),
            "sana-sprint-1600m-1024",
        ),
        (small(json!({"sample_size": 16})), "sana-600m-512"),
        (small(json!({})), "sana-600m-1024"),
        (
            small(json!({"qk_norm": "rms_norm_across_heads", "guidance_embeds": true})),
            "sana-sprint-600m-1024",
        ),
        // Near misses: the 2K numbers without its position embedding; a 4K scale on a 2K size; other captions.
        (json!({"sample_size": 64}), "custom"),
        (
            json!({"sample_size": 64, "interpolation_scale": 2.0}),
            "custom",
        ),
        (json!({"caption_channels": 64}), "custom"),
        (json!({"guidance_embeds": true}), "custom"),
    ];
    for (fields, name) in cases {
        let cfg = transformer_config(fields.clone());
        assert_eq!(Variant::detect(&cfg).name(), name, "{fields}");
    }
    assert_eq!(Variant::published().count(), 10);
    assert_eq!(
        Variant::Sana1600M1024.repo().as_deref(),
        Some("Efficient-Large-Model/Sana_1600M_1024px_diffusers")
    );
    assert_eq!(Variant::Custom.repo(), None);
}

/// The key sets reproduce the published parameter counts (docs/numerics/transformer.md §2.2, text-encoder.md §12,
/// dc-ae.md §1).
#[test]
fn expected_key_sets_match_the_published_parameter_counts() {
    use serde_json::json;
    let qk = "rms_norm_across_heads";
    let cases = [
        (small(json!({})), 591_747_872u64),
        (json!({}), 1_604_462_752),
        (json!({"qk_norm": qk}), 1_604_641_952),
        (json!({"qk_norm": qk, "num_layers": 60}), 4_721_825_952),
        (
            small(json!({"qk_norm": qk, "guidance_embeds": true})),
            593_501_216,
        ),
        (
            json!({"qk_norm": qk, "guidance_embeds": true}),
            1_610_237_472,
        ),
    ];
    for (fields, params) in cases {
        let cfg = transformer_config(fields.clone());
        assert_eq!(parameter_count(&transformer_keys(&cfg)), params, "{fields}");
    }

    let gemma = GemmaConfig::from_json("{}", Path::new("config.json")).unwrap();
    assert_eq!(parameter_count(&text_encoder_keys(&gemma)), 2_614_341_888);

    let dir = scratch("inspect-dcae-config");
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        r#"{"attention_head_dim": 32, "latent_channels": 32, "in_channels": 3,
            "decoder_block_types": ["ResBlock", "ResBlock", "ResBlock",
                                    "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"],
            "decoder_block_out_channels": [128, 256, 512, 512, 1024, 1024],
            "decoder_layers_per_block": [3, 3, 3, 3, 3, 3],
            "decoder_qkv_multiscales": [[], [], [], [5], [5], [5]],
            "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu",
            "upsample_block_type": "interpolate", "scaling_factor": 0.41407}"#,
    )
    .unwrap();
    let vae = VaeConfig::load(&path).unwrap();
    assert_eq!(parameter_count(&vae_decoder_keys(&vae)), 159_223_171);
}
