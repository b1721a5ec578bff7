#!/usr/bin/env python3
"""Builds tests/fixtures: tiny random-weight models in the real diffusers layout, and golden tensors from diffusers.

Run from the repository root (dev-only; pinned versions in tools/requirements-fixtures.txt):

    python3 -m venv .venv && .venv/bin/pip install -r tools/requirements-fixtures.txt
    .venv/bin/python tools/make_fixtures.py

Deterministic: every random draw comes from a seeded torch.Generator, so reruns give byte-identical files.
Every weight is redrawn after construction so that nothing is zero or the identity (the default initialisation
zeroes some layers, which would hide bugs).
"""
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel

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
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path))


def transformer(generator):
    model = SanaTransformer2DModel(
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
    redraw_(model, generator)
    model.eval()
    model.save_pretrained(MODEL / "transformer")
    return model


def transformer_golden(model, generator, name, height, width):
    """One forward pass with a padded text mask and two timesteps, every intermediate captured by hooks."""
    x = torch.randn(2, 32, height, width, generator=generator)
    text = torch.randn(2, 8, CAPTION_CHANNELS, generator=generator)
    timestep = torch.tensor([999.0, 436.0])
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
    with torch.no_grad():
        output = model(x, encoder_hidden_states=text, timestep=timestep, encoder_attention_mask=mask, return_dict=False)[0]
    for h in hooks:
        h.remove()
    for i in range(len(model.transformer_blocks)):
        # GLUMBConv returns NCHW; store it as tokens [B, N, D] like every other intermediate.
        captured[f"blocks.{i}.ff"] = captured[f"blocks.{i}.ff"].flatten(2).transpose(1, 2)
    captured.update(
        hidden_states=x, encoder_hidden_states=text, timestep=timestep, encoder_attention_mask=mask, output=output
    )
    save(captured, GOLDEN / f"transformer_{name}.safetensors")


def dpm_solver_config():
    """The scheduler the official Sana checkpoints ship (spec sampling.md §5)."""
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


def main():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    MODEL.mkdir(parents=True, exist_ok=True)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(20261124)

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

    index = {"_class_name": "SanaPipeline", "_diffusers_version": "0.40.0", "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "transformer": ["diffusers", "SanaTransformer2DModel"]}
    (MODEL / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
