//! Prompt preprocessing as diffusers' `_text_preprocessing(clean_caption=False)` does it in Python
//! (`prompt.lower().strip()`), and the CHI constant (docs/numerics/text-encoder.md §2–§3). Expected strings were
//! produced by CPython 3.11.

use sana::text::{preprocess, PromptOptions, COMPLEX_HUMAN_INSTRUCTION};

/// Every code point for which CPython 3.11's `str.isspace()` is true.
const PYTHON_SPACES: [u32; 29] = [
    0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001,
    0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f,
    0x205f, 0x3000,
];

#[test]
fn text_strip_uses_python_whitespace() {
    for c in (0..0x11_0000u32).filter_map(char::from_u32) {
        let stripped = preprocess(&format!("{c}x{c}")) == "x";
        let python = PYTHON_SPACES.contains(&(c as u32));
        assert_eq!(stripped, python, "U+{:04X}", c as u32);
    }
}

#[test]
fn text_preprocess_matches_python_lower_strip() {
    for (input, python) in [
        ("  A Cat Sleeping \n", "a cat sleeping"),
        ("\x1c a \x1f", "a"),
        ("\u{a0}X\u{3000}", "x"),
        ("\u{200b}X\u{200b}", "\u{200b}x\u{200b}"),
        ("\u{180e}X", "\u{180e}x"),
        ("\u{85}Y\u{85}", "y"),
        // Final sigma: Σ at a word end lower-cases to ς, elsewhere to σ.
        ("ΟΔΟΣ", "οδος"),
        ("ΑΣ Σ", "ας σ"),
        // İ lower-cases to i + combining dot above.
        ("İstanbul", "i\u{307}stanbul"),
        ("", ""),
        ("   ", ""),
        ("Inner  Spaces\tKept", "inner  spaces\tkept"),
    ] {
        assert_eq!(preprocess(input), python, "{input:?}");
    }
    assert_eq!(preprocess("ΟΔΟΣ").chars().last(), Some('ς'));
}

#[test]
fn text_chi_is_diffusers_default() {
    let chi = PromptOptions::default().chi_prompt().unwrap();
    // Check values of docs/numerics/text-encoder.md §3 (SHA-256 48290080…c3da verified against diffusers 0.40.0).
    assert_eq!(chi.len(), 1057);
    assert_eq!(chi.chars().count(), 1057);
    assert_eq!(chi.matches('\n').count(), 7);
    assert!(chi.starts_with("Given a user prompt, generate an 'Enhanced prompt' that"));
    assert!(chi.ends_with("evaluations:\nUser Prompt: "));
    assert_eq!(COMPLEX_HUMAN_INSTRUCTION.len(), 8);
    assert_eq!(PromptOptions::default().max_sequence_length, 300);
    let off = PromptOptions {
        complex_human_instruction: vec![],
        ..Default::default()
    };
    assert_eq!(off.chi_prompt(), None);
}
