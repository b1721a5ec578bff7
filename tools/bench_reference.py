#!/usr/bin/env python3
"""The reference for `sana-run bench`: the same variant through diffusers' SanaPipeline, timed per stage.

Dev-only (needs torch, diffusers, transformers; see tools/requirements-fixtures.txt). Run from the repository root:

    python3 tools/bench_reference.py --variant sana-1600m-1024 --steps 20            # eager, bf16
    python3 tools/bench_reference.py --variant sana-1600m-1024 --steps 20 --compile  # torch.compile
    python3 tools/bench_reference.py --model tests/fixtures/tiny-sana --device cpu --dtype fp32

`--variant` builds the published architecture with random weights (seeded, in memory; speed does not depend on the
values) and the tokenizer of tests/fixtures/tiny-sana — the one `sana-run bench --variant` uses, so both encode the
same number of tokens. Stages as `sana-run bench` reports them: text encode (`encode_prompt` with CFG and the complex
human instruction), one denoising step (median gap between step callbacks), all steps (`output_type="latent"`),
decode (`vae.decode`), total; warm-up run excluded, median of `--runs`; images/s and peak device memory
(`torch.cuda.max_memory_allocated`). Sana-Sprint variants run SanaSprintPipeline (SCM, no CFG: its guidance is an
embedding), so `--guidance` there is that embedding's value.
"""
import argparse
import inspect
import json
import os
import statistics
import time
from pathlib import Path

import torch
from diffusers import (
    AutoencoderDC,
    DPMSolverMultistepScheduler,
    SanaPipeline,
    SanaSprintPipeline,
    SanaTransformer2DModel,
    SCMScheduler,
)
from transformers import Gemma2Config, Gemma2Model, GemmaTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
# $SANA_FIXTURES where the script runs from the GPU bundle rather than the repository.
FIXTURES = Path(os.environ.get("SANA_FIXTURES", ROOT / "tests" / "fixtures"))
TOKENIZER = FIXTURES / "tiny-sana" / "tokenizer"
PROMPT = "a photo of a red fox in the snow"

# name: (width, layers, cross heads, cross head dim, sample_size, interpolation_scale, qk_norm) — the published
# table of src/inspect/variant.rs (docs/numerics/transformer.md §2.2); Sprint's names start with sana-sprint.
SMALL, LARGE, XL = (1152, 28, 16, 72), (2240, 20, 20, 112), (2240, 60, 20, 112)
VARIANTS = {
    "sana-600m-512": (*SMALL, 16, None, False),
    "sana-600m-1024": (*SMALL, 32, None, False),
    "sana-1600m-512": (*LARGE, 16, None, False),
    "sana-1600m-1024": (*LARGE, 32, None, False),
    "sana-1600m-2048": (*LARGE, 64, 1.0, False),
    "sana-1600m-4096": (*LARGE, 128, 2.0, False),
    "sana1.5-1600m-1024": (*LARGE, 32, None, True),
    "sana1.5-4800m-1024": (*XL, 32, None, True),
    "sana-sprint-600m-1024": (*SMALL, 32, None, True),
    "sana-sprint-1600m-1024": (*LARGE, 32, None, True),
}

# dc-ae-f32c32-sana-1.x (docs/numerics/dc-ae.md §2).
VAE = dict(
    in_channels=3,
    latent_channels=32,
    attention_head_dim=32,
    encoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    decoder_block_types=["ResBlock"] * 3 + ["EfficientViTBlock"] * 3,
    encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3],
    decoder_layers_per_block=[3, 3, 3, 3, 3, 3],
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,
)

# gemma-2-2b.
GEMMA = dict(
    vocab_size=256000,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256,
    attn_logit_softcapping=50.0,
    sliding_window=4096,
)

# Sana's Flow-DPM-Solver (docs/numerics/sampling.md §5).
SCHEDULER = dict(
    algorithm_type="dpmsolver++",
    final_sigmas_type="zero",
    flow_shift=3.0,
    prediction_type="flow_prediction",
    solver_order=2,
    solver_type="midpoint",
    use_flow_sigmas=True,
)


def is_sprint(name):
    return name.startswith("sana-sprint")


def synthetic_pipeline(name, device, dtype):
    width, layers, heads, head_dim, sample_size, interp, qk_norm = VARIANTS[name]
    sprint = is_sprint(name)
    torch.manual_seed(0)
    with torch.device(device):
        transformer = SanaTransformer2DModel(
            in_channels=32,
            out_channels=32,
            num_attention_heads=width // 32,
            attention_head_dim=32,
            num_layers=layers,
            num_cross_attention_heads=heads,
            cross_attention_head_dim=head_dim,
            cross_attention_dim=width,
            caption_channels=2304,
            sample_size=sample_size,
            interpolation_scale=interp,
            qk_norm="rms_norm_across_heads" if qk_norm else None,
            # Sprint's guidance embedding and trigflow time scale (src/inspect/variant.rs's config).
            guidance_embeds=sprint,
            guidance_embeds_scale=0.1,
            timestep_scale=1000.0 if sprint else 1.0,
        ).to(dtype)
        text_encoder = Gemma2Model(Gemma2Config(**GEMMA)).to(dtype)
        vae = AutoencoderDC(**VAE).to(dtype)
    tokenizer = GemmaTokenizerFast.from_pretrained(TOKENIZER)
    if sprint:
        scheduler = SCMScheduler(num_train_timesteps=1000, prediction_type="trigflow", sigma_data=0.5)
        pipe = SanaSprintPipeline(tokenizer, text_encoder, vae, transformer, scheduler)
    else:
        scheduler = DPMSolverMultistepScheduler(**SCHEDULER)
        pipe = SanaPipeline(tokenizer, text_encoder, vae, transformer, scheduler)
    return pipe, sample_size * 32


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device):
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak(device):
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def timed(device, f):
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    out = f()
    sync(device)
    return out, time.perf_counter() - start, peak(device)


@torch.inference_mode()
def run_once(pipe, args, device):
    sprint = isinstance(pipe, SanaSprintPipeline)
    # encode_prompt's own default is no instruction; the pipeline call's (and sana-run's) is Sana's complex human
    # instruction, which makes the prompt about 570 tokens instead of 300.
    chi = inspect.signature(type(pipe).__call__).parameters["complex_human_instruction"].default
    if sprint:
        encode = lambda: pipe.encode_prompt([PROMPT], device=device, complex_human_instruction=chi)  # noqa: E731
    else:
        encode = lambda: pipe.encode_prompt(  # noqa: E731
            [PROMPT] * 1,
            do_classifier_free_guidance=args.guidance > 1,
            negative_prompt="",
            num_images_per_prompt=1,  # the pipeline call repeats the given embeddings per image
            device=device,
            complex_human_instruction=chi,
        )
    (embeds, t_text, m_text) = timed(device, encode)
    marks = []

    def on_step(_pipe, _i, _t, kwargs):
        sync(device)
        marks.append(time.perf_counter())
        return kwargs

    generator = torch.Generator(device).manual_seed(0)
    common = dict(
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        num_images_per_prompt=args.batch,
        use_resolution_binning=False,
        generator=generator,
        output_type="latent",
        callback_on_step_end=on_step,
    )
    if sprint:
        prompt_embeds, prompt_mask = embeds
        # Its default intermediate time (1.3) is for 2 steps only; other counts must clear it.
        common["intermediate_timesteps"] = 1.3 if args.steps == 2 else None
        call = lambda: pipe(prompt_embeds=prompt_embeds, prompt_attention_mask=prompt_mask, **common)  # noqa: E731
    else:
        prompt_embeds, prompt_mask, negative_embeds, negative_mask = embeds
        call = lambda: pipe(  # noqa: E731
            negative_prompt=None,
            prompt_embeds=prompt_embeds,
            prompt_attention_mask=prompt_mask,
            negative_prompt_embeds=negative_embeds,
            negative_prompt_attention_mask=negative_mask,
            **common,
        )
    latents, t_denoise, m_denoise = timed(device, lambda: call().images)
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    step = statistics.median(gaps) if gaps else t_denoise / max(args.steps, 1)
    _, t_decode, m_decode = timed(
        device, lambda: pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    )
    return {
        "text_encode": (t_text, m_text),
        "step": (step, None),
        "denoise": (t_denoise, m_denoise),
        "decode": (t_decode, m_decode),
        "total": (t_text + t_denoise + t_decode, max(m or 0 for m in (m_text, m_denoise, m_decode)) or None),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--variant", choices=sorted(VARIANTS))
    src.add_argument("--model", type=Path, help="a diffusers Sana folder")
    p.add_argument("--steps", type=int, help="sampler steps (default: 20; 2 for Sana-Sprint)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--guidance", type=float, default=4.5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer and the VAE decoder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    args.steps = args.steps or (2 if args.variant and is_sprint(args.variant) else 20)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.variant:
        pipe, native = synthetic_pipeline(args.variant, args.device, dtype)
        label = f"{args.variant} (random weights)"
    else:
        model = args.model or FIXTURES / "tiny-sana"
        pipe = SanaPipeline.from_pretrained(model, torch_dtype=dtype).to(args.device)
        native = pipe.transformer.config.sample_size * pipe.vae_scale_factor
        label = str(model)
    pipe.set_progress_bar_config(disable=True)
    args.height = args.height or native
    args.width = args.width or native
    if args.compile:
        pipe.transformer = torch.compile(pipe.transformer)
        pipe.vae.decoder = torch.compile(pipe.vae.decoder)

    run_once(pipe, args, args.device)  # warm-up (and compilation), excluded
    runs = [run_once(pipe, args, args.device) for _ in range(max(args.runs, 1))]
    stages = {
        k: {
            "time_s": statistics.median(r[k][0] for r in runs),
            "peak_device_bytes": max((r[k][1] for r in runs if r[k][1] is not None), default=None),
        }
        for k in runs[0]
    }
    report = {
        "model": label,
        "engine": f"diffusers {'compiled' if args.compile else 'eager'} {args.dtype} on {args.device}",
        "height": args.height,
        "width": args.width,
        "batch": args.batch,
        "steps": args.steps,
        "guidance": args.guidance,
        "runs": len(runs),
        "stages": stages,
        "images_per_s": args.batch / stages["total"]["time_s"],
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"bench_reference: {label}, {args.width}×{args.height}, batch {args.batch}, {args.steps} steps, "
        f"guidance {args.guidance}, {report['engine']}, median of {len(runs)} runs (1 warm-up excluded)"
    )
    print(f"{'stage':<12} {'time':>12} {'peak device':>14}")
    names = {"text_encode": "text encode", "step": "one step", "denoise": "all steps", "decode": "decode", "total": "total"}
    for k, name in names.items():
        m = stages[k]["peak_device_bytes"]
        print(f"{name:<12} {stages[k]['time_s']:>10.4f} s {'-' if m is None else f'{m >> 20} MiB':>14}")
    print(f"images/s: {report['images_per_s']:.4f}")


if __name__ == "__main__":
    main()
