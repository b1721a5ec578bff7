#!/usr/bin/env python3
"""Builds tests/fixtures: tiny random-weight models in the real diffusers layout, and golden tensors from diffusers.

Run from the repository root (dev-only; pinned versions in tools/requirements-fixtures.txt):

    python3 -m venv .venv && .venv/bin/pip install -r tools/requirements-fixtures.txt
    .venv/bin/python tools/make_fixtures.py
    .venv/bin/python tools/make_fixtures.py lora   # the LoRA fixtures alone

Deterministic: every random draw comes from a seeded torch.Generator, so reruns give byte-identical files.
Every weight is redrawn after construction so that nothing is zero or the identity (the default initialisation
zeroes some layers, which would hide bugs).
"""
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import inspect

from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SCMScheduler, FlowMatchEulerDiscreteScheduler, SanaPipeline, SanaSprintPipeline, SanaTransformer2DModel
from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
from transformers import Gemma2Config, Gemma2Model, GemmaTokenizerFast

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
MODEL = ROOT / "tiny-sana"
GOLDEN = ROOT / "golden"

# Text-encoder width the tiny transformer's caption projection takes (the tiny Gemma-2 hidden size).
CAPTION_CHANNELS = 64


def redraw_(module, generator):
    """Replaces every parameter with fresh values at a scale that keeps activations O(1)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "scale_shift_table" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=generator) / fan_in**0.5)
            elif "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))


def save(tensors, path):
    save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, str(path))


def transformer(generator, folder=MODEL, num_layers=2, **variant):
    """The tiny Sana DiT; `variant` switches on the SANA-1.5/Sprint/2K-4K features (qk_norm, guidance_embeds,
    interpolation_scale, sample_size)."""
    config = dict(
        in_channels=32,
        out_channels=32,
        num_attention_heads=2,
        attention_head_dim=32,
        num_layers=num_layers,
        num_cross_attention_heads=2,
        cross_attention_head_dim=32,
        cross_attention_dim=64,
        caption_channels=CAPTION_CHANNELS,
        mlp_ratio=2.5,
        sample_size=32,
        patch_size=1,
        norm_eps=1e-6,
        norm_elementwise_affine=False,
        attention_bias=False,
    )
    model = SanaTransformer2DModel(**(config | variant))
    redraw_(model, generator)
    model.eval()
    model.save_pretrained(folder / "transformer")
    return model


def transformer_golden(model, generator, name, height, width, timestep=(999.0, 436.0), guidance=None):
    """One forward pass with a padded text mask and two timesteps, every intermediate captured by hooks."""
    x = torch.randn(2, 32, height, width, generator=generator)
    text = torch.randn(2, 8, CAPTION_CHANNELS, generator=generator)
    timestep = torch.tensor(timestep)
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, 5:] = 0
    captured = {}

    def keep(key):
        def hook(_module, _inputs, output):
            captured[key] = output[0] if isinstance(output, tuple) else output

        return hook

    def keep_time(_module, _inputs, output):
        captured["timestep_mod"], captured["embedded_timestep"] = output

    hooks = [
        model.patch_embed.register_forward_hook(keep("patch_embed")),
        model.time_embed.register_forward_hook(keep_time),
        model.caption_norm.register_forward_hook(keep("caption")),
    ]
    for i, block in enumerate(model.transformer_blocks):
        hooks += [
            block.register_forward_hook(keep(f"blocks.{i}")),
            block.attn1.register_forward_hook(keep(f"blocks.{i}.attn1")),
            block.attn2.register_forward_hook(keep(f"blocks.{i}.attn2")),
            block.ff.register_forward_hook(keep(f"blocks.{i}.ff")),
        ]
    extra = {} if guidance is None else {"guidance": torch.tensor(guidance)}
    with torch.no_grad():
        output = model(
            x, encoder_hidden_states=text, timestep=timestep, encoder_attention_mask=mask, return_dict=False, **extra
        )[0]
    for h in hooks:
        h.remove()
    for i in range(len(model.transformer_blocks)):
        # GLUMBConv returns NCHW; store it as tokens [B, N, D] like every other intermediate.
        captured[f"blocks.{i}.ff"] = captured[f"blocks.{i}.ff"].flatten(2).transpose(1, 2)
    captured.update(
        hidden_states=x, encoder_hidden_states=text, timestep=timestep, encoder_attention_mask=mask, output=output, **extra
    )
    save(captured, GOLDEN / f"transformer_{name}.safetensors")


def transformer_variants(generator):
    """One-block models with each variant feature, in tests/fixtures/variants/<name>/transformer."""
    variants = ROOT / "variants"
    qk = transformer(generator, variants / "qk-norm", num_layers=1, qk_norm="rms_norm_across_heads")
    transformer_golden(qk, generator, "qk_norm", 4, 4)
    # 4K-style position embedding: base grid 8 (sample_size), interpolation scale 2, on a stretched 3×5 grid.
    pe = transformer(generator, variants / "pos-embed", num_layers=1, sample_size=8, interpolation_scale=2.0)
    transformer_golden(pe, generator, "pos_embed", 3, 5)
    sprint = transformer(
        generator, variants / "sprint", num_layers=1, qk_norm="rms_norm_across_heads", guidance_embeds=True
    )
    transformer_golden(sprint, generator, "sprint", 4, 4, timestep=(0.9999, 0.5), guidance=(0.45, 0.45))


def dpm_solver_config():
    """The scheduler the official Sana checkpoints ship (docs/numerics/sampling.md §5)."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        euler_at_final=False,
        final_sigmas_type="zero",
    )


def scheduler_trace(scheduler, steps, name, generator):
    """sigmas, timesteps and a step trace with random velocities."""
    scheduler.set_timesteps(steps)
    out = {"sigmas": scheduler.sigmas.float(), "timesteps": scheduler.timesteps}
    sample = torch.randn(1, 32, 4, 4, generator=generator)
    out["sample"] = sample
    for i, t in enumerate(scheduler.timesteps):
        velocity = torch.randn(1, 32, 4, 4, generator=generator)
        sample = scheduler.step(velocity, t, sample).prev_sample
        out[f"model_output.{i}"] = velocity
        out[f"prev_sample.{i}"] = sample
    save(out, GOLDEN / f"{name}.safetensors")


# The complex human instruction exactly as SanaPipeline.__call__ defaults to it.
CHI = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default

TOKENIZER_TEXTS = [
    "a cat sleeping",
    "A busy city street at dusk, with glowing lamps and a double-decker bus.",
    "",
    "   Spaces   around   ",
    "café crème brûlée, naïve façade",
    "東京の夜景 and 🦊🌲 emoji",
    "<bos> literal special token",
    "\n".join(CHI) + "a red fox in the snow",
]


def tokenizer():
    """A small Gemma-style tokenizer: byte-fallback BPE, spaces as ▁, no dummy prefix, <bos> prepended."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    corpus = ["\n".join(CHI)] + CHI + TOKENIZER_TEXTS[:2] * 4 + [
        "a small fluffy white cat curled up in a round shape on a warm sunny windowsill",
        "the quick brown fox jumps over the lazy dog while red flowers bloom",
        "photograph of a mountain lake at sunrise with mist and pine trees",
    ]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=700, max_token_length=6, special_tokens=specials + byte_tokens, show_progress=False)
    trainer_tok.train_from_iterator(corpus, trainer)
    trained = json.loads(trainer_tok.to_str())
    # Gemma's layout: specials first, then the byte pieces, then the merged pieces.
    vocab = {t: i for i, t in enumerate(specials + byte_tokens)}
    for piece in sorted(trained["model"]["vocab"], key=trained["model"]["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["model"]["merges"]],
            unk_token="<unk>",
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    tok.add_special_tokens(specials)
    fast = GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>", add_bos_token=True, add_eos_token=False, padding_side="left")
    fast.save_pretrained(MODEL / "tokenizer")
    return GemmaTokenizerFast.from_pretrained(MODEL / "tokenizer")


def text_encoder(vocab_size, generator):
    """Gemma-2 with one sliding (window 4) and one global layer, query_pre_attn_scalar ≠ head_dim and a soft-cap low
    enough that random-weight logits cross it (the real model's 50 would never be reached here)."""
    config = Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=24,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        attn_logit_softcapping=5.0,
        final_logit_softcapping=30.0,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        hidden_activation="gelu_pytorch_tanh",
        attn_implementation="eager",
    )
    model = Gemma2Model(config)
    redraw_(model, generator)
    with torch.no_grad():
        for layer in model.layers:
            # large q/k so that attention logits exceed the soft-cap
            layer.self_attn.q_proj.weight.mul_(4.0)
            layer.self_attn.k_proj.weight.mul_(4.0)
    model.eval()
    model.save_pretrained(MODEL / "text_encoder")
    model.save_pretrained(ROOT / "sharded-text-encoder", max_shard_size="100KB")
    return model


def text_encoder_golden(model, tok):
    tok.padding_side = "right"
    batch = tok([TOKENIZER_TEXTS[1], TOKENIZER_TEXTS[0]], padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = model(batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    tensors = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "last_hidden_state": out.last_hidden_state}
    for i, h in enumerate(out.hidden_states):
        tensors[f"hidden_states.{i}"] = h
    save(tensors, GOLDEN / "text_encoder.safetensors")


def tokenizer_cases(tok):
    cases = [{"text": t, "ids": tok(t).input_ids} for t in TOKENIZER_TEXTS]
    (GOLDEN / "tokenizer_cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")


def encode_prompt_goldens(tok, text_encoder_model):
    pipe = SanaPipeline(tokenizer=tok, text_encoder=text_encoder_model, vae=None, transformer=None, scheduler=None)
    cases = {
        "chi": (["A Cat Sleeping  ", "東京の夜景 🦊"], CHI),
        "no_chi": (["A Cat Sleeping  ", " ".join(["a very long prompt"] * 120)], None),
    }
    for name, (prompts, chi) in cases.items():
        with torch.no_grad():
            embeds, mask, neg, neg_mask = pipe.encode_prompt(prompts, do_classifier_free_guidance=True, negative_prompt="", device="cpu", complex_human_instruction=chi)
        save(
            {"prompt_embeds": embeds, "prompt_attention_mask": mask, "negative_prompt_embeds": neg, "negative_prompt_attention_mask": neg_mask},
            GOLDEN / f"encode_prompt_{name}.safetensors",
        )
        (GOLDEN / f"encode_prompt_{name}.json").write_text(json.dumps({"prompts": prompts, "negative_prompt": "", "complex_human_instruction": chi is not None, "max_sequence_length": 300}, indent=1, ensure_ascii=False) + "\n")


def vae(generator):
    """The dc-ae-f32c32-sana design at three stages (spatial factor 4 instead of 32), head dim 8 so that a 2×2 latent
    takes diffusers' quadratic-attention path at the deepest stage (h·w ≤ head dim) while larger ones take the linear
    path."""
    model = AutoencoderDC(
        in_channels=3,
        latent_channels=32,
        attention_head_dim=8,
        encoder_block_types=["ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
        decoder_block_types=["ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
        encoder_block_out_channels=[16, 32, 64],
        decoder_block_out_channels=[16, 32, 64],
        encoder_layers_per_block=[1, 1, 1],
        decoder_layers_per_block=[1, 1, 2],
        encoder_qkv_multiscales=[[], [5], [5]],
        decoder_qkv_multiscales=[[], [5], [5]],
        upsample_block_type="interpolate",
        downsample_block_type="Conv",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    redraw_(model, generator)
    model.eval()
    model.save_pretrained(MODEL / "vae")
    return model


def vae_golden(model, generator, name, height, width):
    """`vae.decode(latent)` (no scaling-factor division: the pipeline divides before calling), with the output of
    every decoder stage."""
    latent = torch.randn(1, 32, height, width, generator=generator)
    captured = {}
    decoder = model.decoder
    stages = {"decoder.conv_in": decoder.conv_in, "decoder.norm_out": decoder.norm_out}
    stages.update({f"decoder.up_blocks.{i}": block for i, block in enumerate(decoder.up_blocks)})
    hooks = [m.register_forward_hook(lambda _m, _i, out, key=key: captured.__setitem__(key, out)) for key, m in stages.items()]
    with torch.no_grad():
        sample = model.decode(latent).sample
    for h in hooks:
        h.remove()
    captured.update(latent=latent, sample=sample)
    save(captured, GOLDEN / f"vae_decode_{name}.safetensors")


def vae_encode_golden(model, name, height, width):
    """`vae.encode(image).latent` (unscaled) with the output of conv_in and every encoder stage. The image comes from
    its own generator so that adding this golden left every earlier fixture unchanged."""
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(20261201)) * 2 - 1
    captured = {}
    encoder = model.encoder
    stages = {"encoder.conv_in": encoder.conv_in}
    stages.update({f"encoder.down_blocks.{i}": block for i, block in enumerate(encoder.down_blocks)})
    hooks = [m.register_forward_hook(lambda _m, _i, out, key=key: captured.__setitem__(key, out)) for key, m in stages.items()]
    with torch.no_grad():
        latent = model.encode(image).latent
    for h in hooks:
        h.remove()
    captured.update(image=image, latent=latent)
    save(captured, GOLDEN / f"vae_encode_{name}.safetensors")


def vae_tiled_golden(model):
    """`vae.decode` with tiling on (32-px tiles at a 24-px stride: 8-latent tiles, 8-px blends, edge tiles of 4 and 1
    latent pixels) and off, on a 10×13 latent from its own generator."""
    latent = torch.randn(1, 32, 10, 13, generator=torch.Generator().manual_seed(20261203))
    with torch.no_grad():
        untiled = model.decode(latent).sample
        model.enable_tiling(tile_sample_min_height=32, tile_sample_min_width=32, tile_sample_stride_height=24, tile_sample_stride_width=24)
        tiled = model.decode(latent).sample
        model.disable_tiling()
    save({"latent": latent, "tiled": tiled, "untiled": untiled}, GOLDEN / "vae_decode_tiled.safetensors")


def sprint_pipeline_goldens(tok, gemma, autoencoder):
    """SanaSprintPipeline runs (1 and 2 steps, binning off, explicit latents) with the variants/sprint transformer, the
    tiny text encoder and VAE and an SCMScheduler. Each step draws one noise tensor from the generator; the draws are
    replayed from a second generator with the same seed and stored as `noise.{i}` so that a port can inject them."""
    dit = SanaTransformer2DModel.from_pretrained(ROOT / "variants" / "sprint" / "transformer")
    scheduler = SCMScheduler(num_train_timesteps=1000, prediction_type="trigflow", sigma_data=0.5)
    pipe = SanaSprintPipeline(tokenizer=tok, text_encoder=gemma, vae=autoencoder, transformer=dit, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    for steps in (1, 2):
        seed = 20261202 + steps
        latents = torch.randn(1, 32, 8, 8, generator=torch.Generator().manual_seed(seed + 100))
        replay = torch.Generator().manual_seed(seed)
        noise = {f"noise.{i}": torch.randn(1, 32, 8, 8, generator=replay) for i in range(steps)}
        kwargs = dict(prompt="a neon sign in the rain", height=32, width=32, num_inference_steps=steps, guidance_scale=4.5, latents=latents.clone(), use_resolution_binning=False)
        if steps != 2:
            kwargs["intermediate_timesteps"] = None
        with torch.no_grad():
            final = pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="latent").images
            kwargs["latents"] = latents.clone()
            image = pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="np").images
        image = torch.from_numpy(image)
        image_u8 = torch.from_numpy((image.numpy() * 255).round().astype("uint8"))
        save({"latents": latents, "final_latents": final, "image": image, "image_u8": image_u8, **noise}, GOLDEN / f"sprint_pipeline_{steps}step.safetensors")


def pipeline_goldens(tok, gemma, dit, autoencoder, scheduler, generator):
    """Full SanaPipeline runs from explicit initial latents, binning off."""
    pipe = SanaPipeline(tokenizer=tok, text_encoder=gemma, vae=autoencoder, transformer=dit, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    runs = {
        "square_4steps_cfg_chi": dict(prompt="A red fox in the snow", height=32, width=32, num_inference_steps=4, guidance_scale=4.5, chi=True),
        "nonsquare_20steps_cfg_nochi": dict(prompt="a lighthouse at night", height=64, width=32, num_inference_steps=20, guidance_scale=4.5, chi=False),
        "square_2steps_nocfg_chi": dict(prompt="a bowl of cherries", height=32, width=32, num_inference_steps=2, guidance_scale=1.0, chi=True),
    }
    for name, run in runs.items():
        latents = torch.randn(1, 32, run["height"] // 4, run["width"] // 4, generator=generator)
        kwargs = dict(
            prompt=run["prompt"],
            height=run["height"],
            width=run["width"],
            num_inference_steps=run["num_inference_steps"],
            guidance_scale=run["guidance_scale"],
            latents=latents.clone(),
            use_resolution_binning=False,
        )
        if not run["chi"]:
            kwargs["complex_human_instruction"] = None
        with torch.no_grad():
            final = pipe(**kwargs, output_type="latent").images
            kwargs["latents"] = latents.clone()
            image = pipe(**kwargs, output_type="np").images
        image = torch.from_numpy(image)
        image_u8 = torch.from_numpy((image.numpy() * 255).round().astype("uint8"))
        save({"latents": latents, "final_latents": final, "image": image, "image_u8": image_u8}, GOLDEN / f"pipeline_{name}.safetensors")
        meta = {k: v for k, v in run.items()} | {"negative_prompt": "", "use_resolution_binning": False, "max_sequence_length": 300}
        (GOLDEN / f"pipeline_{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def scm_trace(steps, name, generator, **schedule):
    """SCMScheduler (Sana-Sprint): TrigFlow times and a step trace. `step` draws its noise from the generator; the
    draw is replayed from a copy of the generator state first so the trace can record it."""
    scheduler = SCMScheduler(num_train_timesteps=1000, prediction_type="trigflow", sigma_data=0.5)
    scheduler.set_timesteps(steps, **schedule)
    out = {"timesteps": scheduler.timesteps.float()}
    sample = torch.randn(1, 32, 4, 4, generator=generator)
    out["sample"] = sample
    for i, t in enumerate(scheduler.timesteps[:-1]):
        model_output = torch.randn(1, 32, 4, 4, generator=generator)
        state = generator.get_state()
        noise = torch.randn(1, 32, 4, 4, generator=generator)
        generator.set_state(state)
        sample, x0 = scheduler.step(model_output, t, sample, generator=generator, return_dict=False)
        out.update({f"model_output.{i}": model_output, f"noise.{i}": noise, f"prev_sample.{i}": sample, f"pred_x0.{i}": x0})
    save(out, GOLDEN / f"{name}.safetensors")


# Every Linear family of the DiT and the Mix-FFN's 1x1 convolutions; `conv_depth` (3x3) stays out.
LORA_TARGETS = r".*(attn[12]\.(to_q|to_k|to_v|to_out\.0)|caption_projection\.linear_[12]|time_embed\.emb\.timestep_embedder\.linear_[12]|time_embed\.linear|ff\.conv_inverted|ff\.conv_point)$"
LORA_ADAPTERS = {
    # alpha != r, with per-module rank and alpha patterns (written into lora_adapter_metadata).
    "lora_a": dict(r=4, lora_alpha=6, target_modules=LORA_TARGETS, rank_pattern={"attn2.to_k": 2}, alpha_pattern={"ff.conv_point": 3}),
    # A second adapter on a subset of the layers, overlapping the first.
    "lora_b": dict(r=2, lora_alpha=1, target_modules=r".*(attn1\.to_v|attn2\.to_out\.0|ff\.conv_inverted|time_embed\.linear)$"),
}
# (adapter weights given to set_adapters, golden name)
LORA_RUNS = [({"lora_a": 1.0}, "pipeline_lora_a"), ({"lora_a": 0.8, "lora_b": -1.5}, "pipeline_lora_ab")]


def lora_fixtures():
    """Two random LoRA adapters for tiny-sana saved by SanaPipeline.save_lora_weights (diffusers/PEFT layout with
    lora_adapter_metadata), and SanaPipeline's final latents of the golden 4-step CFG request with them loaded by
    load_lora_weights + set_adapters. Runs on the saved tiny model with its own generator, so every other fixture
    is unchanged."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    generator = torch.Generator().manual_seed(20261202)
    folder = ROOT / "lora"
    folder.mkdir(parents=True, exist_ok=True)
    for name, config in LORA_ADAPTERS.items():
        dit = SanaTransformer2DModel.from_pretrained(MODEL / "transformer")
        config = LoraConfig(init_lora_weights=False, **config)
        dit.add_adapter(config, adapter_name=name)
        with torch.no_grad():
            for key, p in dit.named_parameters():
                if "lora_" in key:
                    # B is zero at PEFT's initialisation, which would hide every bug; scale keeps the delta O(0.1 W).
                    p.copy_(torch.randn(p.shape, generator=generator) * 0.3 / p[0].numel() ** 0.5)
        layers = get_peft_model_state_dict(dit, adapter_name=name)
        SanaPipeline.save_lora_weights(folder, transformer_lora_layers=layers, transformer_lora_adapter_metadata=config.to_dict(), weight_name=f"{name}.safetensors")

    base = load_file(str(GOLDEN / "pipeline_square_4steps_cfg_chi.safetensors"))
    run = json.loads((GOLDEN / "pipeline_square_4steps_cfg_chi.json").read_text())
    for weights, golden_name in LORA_RUNS:
        pipe = SanaPipeline.from_pretrained(MODEL)
        pipe.set_progress_bar_config(disable=True)
        for name in weights:
            pipe.load_lora_weights(folder / f"{name}.safetensors", adapter_name=name)
        pipe.set_adapters(list(weights), list(weights.values()))
        latents = base["latents"]
        with torch.no_grad():
            final = pipe(prompt=run["prompt"], height=run["height"], width=run["width"], num_inference_steps=run["num_inference_steps"], guidance_scale=run["guidance_scale"], latents=latents.clone(), use_resolution_binning=False, output_type="latent").images
        save({"latents": latents, "final_latents": final}, GOLDEN / f"{golden_name}.safetensors")
        (GOLDEN / f"{golden_name}.json").write_text(json.dumps(run | {"adapters": weights}, indent=1) + "\n")


# (golden name, init PNG (width, height), generation (width, height), steps, strength): the default strength with the
# whole 2-step schedule, a strength that starts at the intermediate time, and 4 linspace steps entered half-way with an
# init image that PIL's Lanczos resizes down to a non-square generation size. (Pillow 13.0 runs some resizes that widen
# and shorten an image, e.g. 45×37 → 64×32, vertical pass first, unlike the horizontal-first order of its
# Resample.c that src/image/input.rs follows; this one it runs horizontal first.)
IMG2IMG_RUNS = [
    ("sprint_img2img_2step_s0.6", (32, 32), (32, 32), 2, 0.6),
    ("sprint_img2img_2step_s0.4", (32, 32), (32, 32), 2, 0.4),
    ("sprint_img2img_4step_s0.5_resized", (90, 74), (64, 32), 4, 0.5),
]


def img2img_fixtures():
    """SanaSprintImg2ImgPipeline runs on the Sprint pipeline of sprint_pipeline_goldens (from the saved tiny model), from
    random 8-bit RGB PNGs (tests/fixtures/golden/img2img_init_WxH.png) opened with PIL as a user would. The generator
    draws the initial noise (`prepare_latents`), then one tensor per step; both are replayed from a second generator
    and stored (`noise`, `noise.{i}`) with the preprocessed image (`image`, `VaeImageProcessor.preprocess`), so a
    port can inject them. Its own generators: every other fixture is unchanged."""
    import numpy as np
    from PIL import Image
    from diffusers import SanaSprintImg2ImgPipeline

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for name, (iw, ih), (w, h), steps, strength in IMG2IMG_RUNS:
        png = GOLDEN / f"img2img_init_{iw}x{ih}.png"
        if not png.exists():
            pixels = torch.Generator().manual_seed(20261205 + 1000 * iw + ih)
            array = torch.randint(0, 256, (ih, iw, 3), generator=pixels, dtype=torch.uint8).numpy()
            Image.fromarray(array, mode="RGB").save(png)
        pipe = SanaSprintImg2ImgPipeline(
            tokenizer=GemmaTokenizerFast.from_pretrained(MODEL / "tokenizer"),
            text_encoder=Gemma2Model.from_pretrained(MODEL / "text_encoder", attn_implementation="eager"),
            vae=AutoencoderDC.from_pretrained(MODEL / "vae"),
            transformer=SanaTransformer2DModel.from_pretrained(ROOT / "variants" / "sprint" / "transformer"),
            scheduler=SCMScheduler(num_train_timesteps=1000, prediction_type="trigflow", sigma_data=0.5),
        )
        pipe.set_progress_bar_config(disable=True)
        init = Image.open(png)
        seed = 20261206 + steps
        kwargs = dict(prompt="a neon sign in the rain", image=init, strength=strength, height=h, width=w, num_inference_steps=steps, guidance_scale=4.5, use_resolution_binning=False)
        if steps != 2:
            kwargs["intermediate_timesteps"] = None
        with torch.no_grad():
            final = pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="latent").images
            image = pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="np").images
            prepared = pipe.prepare_image(init, w, h, "cpu", torch.float32)
        run_steps = len(pipe.scheduler.timesteps) - 1 - (pipe.scheduler.begin_index or 0)
        replay = torch.Generator().manual_seed(seed)
        shape = (1, 32, h // 4, w // 4)
        noise = {"noise": torch.randn(shape, generator=replay)}
        noise.update({f"noise.{i}": torch.randn(shape, generator=replay) for i in range(run_steps)})
        image = torch.from_numpy(image)
        image_u8 = torch.from_numpy((image.numpy() * 255).round().astype("uint8"))
        save({"image": prepared, "final_latents": final, "image_u8": image_u8, **noise}, GOLDEN / f"{name}.safetensors")
        meta = {"prompt": kwargs["prompt"], "init_image": png.name, "width": w, "height": h, "num_inference_steps": steps, "strength": strength, "guidance_scale": 4.5, "steps_run": run_steps, "use_resolution_binning": False}
        (GOLDEN / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


# (golden name, pag_applied_layers (None: the pipeline's default), guidance, pag scale, adaptive scale): PAG on a chosen
# layer under CFG ([uncond, cond, perturbed]), and on the default layer without CFG ([cond, perturbed]) with adaptive
# scaling: 3 − 0.008·(1000 − t) at t = 999, 899, 749, 499 is 2.992, 2.192, 0.992, then −1.008, clamped to 0.
PAG_RUNS = [
    ("pag_cfg_layer1", ["transformer_blocks.1"], 4.5, 3.0, 0.0),
    ("pag_nocfg_adaptive", None, 1.0, 3.0, 0.008),
]


def pag_fixtures():
    """SanaPAGPipeline runs on the saved tiny model (4 steps of its DPM-Solver, 32×32, binning off) from the initial
    latents of `pipeline_square_4steps_cfg_chi`, so every other fixture is unchanged."""
    from diffusers import SanaPAGPipeline

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    base = load_file(str(GOLDEN / "pipeline_square_4steps_cfg_chi.safetensors"))
    for name, layers, guidance, pag_scale, adaptive in PAG_RUNS:
        extra = {} if layers is None else {"pag_applied_layers": layers}
        pipe = SanaPAGPipeline(
            tokenizer=GemmaTokenizerFast.from_pretrained(MODEL / "tokenizer"),
            text_encoder=Gemma2Model.from_pretrained(MODEL / "text_encoder", attn_implementation="eager"),
            vae=AutoencoderDC.from_pretrained(MODEL / "vae"),
            transformer=SanaTransformer2DModel.from_pretrained(MODEL / "transformer"),
            scheduler=DPMSolverMultistepScheduler.from_pretrained(MODEL / "scheduler"),
            **extra,
        )
        pipe.set_progress_bar_config(disable=True)
        kwargs = dict(prompt="A red fox in the snow", height=32, width=32, num_inference_steps=4, guidance_scale=guidance, pag_scale=pag_scale, pag_adaptive_scale=adaptive, use_resolution_binning=False)
        with torch.no_grad():
            final = pipe(**kwargs, latents=base["latents"].clone(), output_type="latent").images
            image = pipe(**kwargs, latents=base["latents"].clone(), output_type="np").images
        image = torch.from_numpy(image)
        image_u8 = torch.from_numpy((image.numpy() * 255).round().astype("uint8"))
        save({"latents": base["latents"], "final_latents": final, "image_u8": image_u8}, GOLDEN / f"{name}.safetensors")
        meta = {k: v for k, v in kwargs.items()} | {"pag_applied_layers": layers, "negative_prompt": ""}
        (GOLDEN / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


# (golden name, control PNG, guidance, conditioning scale): under CFG with a control image at the generation size, and
# without CFG with one PIL resizes (Lanczos) to it.
CONTROLNET_RUNS = [
    ("controlnet_cfg", "img2img_init_32x32.png", 4.5, 0.7),
    ("controlnet_nocfg_resized", "img2img_init_90x74.png", 1.0, 1.0),
]


def controlnet_fixtures():
    """A tiny random SanaControlNetModel for tiny-sana (2 blocks, every weight redrawn: zero_module's zeros would hide
    every bug), saved as SanaControlNetPipeline.save_pretrained writes its controlnet/ folder, in
    variants/controlnet/controlnet; and SanaControlNetPipeline runs with it (4 DPM-Solver steps, 32×32, binning off)
    from the initial latents of `pipeline_square_4steps_cfg_chi` and the img2img PNGs. Its own generator: every
    other fixture is unchanged."""
    from PIL import Image
    from diffusers import SanaControlNetModel, SanaControlNetPipeline

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(20261207)
    controlnet = SanaControlNetModel(
        in_channels=32,
        out_channels=32,
        num_attention_heads=2,
        attention_head_dim=32,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=32,
        cross_attention_dim=64,
        caption_channels=CAPTION_CHANNELS,
        mlp_ratio=2.5,
        sample_size=32,
        patch_size=1,
        norm_eps=1e-6,
        norm_elementwise_affine=False,
        attention_bias=False,
    )
    redraw_(controlnet, generator)
    controlnet.eval()
    controlnet.save_pretrained(ROOT / "variants" / "controlnet" / "controlnet")
    base = load_file(str(GOLDEN / "pipeline_square_4steps_cfg_chi.safetensors"))
    for name, png, guidance, scale in CONTROLNET_RUNS:
        pipe = SanaControlNetPipeline(
            tokenizer=GemmaTokenizerFast.from_pretrained(MODEL / "tokenizer"),
            text_encoder=Gemma2Model.from_pretrained(MODEL / "text_encoder", attn_implementation="eager"),
            vae=AutoencoderDC.from_pretrained(MODEL / "vae"),
            transformer=SanaTransformer2DModel.from_pretrained(MODEL / "transformer"),
            controlnet=SanaControlNetModel.from_pretrained(ROOT / "variants" / "controlnet" / "controlnet"),
            scheduler=DPMSolverMultistepScheduler.from_pretrained(MODEL / "scheduler"),
        )
        pipe.set_progress_bar_config(disable=True)
        kwargs = dict(prompt="A red fox in the snow", control_image=Image.open(GOLDEN / png), controlnet_conditioning_scale=scale, height=32, width=32, num_inference_steps=4, guidance_scale=guidance, use_resolution_binning=False)
        with torch.no_grad():
            final = pipe(**kwargs, latents=base["latents"].clone(), output_type="latent").images
            image = pipe(**kwargs, latents=base["latents"].clone(), output_type="np").images
        image = torch.from_numpy(image)
        image_u8 = torch.from_numpy((image.numpy() * 255).round().astype("uint8"))
        save({"latents": base["latents"], "final_latents": final, "image_u8": image_u8}, GOLDEN / f"{name}.safetensors")
        meta = {k: v for k, v in kwargs.items() if k != "control_image"} | {"control_image": png, "negative_prompt": ""}
        (GOLDEN / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    MODEL.mkdir(parents=True, exist_ok=True)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(20261124)

    tok = tokenizer()
    gemma = text_encoder(len(tok), generator)
    text_encoder_golden(gemma, tok)
    tokenizer_cases(tok)
    encode_prompt_goldens(tok, gemma)

    model = transformer(generator)
    transformer_golden(model, generator, "square", 4, 4)
    transformer_golden(model, generator, "nonsquare", 3, 5)

    scheduler = dpm_solver_config()
    scheduler.save_pretrained(MODEL / "scheduler")
    for steps in (2, 4, 20):
        scheduler_trace(DPMSolverMultistepScheduler.from_config(scheduler.config), steps, f"scheduler_dpm_shift3_n{steps}", generator)
        scheduler_trace(FlowMatchEulerDiscreteScheduler(shift=3.0), steps, f"scheduler_euler_shift3_n{steps}", generator)
    shifted = DPMSolverMultistepScheduler.from_config(scheduler.config, flow_shift=6.0)
    scheduler_trace(shifted, 20, "scheduler_dpm_shift6_n20", generator)

    autoencoder = vae(generator)
    vae_golden(autoencoder, generator, "square", 4, 4)
    vae_golden(autoencoder, generator, "nonsquare", 3, 5)
    vae_golden(autoencoder, generator, "quadratic", 2, 2)
    pipeline_goldens(tok, gemma, model, autoencoder, DPMSolverMultistepScheduler.from_config(scheduler.config), generator)
    transformer_variants(generator)
    scm_trace(2, "scheduler_scm_n2", generator)
    scm_trace(1, "scheduler_scm_n1", generator, intermediate_timesteps=None)
    scm_trace(4, "scheduler_scm_n4", generator, intermediate_timesteps=None)
    vae_encode_golden(autoencoder, "nonsquare", 16, 20)
    sprint_pipeline_goldens(tok, gemma, autoencoder)
    vae_tiled_golden(autoencoder)
    lora_fixtures()

    index = {"_class_name": "SanaPipeline", "_diffusers_version": "0.40.0", "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "text_encoder": ["transformers", "Gemma2Model"], "tokenizer": ["transformers", "GemmaTokenizerFast"], "transformer": ["diffusers", "SanaTransformer2DModel"], "vae": ["diffusers", "AutoencoderDC"]}
    (MODEL / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    # From the saved models, each with its own generators: added after the rest, so they leave it unchanged.
    img2img_fixtures()
    pag_fixtures()
    controlnet_fixtures()


if __name__ == "__main__":
    # `make_fixtures.py lora` rebuilds the LoRA fixtures alone, from the tiny model already on disk.
    # `make_fixtures.py img2img` the Sana-Sprint image-to-image goldens alone; `pag` the PAG goldens alone;
    # `controlnet` the tiny ControlNet and its goldens alone.
    {"lora": lora_fixtures, "img2img": img2img_fixtures, "pag": pag_fixtures, "controlnet": controlnet_fixtures}.get(sys.argv[1] if sys.argv[1:] else None, main)()
