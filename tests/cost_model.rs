//! The FLOP/byte model of `sana::cost::stages` (configs only) against the instrumented engine (shapes of the ops
//! the models actually call) on the tiny fixture model: text encode, DiT conditioning, one DiT step (plain, q/k
//! norm, position embedding, Sprint), VAE decode, and a whole pipeline run (plain, with perturbed-attention guidance,
//! and the denoising of a ControlNet run). Every figure — matmul FLOPs, stencil
//! FLOPs and elements moved — must agree exactly: both sides use the same per-op accounting, so a difference means
//! the model misses, adds or mis-shapes an op.

mod common;

use common::{fixtures, tiny_model, Rng};
use sana::cost::stages::{self, StageCosts, Workload};
use sana::cost::Cost;
use sana::engine::counting::CountingEngine;
use sana::engine::cpu::CpuEngine;
use sana::model::config::TransformerConfig;
use sana::model::dc_ae::DcAeDecoder;
use sana::model::gemma2::GemmaConfig;
use sana::model::sana_dit::SanaTransformer;
use sana::pipeline::Pipeline;
use sana::text::{tokenize_prompts, PromptOptions, TextEncoder};
use sana::HostTensor;
use sana::{Control, Request};

fn engine() -> CountingEngine<CpuEngine> {
    CountingEngine::new(CpuEngine)
}

fn assert_cost(what: &str, counted: Cost, modelled: Cost) {
    assert!(counted.matmul_flops > 0, "{what}: nothing counted");
    assert_eq!(
        counted, modelled,
        "{what}: instrumented (left) vs model (right)"
    );
    eprintln!(
        "{what}: {} matmul FLOPs, {} stencil FLOPs, {} elements — model and instrumented count agree",
        counted.matmul_flops, counted.stencil_flops, counted.elements
    );
}

#[test]
fn text_encode_matches_the_model() {
    let e = engine();
    let enc = TextEncoder::from_dir(&e, &tiny_model()).unwrap();
    e.take();
    for chi in [true, false] {
        let mut opts = PromptOptions::default();
        if !chi {
            opts.complex_human_instruction.clear();
        }
        let prompts = ["a red fox in the snow"];
        let tokens = tokenize_prompts(&enc.tokenizer, &prompts, &[""], &opts).unwrap();
        enc.encode_prompt(&e, &prompts, &[""], &opts).unwrap();
        let cfg = &enc.model.config;
        let model = stages::gemma_forward(cfg, 1, tokens.prompt.len)
            + stages::gemma_forward(cfg, 1, tokens.negative.len);
        assert_cost(&format!("text encode (chi {chi})"), e.take(), model);
    }
}

fn check_dit(dir: &std::path::Path, grid: (usize, usize), batch: usize) {
    let e = engine();
    let dit = SanaTransformer::from_dir(&e, dir).unwrap();
    let cfg = dit.config.clone();
    e.take();
    let mut rng = Rng::new(7);
    let rows = 9;
    let text = rng.tensor(&[batch, rows, cfg.caption_channels]);
    let mut mask = vec![1.0; batch * rows];
    mask[rows - 2..rows].fill(0.0);
    let mask = HostTensor::new(vec![batch, rows], mask).unwrap();
    let cond = dit.encode_text(&e, &text, &mask).unwrap();
    let name = dir.display();
    assert_cost(
        &format!("{name}: conditioning"),
        e.take(),
        stages::dit_conditioning(&cfg, batch, rows),
    );
    let latents = rng.tensor(&[batch, cfg.in_channels, grid.0, grid.1]);
    let t = vec![500.0; batch];
    let g = vec![0.45; batch];
    let guidance = cfg.guidance_embeds.then_some(g.as_slice());
    dit.forward(&e, &latents, &cond, &t, guidance).unwrap();
    assert_cost(
        &format!("{name}: one step"),
        e.take(),
        stages::dit_step(&cfg, batch, grid, rows),
    );
}

#[test]
fn dit_conditioning_and_step_match_the_model() {
    check_dit(&tiny_model().join("transformer"), (3, 5), 2);
    for variant in ["qk-norm", "pos-embed", "sprint"] {
        check_dit(
            &fixtures().join(format!("variants/{variant}/transformer")),
            (4, 3),
            1,
        );
    }
}

#[test]
fn vae_decode_matches_the_model() {
    let e = engine();
    let vae = DcAeDecoder::from_dir(&e, &tiny_model().join("vae")).unwrap();
    e.take();
    let mut rng = Rng::new(3);
    let (b, grid) = (2, (3, 5));
    let z = rng.tensor(&[b, vae.config.latent_channels, grid.0, grid.1]);
    vae.decode(&e, &z).unwrap();
    assert_cost(
        "vae decode",
        e.take(),
        stages::vae_decode(&vae.config, b, grid),
    );
}

#[test]
fn a_whole_generation_matches_the_model() {
    let dir = tiny_model();
    let pipe = Pipeline::load(engine(), &dir, Default::default()).unwrap();
    pipe.engine().take();
    let prompt = "a red fox in the snow";
    let req = Request::new(prompt)
        .size(96, 64)
        .steps(3)
        .batch(2)
        .resolution_binning(false);
    let gen = pipe.generate(&req, &mut |_| Control::Continue).unwrap();
    assert_eq!(gen.images.len(), 2);
    let counted = pipe.engine().take();
    let plan = &gen.plan;

    let gemma = GemmaConfig::load(&dir.join("text_encoder/config.json")).unwrap();
    let dit = TransformerConfig::load(&dir.join("transformer/config.json")).unwrap();
    let tokenizer = sana::text::GemmaTokenizer::from_dir(&dir.join("tokenizer")).unwrap();
    let tokens = tokenize_prompts(&tokenizer, &[prompt], &[""], &PromptOptions::default()).unwrap();
    let f = pipe.vae_config().spatial_factor();
    let work = Workload {
        batch: 2,
        latent: (64 / f, 96 / f),
        prompt_tokens: tokens.prompt.len,
        text_rows: plan.text_rows,
        cfg: true,
        steps: 3,
        pag_blocks: 0,
    };
    assert_eq!((plan.batch, plan.steps, plan.cfg), (2, 3, true));
    let model = StageCosts::new(&gemma, &dit, pipe.vae_config(), &work);
    assert_cost("whole generation", counted, model.total());
}

/// A generation with CFG and perturbed-attention guidance on both blocks: the third copy of the batch and the identity
/// attention's mixing.
#[test]
fn a_pag_generation_matches_the_model() {
    let dir = tiny_model();
    let pipe = Pipeline::load(engine(), &dir, Default::default()).unwrap();
    pipe.engine().take();
    let prompt = "a red fox in the snow";
    let req = Request::new(prompt)
        .size(64, 32)
        .steps(2)
        .resolution_binning(false)
        .pag_scale(2.0)
        .pag_layers(["transformer_blocks.0", "transformer_blocks.1"]);
    let gen = pipe.generate(&req, &mut |_| Control::Continue).unwrap();
    let counted = pipe.engine().take();
    let plan = &gen.plan;
    let gemma = GemmaConfig::load(&dir.join("text_encoder/config.json")).unwrap();
    let dit = TransformerConfig::load(&dir.join("transformer/config.json")).unwrap();
    let tokenizer = sana::text::GemmaTokenizer::from_dir(&dir.join("tokenizer")).unwrap();
    let tokens = tokenize_prompts(&tokenizer, &[prompt], &[""], &PromptOptions::default()).unwrap();
    let f = pipe.vae_config().spatial_factor();
    let work = Workload {
        batch: 1,
        latent: (32 / f, 64 / f),
        prompt_tokens: tokens.prompt.len,
        text_rows: plan.text_rows,
        cfg: true,
        steps: 2,
        pag_blocks: 2,
    };
    assert_eq!((plan.model_batch(), work.model_batch()), (3, 3));
    let model = StageCosts::new(&gemma, &dit, pipe.vae_config(), &work);
    assert_cost("PAG generation", counted, model.total());
}

/// The denoising of a ControlNet request from precomputed embeddings: the ControlNet's text side and embedded
/// control latents once, its forward, residual scaling and the transformer's adds every step. The control image's
/// VAE encode (with the encoder's load, which runs ops too), which the model does not count, is counted on its own
/// and added.
#[test]
fn a_controlnet_denoise_matches_the_model() {
    let dir = common::scratch("cost-controlnet");
    common::copy_dir(&tiny_model(), &dir);
    common::copy_dir(
        &fixtures().join("variants/controlnet/controlnet"),
        &dir.join("controlnet"),
    );
    let pipe = Pipeline::load(engine(), &dir, Default::default()).unwrap();
    let base = Request::new("a red fox in the snow")
        .size(32, 64)
        .steps(2)
        .resolution_binning(false);
    let embeddings = pipe.encode_prompt(&base).unwrap();
    let control = sana::image::read_png(&common::golden("img2img_init_32x32.png")).unwrap();
    let req = Request::from_embeddings(embeddings)
        .size(32, 64)
        .steps(2)
        .resolution_binning(false)
        .control_image(control.clone())
        .control_scale(0.5);
    pipe.engine().take();
    pipe.denoise(&req, &mut |_| Control::Continue).unwrap();
    let counted = pipe.engine().take();
    let plan = pipe.plan(&req).unwrap();

    // The pipeline loads the encoder for the call, and loading it runs ops of its own (counted with it).
    let e = engine();
    let encoder = sana::model::dc_ae::DcAeEncoder::from_dir(&e, &dir.join("vae")).unwrap();
    let pixels = sana::image::to_vae_input(&control, 32, 64).unwrap();
    encoder.encode(&e, &pixels).unwrap();
    let encode = e.take();

    let gemma = GemmaConfig::load(&dir.join("text_encoder/config.json")).unwrap();
    let dit = TransformerConfig::load(&dir.join("transformer/config.json")).unwrap();
    let net = TransformerConfig::load(&dir.join("controlnet/config.json")).unwrap();
    let f = pipe.vae_config().spatial_factor();
    let work = Workload {
        batch: 1,
        latent: (64 / f, 32 / f),
        prompt_tokens: 0,
        text_rows: plan.text_rows,
        cfg: true,
        steps: 2,
        pag_blocks: 0,
    };
    let model = StageCosts::new(&gemma, &dit, pipe.vae_config(), &work).with_controlnet(
        &net,
        dit.num_layers,
        &work,
    );
    assert_cost("ControlNet denoise", counted, model.denoise() + encode);
}
