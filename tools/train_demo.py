#!/usr/bin/env python3
"""Trains models/sana-shapes, the demo model `sana-run` uses without --model: a tiny Sana that draws one coloured
shape on a plain background at 64×64 from a caption such as "a red circle on the left, on a white background".

Run from the repository root, with the versions of tools/requirements-fixtures.txt, on the CPU:

    nice -n 10 .venv/bin/python tools/train_demo.py            # writes models/sana-shapes

Stages (the data are tools/shapes_dataset.py's scenes, drawn on the fly from seeded generators):
1. text encoder: a Gemma-2 of tests/fixtures/tiny-sana's shape with seeded random weights, frozen, behind the
   fixture's tokenizer (its BPE spells the shape, colour and position words in distinct pieces);
2. VAE: a 4-stage AutoencoderDC (spatial factor 8, 16 latent channels: a 64-px image is an 8×8×16 latent) trained as
   a plain autoencoder on L1 + MSE, weighted ×5 on a band about the shape's outline (edge_weights: unweighted, 400
   steps of 8 latent channels drew every shape as a rounded blob);
3. decoder refinement: the decoder alone, on the frozen encoder's latents (the encoder's weights, hence the
   transformer's latent space, do not change), same loss;
4. transformer: a SanaTransformer2DModel (linear self-attention, Mix-FFN, cross-attention to the caption) trained with
   Sana's flow-matching objective (x_t = (1-σ)·x_0 + σ·ε, target ε - x_0, timestep 1000σ) on latents of a fixed set
   of images (drawn with less jitter than the VAE's, TRANSFORMER_JITTER), conditioned on the embeddings
   SanaPipeline.encode_prompt gives each caption at inference (complex human instruction prefix, 300 tokens), with
   10% of captions replaced by the empty negative prompt so that classifier-free guidance works; the saved weights
   are an exponential moving average; the VAE's scaling_factor makes its latents unit-variance;
5. the folder is saved with SanaPipeline.save_pretrained, diffusers' own SanaPipeline draws the 100-prompt grid
   (every colour × shape × position) and tools/shape_detector.py judges it; the summary goes to the folder's
   training.json. Stages 2 and 3 print the detector's verdicts on 200 reconstructions as they go.

Stage 3 needs only the encoder of stage 2 and stage 4 only the encoder too, so on two cores they can run side by
side (how models/sana-shapes was made; each stage seeds its own generators, so the weights are those of one run):

    python tools/train_demo.py --vae-only --decoder-steps 0 --out /tmp/vae            # stage 2
    python tools/train_demo.py --vae-only --vae-of /tmp/vae --out /tmp/vae-refined &   # stage 3
    python tools/train_demo.py --vae-of /tmp/vae --decoder-steps 0 --decoder-of /tmp/vae-refined   # 1, 4, 5

Stage 4 can go on from a saved model (`--transformer-from DIR`): the transformer starts from DIR's weights (a fresh
optimizer and cosine schedule, batches from their own seed), the VAE, text encoder and latents are DIR's (checked:
the same text encoder weights and latent scaling factor), and DIR's training.json record gains the steps:

    python tools/train_demo.py --transformer-from models/sana-shapes --transformer-steps 4000 \
        --transformer-lr 5e-4 --probe-every 1000 --out /tmp/continued

A saved model can get a new decoder the same way (its encoder, hence its latents and transformer, unchanged): refine
its decoder further (`--vae-of DIR`; the record keeps the earlier refinements), then put that decoder in a copy of
DIR (`--transformer-from DIR --transformer-steps 0 --decoder-of ...`; the grid is judged again). models/sana-shapes's
present decoder is the one of commit 5b1d86e's refined 1500 steps more with edge weight 10 and latent noise 0.1:

    python tools/train_demo.py --vae-only --vae-of models/sana-shapes --decoder-steps 1500 --edge-weight 10 \
        --decoder-latent-noise 0.1 --out /tmp/vae-sharper
    python tools/train_demo.py --transformer-from models/sana-shapes --transformer-steps 0 \
        --decoder-of /tmp/vae-sharper --out /tmp/sharper

Deterministic for a given torch version and thread count (seeded generators, deterministic algorithms, 1 thread).
"""
import argparse
import inspect
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shapes_dataset as data  # noqa: E402
from shape_detector import detect  # noqa: E402

from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel  # noqa: E402
from transformers import Gemma2Config, Gemma2Model, GemmaTokenizerFast  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_TOKENIZER = ROOT / "tests" / "fixtures" / "tiny-sana" / "tokenizer"
SIDE = 64
SEED = 20261202
CHI = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
# What `sana-run` uses unless told otherwise (src/pipeline/plan.rs, src/bin/sana-run/generate.rs).
STEPS, GUIDANCE = 20, 4.5
LATENT_CHANNELS = 16
# Centre and size jitter of the transformer's drawings (the VAE's are shapes_dataset.JITTER, ±0.03 and ±5%): nearly
# one drawing per caption, so that the few latent values that make a corner or a point are the same from drawing to
# drawing (at the VAE's jitter, 1500 steps drew 37% of the grid's shapes right; at this one, 49%).
TRANSFORMER_JITTER = (0.01, 0.02)
# One thread: on the shared 2-core machine two threads ran 4–6× slower (each op waits for the busier core).
THREADS = 1


def log(start, message):
    print(f"[{time.time() - start:7.1f} s] {message}", flush=True)


def text_encoder(generator):
    """tiny-sana's Gemma-2 shape with weights N(0, 1/fan_in), norms at the identity and the two post-sublayer norms at
    ×0.5, so that each position's own token stays the largest part of its embedding (mixing with the long instruction
    prefix would otherwise drown the few words that matter)."""
    config = Gemma2Config(
        vocab_size=664, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
        layer_types=["sliding_attention", "full_attention"], attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        max_position_embeddings=2048, rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        hidden_activation="gelu_pytorch_tanh", attn_implementation="eager",
    )
    model = Gemma2Model(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)
            elif "post_attention_layernorm" in name or "post_feedforward_layernorm" in name:
                p.fill_(-0.5)
            else:
                p.zero_()
    return model.eval().requires_grad_(False)


def autoencoder(latent_channels=LATENT_CHANNELS):
    channels = [8, 16, 32, 64]
    return AutoencoderDC(
        in_channels=3, latent_channels=latent_channels, attention_head_dim=16,
        encoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
        decoder_block_types=["ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock"],
        encoder_block_out_channels=channels, decoder_block_out_channels=channels,
        encoder_layers_per_block=[1, 1, 1, 1], decoder_layers_per_block=[1, 1, 1, 1],
        encoder_qkv_multiscales=[[], [], [5], [5]], decoder_qkv_multiscales=[[], [], [5], [5]],
        upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
        decoder_act_fns="silu", scaling_factor=1.0,
    )


def transformer(layers, heads, latent_channels=LATENT_CHANNELS):
    return SanaTransformer2DModel(
        in_channels=latent_channels, out_channels=latent_channels, num_attention_heads=heads, attention_head_dim=32,
        num_layers=layers,
        num_cross_attention_heads=heads, cross_attention_head_dim=32, cross_attention_dim=32 * heads,
        caption_channels=64, mlp_ratio=2.5, sample_size=SIDE // 8, patch_size=1, interpolation_scale=1.0,
        norm_eps=1e-6, norm_elementwise_affine=False, attention_bias=False,
    )


def parameters(module):
    return sum(p.numel() for p in module.parameters())


def cosine_lr(optimizer, base, step, steps, warmup):
    lr = base * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    for group in optimizer.param_groups:
        group["lr"] = lr


def edge_weights(x, weight):
    """Per-pixel loss weights of a batch x [N, 3, H, W] in [-1, 1]: 1, plus `weight` on a band about 2 px either side
    of the shape's outline (pixels farther than 0.2 from the border's median colour are the shape). The pixel losses
    alone let the autoencoder settle on a rounded blob, every corner and point being a few pixels of the picture; the
    outline is what tells the shapes apart."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    shape = ((x - background).norm(dim=1, keepdim=True) > 0.2).float()
    band = F.max_pool2d(shape, 5, 1, 2) + F.max_pool2d(-shape, 5, 1, 2)
    return 1 + weight * band


def reconstruction_loss(y, x, weights):
    return ((y - x).abs() * weights).mean() + ((y - x) ** 2 * weights).mean()


def reconstruction_accuracy(vae, images=200):
    """Detector accuracy (colour, shape, position) on the VAE's reconstructions of `images` fixed dataset drawings."""
    rng = np.random.default_rng(SEED + 2)
    scenes = data.all_scenes()
    picks = [scenes[i] for i in rng.integers(0, len(scenes), images)]
    x = torch.from_numpy(data.batch(picks, SIDE, rng))
    with torch.no_grad():
        y = vae.decode(vae.encode(x).latent).sample
    pixels = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    hits = np.zeros(3)
    for scene, image in zip(picks, pixels):
        found = detect(image)
        if found is not None:
            hits += [found[0] == scene.colour, found[1] == scene.shape, found[2] == scene.position]
    return dict(zip(("colour", "shape", "position"), (hits / images).round(3).tolist()))


def train_autoencoder(vae, steps, batch, rng, start, edge_weight=0.0):
    scenes = data.all_scenes()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    vae.train()
    recent = []
    for step in range(steps):
        cosine_lr(optimizer, 2e-3, step, steps, warmup=50)
        picks = [scenes[i] for i in rng.integers(0, len(scenes), batch)]
        x = torch.from_numpy(data.batch(picks, SIDE, rng))
        y = vae.decode(vae.encode(x).latent).sample
        loss = reconstruction_loss(y, x, edge_weights(x, edge_weight))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(start, f"vae step {step}/{steps}: loss (weighted L1 + MSE, last 100) {np.mean(recent[-100:]):.4f}")
        if (step + 1) % 200 == 0 or step == steps - 1:
            vae.eval()
            log(start, f"vae step {step + 1}: detector on 200 reconstructions {reconstruction_accuracy(vae)}")
            vae.train()
    vae.eval().requires_grad_(False)
    return float(np.mean(recent[-100:]))


def refine_decoder(vae, steps, batch, edge_weight, start, lr=1e-3, latent_noise=0.0):
    """Trains the decoder alone on the frozen encoder's latents: the transformer's latent space stays the same (the
    encoder's weights do not change) and the pictures get sharper. `latent_noise` > 0 adds Gaussian noise of that many
    times the batch's latent standard deviation to the decoder's input (the transformer's latents are near the
    encoder's, not on them)."""
    rng = np.random.default_rng(SEED + 1)
    noise_generator = torch.Generator().manual_seed(SEED + 5)
    scenes = data.all_scenes()
    decoder = vae.decoder.requires_grad_(True)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=0.0)
    decoder.train()
    recent = []
    for step in range(steps):
        cosine_lr(optimizer, lr, step, steps, warmup=20)
        picks = [scenes[i] for i in rng.integers(0, len(scenes), batch)]
        x = torch.from_numpy(data.batch(picks, SIDE, rng))
        with torch.no_grad():
            z = vae.encode(x).latent
            if latent_noise:
                z = z + latent_noise * z.std() * torch.randn(z.shape, generator=noise_generator)
        y = vae.decode(z).sample
        loss = reconstruction_loss(y, x, edge_weights(x, edge_weight))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        recent.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(start, f"decoder step {step}/{steps}: loss (weighted L1 + MSE, last 100) {np.mean(recent[-100:]):.4f}")
        if (step + 1) % 200 == 0 or step == steps - 1:
            vae.eval()
            log(start, f"decoder step {step + 1}: detector on 200 reconstructions {reconstruction_accuracy(vae)}")
            decoder.train()
    vae.eval().requires_grad_(False)
    return float(np.mean(recent[-100:]))


def caption_embeddings(tokenizer, gemma, captions):
    """SanaPipeline.encode_prompt's embeddings and masks of `captions` (with the instruction prefix) and of the
    empty negative prompt, cut to the longest unmasked length: the cut rows are masked out of the cross-attention,
    so the transformer's output is the same with them or without."""
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=gemma, vae=None, transformer=None, scheduler=None)
    embeds, masks = [], []
    with torch.no_grad():
        for i in range(0, len(captions), 50):
            e, m, neg, neg_mask = pipe.encode_prompt(
                captions[i : i + 50], do_classifier_free_guidance=True, negative_prompt="", device="cpu",
                complex_human_instruction=CHI,
            )
            embeds.append(e)
            masks.append(m)
    embeds, masks = torch.cat(embeds), torch.cat(masks)
    rows = int(masks.sum(1).max())
    assert not masks[:, rows:].any() and not neg_mask[:, rows:].any()
    return embeds[:, :rows], masks[:, :rows], neg[:1, :rows], neg_mask[:1, :rows]


def training_latents(vae, per_scene, rng, start):
    """`per_scene` drawings of every scene at TRANSFORMER_JITTER, encoded: (latents [N, 16, 8, 8] unscaled, scene
    index [N])."""
    scenes = data.all_scenes()
    index = np.repeat(np.arange(len(scenes)), per_scene)
    latents = []
    with torch.no_grad():
        for i in range(0, len(index), 256):
            x = torch.from_numpy(data.batch([scenes[j] for j in index[i : i + 256]], SIDE, rng, TRANSFORMER_JITTER))
            latents.append(vae.encode(x).latent)
    log(start, f"encoded {len(index)} training images")
    return torch.cat(latents), torch.from_numpy(index)


def train_transformer(dit, latents, scene_index, text, steps, batch, generator, start, lr=1e-3, probe=None,
                      probe_every=0):
    """Flow matching from dit's current weights (fresh optimizer, cosine schedule with peak `lr`); every `probe_every`
    steps, probe(EMA weights) (the grid's evaluation) is logged. Leaves the EMA weights in dit."""
    embeds, masks, neg, neg_mask = text
    ema = [p.detach().clone() for p in dit.parameters()]
    optimizer = torch.optim.AdamW(dit.parameters(), lr=lr, weight_decay=0.0)
    dit.train()
    recent = []
    for step in range(steps):
        cosine_lr(optimizer, lr, step, steps, warmup=100)
        pick = torch.randint(0, len(latents), (batch,), generator=generator)
        x0 = latents[pick]
        caption = scene_index[pick]
        e, m = embeds[caption].clone(), masks[caption].clone()
        drop = torch.rand(batch, generator=generator) < 0.1
        e[drop], m[drop] = neg, neg_mask
        # σ drawn as the sampler spends its steps: uniform u shifted by the scheduler's flow_shift 3.
        u = torch.rand(batch, generator=generator)
        sigma = 3 * u / (1 + 2 * u)
        noise = torch.randn(x0.shape, generator=generator)
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise
        v = dit(xt, encoder_hidden_states=e, timestep=1000 * sigma, encoder_attention_mask=m, return_dict=False)[0]
        loss = F.mse_loss(v, noise - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        optimizer.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for a, p in zip(ema, dit.parameters()):
                a.mul_(decay).add_(p.detach(), alpha=1 - decay)
        recent.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log(start, f"transformer step {step}/{steps}: flow-matching loss (last 100) {np.mean(recent[-100:]):.4f}")
        if probe and probe_every and (step + 1) % probe_every == 0 and step != steps - 1:
            log(start, f"transformer step {step + 1}: diffusers SanaPipeline on the grid, EMA weights: {probe(ema)}")
    with torch.no_grad():
        for a, p in zip(ema, dit.parameters()):
            p.copy_(a)
    dit.eval().requires_grad_(False)
    return float(np.mean(recent[-100:]))


def grid():
    """Every colour × shape × position, backgrounds in turn."""
    backgrounds = list(data.BACKGROUNDS)
    scenes = []
    for colour in data.COLOURS:
        for shape in data.SHAPES:
            for position in data.POSITIONS:
                scenes.append(data.Scene(colour, shape, position, backgrounds[len(scenes) % len(backgrounds)]))
    return scenes


def evaluate(folder, seeds):
    """Detector accuracy per attribute of diffusers' SanaPipeline on the grid, `seeds` images per prompt (`folder`: a
    saved pipeline's folder, or a SanaPipeline), and per asked shape: {shape: {what the detector read: count}}."""
    pipe = folder if isinstance(folder, SanaPipeline) else SanaPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    scenes = grid()
    hits = {"colour": 0, "shape": 0, "position": 0}
    by_shape = {shape: {} for shape in data.SHAPES}
    total = 0
    for seed in range(seeds):
        with torch.no_grad():
            images = pipe(
                prompt=[s.caption() for s in scenes], height=SIDE, width=SIDE, num_inference_steps=STEPS,
                guidance_scale=GUIDANCE, use_resolution_binning=False, output_type="np",
                generator=[torch.Generator().manual_seed(1000 * seed + i) for i in range(len(scenes))],
            ).images
        for scene, image in zip(scenes, images):
            found = detect((image * 255).round().astype(np.uint8))
            total += 1
            read = found[1] if found is not None else "nothing"
            by_shape[scene.shape][read] = by_shape[scene.shape].get(read, 0) + 1
            if found is not None:
                hits["colour"] += found[0] == scene.colour
                hits["shape"] += found[1] == scene.shape
                hits["position"] += found[2] == scene.position
    return {k: v / total for k, v in hits.items()}, total, by_shape


def folder_mb(folder):
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def vae_stage(args, start):
    """Stages 2–3, or what an earlier sitting saved of them (`--vae-of`): (the unscaled VAE, its record)."""
    if args.vae_of:
        # A --vae-only folder holds the VAE itself; a full run's folder holds it in vae/.
        vae = AutoencoderDC.from_pretrained(args.vae_of, subfolder="vae" if (args.vae_of / "vae").is_dir() else None)
        record = json.loads((args.vae_of / "training.json").read_text())["vae"]
        vae.register_to_config(scaling_factor=1.0)
        log(start, f"vae read from {args.vae_of}: {record}")
    else:
        torch.manual_seed(SEED)
        vae = autoencoder(args.latent_channels)
        log(start, f"vae: {parameters(vae)} parameters")
        loss = train_autoencoder(
            vae, args.vae_steps, args.vae_batch, np.random.default_rng(SEED), start, args.edge_weight
        )
        record = {"steps": args.vae_steps, "batch": args.vae_batch, "latent_channels": args.latent_channels,
                  "edge_weight": args.edge_weight, "final_loss_weighted_l1_plus_mse": round(loss, 4),
                  "reconstructions_judged": reconstruction_accuracy(vae),
                  "minutes": round((time.time() - start) / 60, 1)}
    if args.decoder_steps:
        begun = time.time()
        loss = refine_decoder(vae, args.decoder_steps, args.decoder_batch, args.edge_weight, start, args.decoder_lr,
                              args.decoder_latent_noise)
        refinement = {
            "steps": args.decoder_steps, "batch": args.decoder_batch, "final_loss_weighted_l1_plus_mse": round(loss, 4),
            "reconstructions_judged": reconstruction_accuracy(vae), "minutes": round((time.time() - begun) / 60, 1)}
        if args.edge_weight != record["edge_weight"] or args.decoder_lr != 1e-3 or args.decoder_latent_noise:
            refinement.update(edge_weight=args.edge_weight, peak_lr=args.decoder_lr,
                              latent_noise=args.decoder_latent_noise)
        if "decoder_refinement" in record:
            # Refining a refined decoder (--vae-of a refined VAE): the earlier refinements stay in the record.
            refinement["from"] = str(args.vae_of)
            record.setdefault("decoder_refinement_continued", []).append(refinement)
        else:
            record["decoder_refinement"] = refinement
    return vae.eval().requires_grad_(False), record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "sana-shapes")
    parser.add_argument("--latent-channels", type=int, default=LATENT_CHANNELS)
    parser.add_argument("--edge-weight", type=float, default=4.0)
    parser.add_argument("--vae-steps", type=int, default=800)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--decoder-steps", type=int, default=1000)
    parser.add_argument("--decoder-batch", type=int, default=32)
    parser.add_argument("--decoder-lr", type=float, default=1e-3, help="stage 3's peak learning rate")
    parser.add_argument("--decoder-latent-noise", type=float, default=0.0, metavar="S",
                        help="stage 3 decodes the encoder's latents plus Gaussian noise of S times their standard "
                        "deviation")
    parser.add_argument("--images-per-caption", type=int, default=12)
    parser.add_argument("--transformer-steps", type=int, default=4000)
    parser.add_argument("--transformer-batch", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--eval-seeds", type=int, default=1)
    parser.add_argument("--vae-only", action="store_true", help="run stages 2–3 alone and save the VAE to --out")
    parser.add_argument("--vae-of", type=Path, metavar="DIR",
                        help="start from the VAE a --vae-only run saved in DIR instead of training one")
    parser.add_argument("--decoder-of", type=Path, metavar="DIR",
                        help="take the decoder from DIR (a --vae-only run that refined the same encoder's decoder, "
                        "with --vae-of this run's VAE folder): after stage 4, waiting for DIR's training.json, or "
                        "before it when DIR is complete at the start (with --transformer-from: a new decoder for a "
                        "saved model; --transformer-steps 0 keeps its transformer)")
    parser.add_argument("--transformer-from", type=Path, metavar="DIR",
                        help="continue training the transformer of a full run's folder DIR (stage 4 starts from its "
                        "weights, with a fresh optimizer and batch generator); its VAE and text encoder are kept "
                        "(stages 2-3 skipped) and the steps add to its record")
    parser.add_argument("--transformer-lr", type=float, default=1e-3, help="stage 4's peak learning rate")
    parser.add_argument("--probe-every", type=int, default=0, metavar="N",
                        help="log the grid's accuracy of the EMA weights every N transformer steps (not with a "
                        "--decoder-of still being refined: the probes would draw with the unrefined decoder)")
    args = parser.parse_args()
    previous = None
    if args.transformer_from:
        previous = json.loads((args.transformer_from / "training.json").read_text())
        args.vae_of, args.decoder_steps = args.transformer_from, 0

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(THREADS)
    start = time.time()
    if args.vae_only:
        vae, record = vae_stage(args, start)
        vae.save_pretrained(args.out)
        (args.out / "training.json").write_text(json.dumps({"seed": SEED, "vae": record}, indent=1) + "\n")
        return log(start, f"saved {args.out}: {record}")

    generator = torch.Generator().manual_seed(SEED)
    tokenizer = GemmaTokenizerFast.from_pretrained(FIXTURE_TOKENIZER)
    gemma = text_encoder(generator)
    captions = [s.caption() for s in data.all_scenes()]
    text = caption_embeddings(tokenizer, gemma, captions)
    log(start, f"encoded {len(captions)} captions: {text[0].shape[1]} text rows in use of 300")
    text_done = time.time()
    if previous:
        saved = Gemma2Model.from_pretrained(args.transformer_from / "text_encoder").state_dict()
        assert all(torch.equal(saved[k], v) for k, v in gemma.state_dict().items()), "the same text encoder"
        # The continued stage 4 draws other batches than the first one (whose generator followed the text encoder's).
        generator = torch.Generator().manual_seed(SEED + 4)

    vae, vae_record = vae_stage(args, start)
    vae_done = time.time()
    latents, scene_index = training_latents(vae, args.images_per_caption, np.random.default_rng(SEED + 3), start)
    scale = float(1 / latents.std())
    latents = latents * scale
    if previous:
        saved_scale = AutoencoderDC.load_config(args.transformer_from / "vae")["scaling_factor"]
        assert abs(scale / saved_scale - 1) < 1e-5, f"the same latents: scale {scale} against {saved_scale}"
        dit = SanaTransformer2DModel.from_pretrained(args.transformer_from / "transformer")
        log(start, f"transformer read from {args.transformer_from}: {previous['transformer']}")
    else:
        torch.manual_seed(SEED + 1)
        dit = transformer(args.layers, args.heads, args.latent_channels)
    log(start, f"transformer: {parameters(dit)} parameters; latent scaling factor {scale:.5f}")
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
        algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
        euler_at_final=False, final_sigmas_type="zero",
    )
    vae.register_to_config(scaling_factor=scale)

    def probe(weights):
        copy = SanaTransformer2DModel.from_config(dit.config)
        with torch.no_grad():
            for a, p in zip(weights, copy.parameters()):
                p.copy_(a)
        pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=gemma, vae=vae, transformer=copy.eval(),
                            scheduler=scheduler)
        accuracy, _, by_shape = evaluate(pipe, args.eval_seeds)
        return {k: round(v, 3) for k, v in accuracy.items()}, by_shape

    def take_decoder():
        """The VAE of --decoder-of (the same encoder, so the same latents) and its record."""
        refined = AutoencoderDC.from_pretrained(args.decoder_of)
        pairs = zip(refined.encoder.state_dict().values(), vae.encoder.state_dict().values())
        assert all(torch.equal(a, b) for a, b in pairs), "the same encoder"
        refined.register_to_config(scaling_factor=scale)
        log(start, f"decoder taken from {args.decoder_of}")
        return refined.eval().requires_grad_(False), json.loads((args.decoder_of / "training.json").read_text())["vae"]

    # A decoder refined before this run (a new decoder for a saved model: --transformer-from with --decoder-of) is
    # taken at once, so that the probes draw with it.
    decoder_taken = bool(args.decoder_of and (args.decoder_of / "training.json").exists())
    if decoder_taken:
        vae, vae_record = take_decoder()
    dit_loss = train_transformer(
        dit, latents, scene_index, text, args.transformer_steps, args.transformer_batch, generator, start,
        args.transformer_lr, probe, args.probe_every if decoder_taken or not args.decoder_of else 0,
    ) if args.transformer_steps else None
    dit_done = time.time()
    if args.decoder_of and not decoder_taken:
        while not (args.decoder_of / "training.json").exists():
            log(start, f"waiting for {args.decoder_of} (a --vae-only run refining the decoder beside this one)")
            time.sleep(60)
        vae, vae_record = take_decoder()
    vae.register_to_config(scaling_factor=scale)

    if args.out.exists():
        shutil.rmtree(args.out)
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=gemma, vae=vae, transformer=dit, scheduler=scheduler)
    pipe.save_pretrained(args.out, safe_serialization=True)
    accuracy, images, by_shape = evaluate(args.out, args.eval_seeds)
    log(start, f"diffusers SanaPipeline on the grid ({images} images): {accuracy}; read per asked shape {by_shape}")
    stage4 = {"steps": args.transformer_steps, "batch": args.transformer_batch, "training_images": len(latents),
              "latent_scaling_factor": round(scale, 5), "final_flow_matching_loss": dit_loss and round(dit_loss, 4),
              "minutes": round((dit_done - vae_done) / 60, 1)}
    if previous and not args.transformer_steps:
        # The saved transformer unchanged (a new decoder alone).
        stage4 = previous["transformer"]
    elif previous:
        first = {k: v for k, v in previous["transformer"].items() if k != "continued"}
        stage4 = {**first, "steps": first["steps"] + args.transformer_steps,
                  "final_flow_matching_loss": round(dit_loss, 4),
                  "minutes": round(first["minutes"] + stage4["minutes"], 1),
                  "continued": previous["transformer"].get("continued", []) + [
                      {"steps": args.transformer_steps, "peak_lr": args.transformer_lr, "batch_seed": SEED + 4,
                       "minutes": stage4["minutes"], "grid_accuracy_before": previous["diffusers_grid_accuracy"]}]}
    summary = {
        "seed": SEED,
        "torch_threads": THREADS,
        "parameters": {"text_encoder": parameters(gemma), "vae": parameters(vae), "transformer": parameters(dit)},
        "caption_embeddings_minutes":
            previous["caption_embeddings_minutes"] if previous else round((text_done - start) / 60, 1),
        "vae": vae_record,
        "transformer": stage4,
        "diffusers_grid_accuracy": {"images": images, "steps": STEPS, "guidance": GUIDANCE,
                                    **{k: round(v, 3) for k, v in accuracy.items()}, "read_per_asked_shape": by_shape},
    }
    (args.out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(start, f"saved {args.out} ({folder_mb(args.out):.1f} MB): {json.dumps(summary)}")


if __name__ == "__main__":
    main()
