//! The conditioning stage: the prompts through Gemma (or the caller's embeddings), laid out as the transformer's
//! batch — each prompt's rows once per image, with classifier-free guidance `[negatives; prompts]`, and with
//! perturbed-attention guidance the prompts once more at the end (`PAGMixin._prepare_perturbed_attention_guidance`).

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::request::{Conditioning, Request};
use crate::tensor::HostTensor;
use crate::text::PromptEmbeddings;

use super::{Pipeline, Plan};

impl<E: Engine> Pipeline<E> {
    /// Whether `req` runs the text encoder (it does not for precomputed embeddings).
    pub(super) fn needs_text_encoder(&self, req: &Request) -> bool {
        matches!(req.conditioning, Conditioning::Text(_))
    }

    /// The text conditioning and its mask for the model batch: `[model_batch, M, D]` and `[model_batch, M]`.
    pub(super) fn condition(&self, plan: &Plan, req: &Request) -> Result<(HostTensor, HostTensor)> {
        let (embeds, mask, negative) = match &req.conditioning {
            Conditioning::Text(prompts) => {
                let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
                let opts = &req.prompt_options;
                self.with_text_encoder(|enc| {
                    if plan.cfg {
                        let negatives = vec![req.negative_prompt.as_str(); prompts.len()];
                        let out = enc.encode_prompt(&self.engine, &prompts, &negatives, opts)?;
                        Ok((
                            out.prompt_embeds,
                            out.prompt_attention_mask,
                            Some((
                                out.negative_prompt_embeds,
                                out.negative_prompt_attention_mask,
                            )),
                        ))
                    } else {
                        let (embeds, mask) = enc.encode_positive(&self.engine, &prompts, opts)?;
                        Ok((embeds, mask, None))
                    }
                })?
            }
            Conditioning::Embeddings(e) => (
                e.prompt_embeds.clone(),
                e.prompt_attention_mask.clone(),
                plan.cfg.then(|| {
                    (
                        e.negative_prompt_embeds.clone(),
                        e.negative_prompt_attention_mask.clone(),
                    )
                }),
            ),
        };
        let n = plan.images_per_prompt;
        let (embeds, mask) = (repeat_each(&embeds, n)?, repeat_each(&mask, n)?);
        let (mut all, mut all_mask) = match negative {
            Some((neg, neg_mask)) => (
                concat_batch(&repeat_each(&neg, n)?, &embeds)?,
                concat_batch(&repeat_each(&neg_mask, n)?, &mask)?,
            ),
            None => (embeds.clone(), mask.clone()),
        };
        if plan.pag.is_some() {
            all = concat_batch(&all, &embeds)?;
            all_mask = concat_batch(&all_mask, &mask)?;
        }
        Ok((all, all_mask))
    }

    /// `SanaPipeline.encode_prompt` for the request's prompts and negative prompt (both, whatever the guidance, so
    /// the embeddings serve any later request): reusable through [`Request::from_embeddings`].
    pub fn encode_prompt(&self, req: &Request) -> Result<PromptEmbeddings> {
        let Conditioning::Text(prompts) = &req.conditioning else {
            return Err(Error::Request {
                field: "embeddings",
                reason: "are already encoded: encode_prompt needs a request with prompts".into(),
            });
        };
        if prompts.is_empty() {
            return Err(Error::Request {
                field: "prompt",
                reason: "is missing: the request has no prompt".into(),
            });
        }
        let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let negatives = vec![req.negative_prompt.as_str(); prompts.len()];
        self.with_text_encoder(|enc| {
            enc.encode_prompt(&self.engine, &prompts, &negatives, &req.prompt_options)
        })
    }
}

/// `[P, …]` → `[P·n, …]`, each batch element repeated `n` times in place (`repeat_interleave`; diffusers'
/// `num_images_per_prompt`).
fn repeat_each(t: &HostTensor, n: usize) -> Result<HostTensor> {
    let mut shape = t.shape().to_vec();
    let per = t.len() / shape[0].max(1);
    shape[0] *= n;
    let mut data = Vec::with_capacity(t.len() * n);
    for row in t.data().chunks_exact(per.max(1)) {
        for _ in 0..n {
            data.extend_from_slice(row);
        }
    }
    HostTensor::new(shape, data)
}

/// Concatenation along the batch dimension.
fn concat_batch(a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    if a.shape()[1..] != b.shape()[1..] {
        return Err(Error::shape(
            "concat_batch",
            format!("{:?} and {:?}", a.shape(), b.shape()),
        ));
    }
    let mut shape = a.shape().to_vec();
    shape[0] += b.shape()[0];
    HostTensor::new(shape, [a.data(), b.data()].concat())
}
