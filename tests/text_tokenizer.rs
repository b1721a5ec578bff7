//! The Gemma tokenizer against transformers 5.24's `GemmaTokenizerFast` (tools/make_fixtures.py): ids of every
//! fixture text, the padded/truncated rows the pipeline asks for, `n_chi`, and the rows `encode_prompt` keeps.

mod common;

use common::{golden, tiny_model};
use sana::text::{tokenize_prompts, GemmaTokenizer, PromptOptions};
use serde_json::Value;

fn tokenizer() -> GemmaTokenizer {
    GemmaTokenizer::from_dir(&tiny_model().join("tokenizer")).unwrap()
}

fn cases() -> Vec<(String, Vec<i64>)> {
    let text = std::fs::read_to_string(golden("tokenizer_cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap();
            (
                c["text"].as_str().unwrap().to_string(),
                ids.iter().map(|i| i.as_i64().unwrap()).collect(),
            )
        })
        .collect()
}

#[test]
fn text_token_ids_match_transformers_on_every_fixture_text() {
    let tok = tokenizer();
    let cases = cases();
    assert!(cases.len() >= 7, "only {} tokenizer cases", cases.len());
    for (text, ids) in &cases {
        assert_eq!(&tok.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(tok.count(text).unwrap(), ids.len(), "{text:?}");
    }
}

#[test]
fn text_rows_are_bos_first_right_truncated_right_padded() {
    let tok = tokenizer();
    assert_eq!(tok.pad_id(), 0);
    for (text, ids) in cases() {
        for max_length in [
            1,
            ids.len().saturating_sub(2).max(1),
            ids.len(),
            ids.len() + 3,
        ] {
            let row = tok
                .encode_padded(std::slice::from_ref(&text), max_length)
                .unwrap();
            assert_eq!((row.batch, row.len), (1, max_length));
            let n = ids.len().min(max_length);
            let mut want = ids[..n].to_vec();
            want.resize(max_length, 0);
            let mut mask = vec![1; n];
            mask.resize(max_length, 0);
            assert_eq!(row.ids, want, "{text:?} at {max_length}");
            assert_eq!(row.mask, mask, "{text:?} at {max_length}");
            assert_eq!(row.ids[0], 2, "BOS survives truncation");
        }
    }
}

#[test]
fn text_chi_token_count_and_row_selection() {
    let tok = tokenizer();
    let opts = PromptOptions::default();
    let n_chi = tok.count(&opts.chi_prompt().unwrap()).unwrap();
    // transformers 5.24: `len(tokenizer.encode(chi))` = 270 with the fixture tokenizer.
    assert_eq!(n_chi, 270);
    let t = tokenize_prompts(&tok, &["A Cat", "b"], &[], &opts).unwrap();
    let l = n_chi + 300 - 2;
    assert_eq!((t.prompt.batch, t.prompt.len), (2, l));
    let select: Vec<usize> = std::iter::once(0).chain(l - 299..l).collect();
    assert_eq!(t.select, select);
    // The positive row starts with the CHI tokens (no lower-casing of the CHI, the prompt lower-cased).
    let chi_ids = tok.encode(&opts.chi_prompt().unwrap()).unwrap();
    let text = format!("{}a cat", opts.chi_prompt().unwrap());
    let full = tok.encode(&text).unwrap();
    assert_eq!(&t.prompt.ids[..full.len()], &full[..]);
    assert_eq!(&full[..n_chi - 1], &chi_ids[..n_chi - 1]);
    // The negative prompt: "" → [BOS] + 299 pads, mask [1, 0 × 299], never prefixed.
    assert_eq!((t.negative.batch, t.negative.len), (2, 300));
    for row in 0..2 {
        let ids = &t.negative.ids[row * 300..(row + 1) * 300];
        let mask = &t.negative.mask[row * 300..(row + 1) * 300];
        assert_eq!(ids[0], 2);
        assert!(ids[1..].iter().all(|&i| i == 0));
        assert_eq!(mask[0], 1);
        assert!(mask[1..].iter().all(|&m| m == 0));
    }
}

#[test]
fn text_max_length_rule_without_chi_and_short_sequences() {
    let tok = tokenizer();
    let no_chi = PromptOptions {
        complex_human_instruction: vec![],
        max_sequence_length: 12,
    };
    let t = tokenize_prompts(&tok, &["  A Cat Sleeping  "], &["Blurry"], &no_chi).unwrap();
    assert_eq!(t.prompt.len, 12);
    assert_eq!(
        t.select,
        (0..12).collect::<Vec<_>>(),
        "identity without CHI"
    );
    let want = tok.encode("a cat sleeping").unwrap();
    assert_eq!(&t.prompt.ids[..want.len()], &want[..]);
    let neg = tok.encode("blurry").unwrap();
    assert_eq!(
        &t.negative.ids[..neg.len()],
        &neg[..],
        "the negative prompt is lower-cased too"
    );
    // CHI with a small budget: n_chi + 8 − 2 rows, keep [0] + the last 7.
    let short = PromptOptions {
        max_sequence_length: 8,
        ..Default::default()
    };
    let t = tokenize_prompts(&tok, &["x"], &[], &short).unwrap();
    assert_eq!(t.prompt.len, 270 + 6);
    assert_eq!(t.select, [0, 269, 270, 271, 272, 273, 274, 275]);
    assert_eq!(t.negative.len, 8);
}

/// A copy of the fixture tokenizer with `tokenizer_config.json` edited.
fn tokenizer_with_config(
    test: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> GemmaTokenizer {
    let dir = common::scratch(test);
    common::copy_dir(&tiny_model().join("tokenizer"), &dir);
    let path = dir.join("tokenizer_config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(v.as_object_mut().unwrap());
    std::fs::write(&path, v.to_string()).unwrap();
    GemmaTokenizer::from_dir(&dir).unwrap()
}

/// Expected rows from transformers 5.24 `AutoTokenizer` on the same edited folders.
#[test]
fn text_tokenizer_config_fields_as_transformers_5_reads_them() {
    let row = |tok: &GemmaTokenizer, text: &str, n: usize| {
        tok.encode_padded(&[text.to_string()], n).unwrap().ids
    };
    // `pad_token` names the padding id.
    let tok = tokenizer_with_config("pad-unk", |c| {
        c.insert("pad_token".into(), "<unk>".into());
    });
    assert_eq!(row(&tok, "a", 4), [2, 274, 3, 3]);
    // A Gemma tokenizer without `pad_token` pads with `<pad>` (the class default).
    let tok = tokenizer_with_config("pad-default", |c| {
        c.remove("pad_token");
    });
    assert_eq!(row(&tok, "a", 4), [2, 274, 0, 0]);
    // `truncation_side = "left"` keeps BOS and the last tokens.
    let tok = tokenizer_with_config("truncate-left", |c| {
        c.insert("truncation_side".into(), "left".into());
    });
    assert_eq!(row(&tok, "a cat sleeping", 3), [2, 359, 307]);
    // `add_eos_token`/`add_bos_token` are ignored: tokenizer.json's post-processor (BOS only) decides.
    let tok = tokenizer_with_config("add-eos", |c| {
        c.insert("add_eos_token".into(), true.into());
        c.insert("add_bos_token".into(), false.into());
    });
    assert_eq!(
        tok.encode("a cat sleeping").unwrap(),
        [2, 415, 370, 359, 307]
    );
}
