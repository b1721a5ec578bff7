//! `text_encoder/config.json` of gemma-2-2b-it in the transformers 4.x form (as published, 4.42.4) and the 5.x form
//! (as transformers 5.24 saves it) parse to the same model (docs/numerics/text-encoder.md §7); what we cannot run is
//! refused with the field named.

use std::path::Path;

use sana::model::gemma2::GemmaConfig;
use sana::Error;

const V4: &str = r#"{
  "architectures": ["Gemma2ForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": 50.0,
  "bos_token_id": 2,
  "cache_implementation": "hybrid",
  "eos_token_id": [1, 107],
  "final_logit_softcapping": 30.0,
  "head_dim": 256,
  "hidden_act": "gelu_pytorch_tanh",
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 2304,
  "initializer_range": 0.02,
  "intermediate_size": 9216,
  "max_position_embeddings": 8192,
  "model_type": "gemma2",
  "num_attention_heads": 8,
  "num_hidden_layers": 26,
  "num_key_value_heads": 4,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000.0,
  "sliding_window": 4096,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.42.4",
  "use_cache": true,
  "vocab_size": 256000
}"#;

fn v5() -> String {
    let types: Vec<&str> = (0..26)
        .map(|i| {
            if i % 2 == 0 {
                "\"sliding_attention\""
            } else {
                "\"full_attention\""
            }
        })
        .collect();
    format!(
        r#"{{
  "architectures": ["Gemma2Model"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "attn_logit_softcapping": 50.0,
  "bos_token_id": 2,
  "dtype": "bfloat16",
  "eos_token_id": [1, 107],
  "final_logit_softcapping": 30.0,
  "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 2304,
  "initializer_range": 0.02,
  "intermediate_size": 9216,
  "layer_types": [{}],
  "max_position_embeddings": 8192,
  "model_type": "gemma2",
  "num_attention_heads": 8,
  "num_hidden_layers": 26,
  "num_key_value_heads": 4,
  "pad_token_id": 0,
  "query_pre_attn_scalar": 256,
  "rms_norm_eps": 1e-06,
  "rope_parameters": {{"rope_theta": 10000.0, "rope_type": "default"}},
  "sliding_window": 4096,
  "tie_word_embeddings": true,
  "transformers_version": "5.24.0",
  "use_bidirectional_attention": null,
  "use_cache": true,
  "vocab_size": 256000
}}"#,
        types.join(", ")
    )
}

fn parse(text: &str) -> sana::Result<GemmaConfig> {
    GemmaConfig::from_json(text, Path::new("text_encoder/config.json"))
}

#[track_caller]
fn check_gemma_2_2b(c: &GemmaConfig) {
    assert_eq!(c.vocab_size, 256000);
    assert_eq!(c.hidden_size, 2304);
    assert_eq!(c.intermediate_size, 9216);
    assert_eq!(c.num_hidden_layers, 26);
    assert_eq!(c.num_attention_heads, 8);
    assert_eq!(c.num_key_value_heads, 4);
    assert_eq!(c.head_dim, 256);
    assert_eq!(c.query_pre_attn_scalar, 256.0);
    assert_eq!(c.attention_scale(), 1.0 / 16.0);
    assert_eq!(c.attn_logit_softcapping, Some(50.0));
    assert_eq!(c.rms_norm_eps, 1e-6);
    assert_eq!(c.rope_theta, 10000.0);
    assert!(!c.attention_bias);
    let expected: Vec<Option<usize>> = (0..26).map(|i| (i % 2 == 0).then_some(4096)).collect();
    assert_eq!(
        c.windows, expected,
        "layers 0, 2, …, 24 slide; odd layers are global"
    );
}

#[test]
fn gemma2_config_transformers_4_form_parses() {
    check_gemma_2_2b(&parse(V4).unwrap());
}

#[test]
fn gemma2_config_transformers_5_form_parses() {
    check_gemma_2_2b(&parse(&v5()).unwrap());
}

#[test]
fn gemma2_config_both_forms_agree() {
    let (mut a, mut b) = (parse(V4).unwrap(), parse(&v5()).unwrap());
    a.source = Default::default();
    b.source = Default::default();
    assert_eq!(a, b);
}

#[test]
fn gemma2_config_defaults_are_gemma_2_2b() {
    check_gemma_2_2b(&parse("{}").unwrap());
}

#[test]
fn gemma2_config_rope_scaling_and_pattern_forms() {
    let c =
        parse(r#"{"rope_scaling": {"type": "default", "rope_theta": 500.0}, "rope_theta": 7.0}"#)
            .unwrap();
    assert_eq!(c.rope_theta, 500.0, "the dict's rope_theta wins");
    let c = parse(r#"{"rope_parameters": {"rope_type": "default"}, "rope_theta": 7.0}"#).unwrap();
    assert_eq!(c.rope_theta, 7.0, "a top-level rope_theta fills the dict");
    let c = parse(r#"{"num_hidden_layers": 6, "sliding_window_pattern": 3, "sliding_window": 8}"#)
        .unwrap();
    let windows: Vec<Option<usize>> = vec![Some(8), Some(8), None, Some(8), Some(8), None];
    assert_eq!(c.windows, windows);
    let c = parse(r#"{"num_hidden_layers": 2, "sliding_window": null}"#).unwrap();
    assert_eq!(c.windows, vec![None, None]);
    let c = parse(r#"{"attn_logit_softcapping": null}"#).unwrap();
    assert_eq!(c.attn_logit_softcapping, None);
}

#[track_caller]
fn expect_field(text: &str, field: &str) {
    match parse(text) {
        Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
        other => panic!("expected a config error on `{field}`, got {other:?}"),
    }
}

#[test]
fn gemma2_config_refuses_what_it_cannot_run() {
    expect_field(r#"{"hidden_activation": "gelu"}"#, "hidden_activation");
    expect_field(
        r#"{"rope_parameters": {"rope_type": "linear", "factor": 2.0}}"#,
        "rope_parameters",
    );
    expect_field(r#"{"rope_scaling": {"type": "dynamic"}}"#, "rope_scaling");
    expect_field(
        r#"{"num_hidden_layers": 3, "layer_types": ["full_attention"]}"#,
        "layer_types",
    );
    expect_field(
        r#"{"num_hidden_layers": 1, "layer_types": ["chunked_attention"]}"#,
        "layer_types",
    );
    expect_field(
        r#"{"num_attention_heads": 8, "num_key_value_heads": 3}"#,
        "num_key_value_heads",
    );
    expect_field(
        r#"{"use_bidirectional_attention": true}"#,
        "use_bidirectional_attention",
    );
    expect_field(r#"{"head_dim": 7}"#, "head_dim");
}
