//! Prompt → Gemma token ids → Gemma-2 → Sana's text conditioning, step for step as diffusers'
//! `SanaPipeline.encode_prompt` (docs/numerics/text-encoder.md §2–§6, §11): lower-case and strip, prepend the complex
//! human instruction (CHI), tokenize with BOS, right-truncate and right-pad to `n_chi + max_sequence_length − 2`,
//! encode, keep row 0 and the last `max_sequence_length − 1` rows. The negative prompt gets neither CHI nor row
//! selection.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::{Encoding, PostProcessor, Tokenizer, TruncationDirection};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::config::read_config;
use crate::model::gemma2::{Gemma2Model, TokenBatch};
use crate::tensor::HostTensor;

/// diffusers' default `complex_human_instruction` (single quotes around 'Enhanced prompt'; the NVlabs configs use
/// double quotes, docs/numerics/text-encoder.md §3). Joined with `"\n"`; the last line ends in one space.
pub const COMPLEX_HUMAN_INSTRUCTION: [&str; 8] = [
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",
    "User Prompt: ",
];

/// The pipeline's default `max_sequence_length`.
pub const MAX_SEQUENCE_LENGTH: usize = 300;

/// The largest `max_sequence_length` accepted: a prompt with the instruction prefix takes up to twice as many
/// tokens, and 2 × 4096 is Gemma-2's 8192-token context.
pub const SEQUENCE_LENGTH_LIMIT: usize = 4096;

/// diffusers' `_text_preprocessing` with `clean_caption=False`: Python's `prompt.lower().strip()`.
pub fn preprocess(prompt: &str) -> String {
    prompt
        .to_lowercase()
        .trim_matches(is_python_space)
        .to_string()
}

/// Python's `str.isspace`: Unicode White_Space (Rust's `char::is_whitespace`) plus the information separators
/// U+001C…U+001F, which `str.strip()` also removes and Rust's `trim` keeps.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Reads a prompt from a file, verbatim (preprocessing strips a trailing newline); it must be UTF-8.
pub fn read_prompt_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::InvalidInput(format!(
            "prompt file {}: not valid UTF-8 (byte {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// How prompts are turned into token rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptOptions {
    /// Lines joined by `"\n"` and prepended to every (preprocessed) positive prompt; empty disables CHI.
    pub complex_human_instruction: Vec<String>,
    /// Rows of conditioning per prompt (diffusers `max_sequence_length`).
    pub max_sequence_length: usize,
}

impl Default for PromptOptions {
    fn default() -> Self {
        Self {
            complex_human_instruction: COMPLEX_HUMAN_INSTRUCTION
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_sequence_length: MAX_SEQUENCE_LENGTH,
        }
    }
}

impl PromptOptions {
    /// The CHI prefix, or `None` when disabled.
    pub fn chi_prompt(&self) -> Option<String> {
        (!self.complex_human_instruction.is_empty())
            .then(|| self.complex_human_instruction.join("\n"))
    }
}

/// The Gemma tokenizer as transformers 5.24's `GemmaTokenizer` behaves inside the pipeline: `tokenizer.json`
/// (normalizer, BPE with byte fallback, added tokens, BOS post-processor), the configured pad token and truncation
/// side, padding always on the right (the pipeline forces `padding_side = "right"`).
#[derive(Clone)]
pub struct GemmaTokenizer {
    tokenizer: Tokenizer,
    pad_id: u32,
    truncation: TruncationDirection,
    path: PathBuf,
}

impl GemmaTokenizer {
    /// Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json` and `dir/special_tokens_map.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "tokenizer.json not found (a diffusers pipeline keeps it in tokenizer/)",
                ),
            ));
        }
        let fail = |reason: String| Error::Tokenizer {
            path: path.clone(),
            reason,
        };
        let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| fail(e.to_string()))?;
        let config = optional_json(&dir.join("tokenizer_config.json"))?;
        let special = optional_json(&dir.join("special_tokens_map.json"))?;

        // transformers 5.24: the config's `pad_token`, else tokenizer.json's padding, else the class default
        // (`GemmaTokenizer(pad_token="<pad>")`).
        let gemma_class = config
            .get("tokenizer_class")
            .and_then(Value::as_str)
            .is_some_and(|c| c.starts_with("Gemma"));
        let pad_token = token_name(config.get("pad_token"))
            .or_else(|| token_name(special.get("pad_token")))
            .or_else(|| tokenizer.get_padding().map(|p| p.pad_token.clone()))
            .or_else(|| gemma_class.then(|| "<pad>".to_string()))
            .ok_or_else(|| {
                fail("no pad token: tokenizer_config.json and special_tokens_map.json name no `pad_token`, \
                      tokenizer.json has no padding section and the tokenizer class is not Gemma's \
                      (Sana pads every prompt to a fixed length)"
                    .into())
            })?;
        let pad_id = tokenizer
            .token_to_id(&pad_token)
            .ok_or_else(|| fail(format!("pad token `{pad_token}` is not in the vocabulary")))?;
        // tokenizer.json's post-processor decides BOS/EOS: transformers 5.24 ignores the config's
        // `add_bos_token`/`add_eos_token` for Gemma (4.x rebuilt the post-processor from them).
        let truncation = match config.get("truncation_side").and_then(Value::as_str) {
            Some("left") => TruncationDirection::Left,
            _ => TruncationDirection::Right,
        };
        tokenizer
            .with_truncation(None)
            .map_err(|e| fail(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            pad_id,
            truncation,
            path,
        })
    }

    /// The id rows are padded with (`<pad>`, 0 for Gemma), from the config's `pad_token`.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// `tokenizer.encode(text)`: ids with the special tokens (BOS), no truncation, no padding.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self.encode_raw(text, true)?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// `len(tokenizer.encode(text))`.
    pub fn count(&self, text: &str) -> Result<usize> {
        Ok(self.encode_raw(text, true)?.len())
    }

    /// `tokenizer(texts, padding="max_length", max_length, truncation=True, add_special_tokens=True)`: every row is
    /// exactly `max_length` ids, truncated before the special tokens are added (so BOS survives), padded on the
    /// right with the pad id and mask 0.
    pub fn encode_padded(&self, texts: &[String], max_length: usize) -> Result<TokenBatch> {
        let added = self
            .tokenizer
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_length < added {
            return Err(Error::InvalidInput(format!(
                "max_length {max_length} leaves no room for the {added} special tokens of {}",
                self.path.display()
            )));
        }
        let mut ids = Vec::with_capacity(texts.len() * max_length);
        let mut mask = Vec::with_capacity(texts.len() * max_length);
        for text in texts {
            let mut enc = self.encode_raw(text, false)?;
            enc.truncate(max_length - added, 0, self.truncation);
            let enc = match self.tokenizer.get_post_processor() {
                Some(p) => p.process(enc, None, true),
                None => Ok(enc),
            }
            .map_err(|e| self.error(e.to_string()))?;
            let n = enc.len().min(max_length);
            ids.extend(enc.get_ids()[..n].iter().map(|&i| i64::from(i)));
            mask.extend(enc.get_attention_mask()[..n].iter().map(|&m| i64::from(m)));
            ids.extend(std::iter::repeat_n(i64::from(self.pad_id), max_length - n));
            mask.extend(std::iter::repeat_n(0, max_length - n));
        }
        TokenBatch::new(ids, mask, texts.len(), max_length)
    }

    fn encode_raw(&self, text: &str, special: bool) -> Result<Encoding> {
        self.tokenizer
            .encode(text, special)
            .map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, reason: String) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            reason,
        }
    }
}

/// A special token as `tokenizer_config.json` writes it: a string or an `AddedToken` object.
fn token_name(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

fn optional_json(path: &Path) -> Result<Value> {
    if path.is_file() {
        read_config(path)
    } else {
        Ok(Value::Null)
    }
}

/// The token rows of one `encode_prompt` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptTokens {
    /// CHI + prompt, `[B, n_chi + max_sequence_length − 2]` (`[B, max_sequence_length]` without CHI).
    pub prompt: TokenBatch,
    /// Rows of the prompt's hidden states that Sana keeps: `[0] + the last max_sequence_length − 1`.
    pub select: Vec<usize>,
    /// Negative prompts, `[B, max_sequence_length]`, never prefixed, all rows kept.
    pub negative: TokenBatch,
}

/// Tokenizes `prompts` and `negative_prompts` (one for all prompts, or one each) as diffusers does.
pub fn tokenize_prompts(
    tokenizer: &GemmaTokenizer,
    prompts: &[&str],
    negative_prompts: &[&str],
    opts: &PromptOptions,
) -> Result<PromptTokens> {
    let m = opts.max_sequence_length;
    if prompts.is_empty() || m == 0 || m > SEQUENCE_LENGTH_LIMIT {
        return Err(Error::InvalidInput(format!(
            "encode_prompt needs at least one prompt and max_sequence_length between 1 and \
             {SEQUENCE_LENGTH_LIMIT}, got {} prompts and {m}",
            prompts.len()
        )));
    }
    let negatives: Vec<&str> = match negative_prompts {
        [] => vec![""; prompts.len()],
        [one] => vec![*one; prompts.len()],
        many if many.len() == prompts.len() => many.to_vec(),
        many => {
            return Err(Error::InvalidInput(format!(
                "{} negative prompts for {} prompts (give one, or one per prompt)",
                many.len(),
                prompts.len()
            )))
        }
    };
    let mut texts: Vec<String> = prompts.iter().map(|p| preprocess(p)).collect();
    let max_length_all = match opts.chi_prompt() {
        None => m,
        Some(chi) => {
            let n_chi = tokenizer.count(&chi)?;
            for t in &mut texts {
                t.insert_str(0, &chi);
            }
            (n_chi + m)
                .checked_sub(2)
                .filter(|&l| l + 1 >= m)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the CHI prefix has {n_chi} tokens: too few for max_sequence_length {m}"
                    ))
                })?
        }
    };
    // Python: `[0] + list(range(-m + 1, 0))` on a length-`max_length_all` axis.
    let select = std::iter::once(0)
        .chain((max_length_all + 1 - m)..max_length_all)
        .collect();
    let negatives: Vec<String> = negatives.iter().map(|p| preprocess(p)).collect();
    Ok(PromptTokens {
        prompt: tokenizer.encode_padded(&texts, max_length_all)?,
        select,
        negative: tokenizer.encode_padded(&negatives, m)?,
    })
}

/// What `SanaPipeline.encode_prompt` returns (with `num_images_per_prompt = 1`): `[B, M, hidden]` embeddings and
/// `[B, M]` 0/1 masks (f32 here; diffusers' are int64).
#[derive(Clone, Debug)]
pub struct PromptEmbeddings {
    /// The prompts' Gemma `last_hidden_state` rows, `[B, M, hidden]`.
    pub prompt_embeds: HostTensor,
    /// 1 for a prompt token, 0 for padding, `[B, M]`.
    pub prompt_attention_mask: HostTensor,
    /// The negative prompts' embeddings, `[B, M, hidden]`.
    pub negative_prompt_embeds: HostTensor,
    /// The negative prompts' mask, `[B, M]`.
    pub negative_prompt_attention_mask: HostTensor,
}

/// The tokenizer and Gemma-2 of a pipeline folder.
pub struct TextEncoder<E: Engine> {
    /// The tokenizer of `tokenizer/`.
    pub tokenizer: GemmaTokenizer,
    /// The Gemma-2 of `text_encoder/`.
    pub model: Gemma2Model<E>,
}

impl<E: Engine> TextEncoder<E> {
    /// Loads `model/tokenizer/` and `model/text_encoder/` of a diffusers pipeline folder.
    pub fn from_dir(e: &E, model: &Path) -> Result<Self> {
        Ok(Self {
            tokenizer: GemmaTokenizer::from_dir(&model.join("tokenizer"))?,
            model: Gemma2Model::from_dir(e, &model.join("text_encoder"))?,
        })
    }

    /// diffusers `encode_prompt` with classifier-free guidance: embeddings and masks of `prompts` and of the
    /// negative prompts (`[]` means `""` for each prompt).
    pub fn encode_prompt(
        &self,
        e: &E,
        prompts: &[&str],
        negative_prompts: &[&str],
        opts: &PromptOptions,
    ) -> Result<PromptEmbeddings> {
        let tokens = tokenize_prompts(&self.tokenizer, prompts, negative_prompts, opts)?;
        let (prompt_embeds, prompt_attention_mask) =
            self.encode_rows(e, &tokens.prompt, &tokens.select)?;
        let all: Vec<usize> = (0..tokens.negative.len).collect();
        let (negative_prompt_embeds, negative_prompt_attention_mask) =
            self.encode_rows(e, &tokens.negative, &all)?;
        Ok(PromptEmbeddings {
            prompt_embeds,
            prompt_attention_mask,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
        })
    }

    /// The prompts' embeddings and masks alone: what the pipeline needs without classifier-free guidance (and what
    /// Sana-Sprint always uses), sparing Gemma the negative prompts.
    pub fn encode_positive(
        &self,
        e: &E,
        prompts: &[&str],
        opts: &PromptOptions,
    ) -> Result<(HostTensor, HostTensor)> {
        let tokens = tokenize_prompts(&self.tokenizer, prompts, &[], opts)?;
        self.encode_rows(e, &tokens.prompt, &tokens.select)
    }

    /// Gemma's `last_hidden_state` rows `select` of every sequence, with the matching mask entries.
    fn encode_rows(
        &self,
        e: &E,
        tokens: &TokenBatch,
        select: &[usize],
    ) -> Result<(HostTensor, HostTensor)> {
        let hidden = e.download(&self.model.forward(e, tokens)?)?;
        let (b, l, d) = (tokens.batch, tokens.len, self.model.config.hidden_size);
        let mut rows = Vec::with_capacity(b * select.len() * d);
        let mut mask = Vec::with_capacity(b * select.len());
        for bi in 0..b {
            for &r in select {
                rows.extend_from_slice(&hidden.data()[(bi * l + r) * d..][..d]);
                mask.push(tokens.mask[bi * l + r] as f32);
            }
        }
        Ok((
            HostTensor::new(vec![b, select.len(), d], rows)?,
            HostTensor::new(vec![b, select.len()], mask)?,
        ))
    }
}
