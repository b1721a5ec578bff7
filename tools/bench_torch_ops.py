#!/usr/bin/env python3
"""PyTorch's CPU time for the cases of `cargo bench --bench cpu_reference_model_shapes`, so each kernel's figure is a
ratio measured in one run on one machine (docs/PERFORMANCE.md), not an absolute time on a shared one.

Dev-only (torch; see tools/requirements-fixtures.txt). Same shapes and names as the criterion bench, f32, the ops as
diffusers and transformers run them (F.linear, F.scaled_dot_product_attention, Gemma-2's eager soft-capped attention,
Sana's ReLU linear attention, nn.Conv2d), seeded random inputs; prints the median of --runs after one warm-up, in ms:

    OMP_NUM_THREADS=2 python3 tools/bench_torch_ops.py [--filter linear] [--runs 10]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def linear(rows, i, o):
    x, w, b = torch.randn(rows, i), torch.randn(o, i) * 0.02, torch.randn(o)
    return lambda: F.linear(x, w, b)


def linear_attention(tokens, heads=70, d=32):
    # diffusers' SanaLinearAttnProcessor2_0: ReLU kernels, values padded with a row of ones, two matmuls, divide.
    q, k, v = (torch.randn(2, heads, d, tokens).relu() for _ in range(3))

    def run():
        vp = F.pad(v, (0, 0, 0, 1), value=1.0)
        vk = torch.matmul(vp, k.transpose(-1, -2))
        out = torch.matmul(vk, q)
        return out[:, :, :-1] / (out[:, :, -1:] + 1e-15)

    return run


def cross_attention(heads=20, d=112, queries=1024, keys=300):
    q = torch.randn(2, heads, queries, d)
    k, v = torch.randn(2, heads, keys, d), torch.randn(2, heads, keys, d)
    return lambda: F.scaled_dot_product_attention(q, k, v)


def causal_attention(length=568, heads=8, kv_heads=4, d=256, softcap=50.0):
    # transformers' eager Gemma-2 attention: GQA repeat, scaled scores, tanh soft-cap, causal mask, softmax, · v.
    q = torch.randn(1, heads, length, d)
    k, v = torch.randn(1, kv_heads, length, d), torch.randn(1, kv_heads, length, d)
    mask = torch.full((length, length), float("-inf")).triu(1)

    def run():
        kr, vr = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
        s = torch.matmul(q, kr.transpose(-1, -2)) / 16.0
        s = torch.tanh(s / softcap) * softcap + mask
        return torch.matmul(torch.softmax(s, dim=-1), vr)

    return run


def dwconv3x3_glu(batch, side, f=5600):
    # Sana's GLUMBConv middle: depthwise 3×3 over 2F channels with bias, then x · SiLU(gate).
    x = torch.randn(batch, 2 * f, side, side)
    conv = torch.nn.Conv2d(2 * f, 2 * f, 3, 1, 1, groups=2 * f)

    def run():
        a, gate = conv(x).chunk(2, dim=1)
        return a * F.silu(gate)

    return run


def conv3x3(side, ch):
    x, conv = torch.randn(1, ch, side, side), torch.nn.Conv2d(ch, ch, 3, 1, 1)
    return lambda: conv(x)


def depthwise5x5(side, ch):
    x, conv = torch.randn(1, ch, side, side), torch.nn.Conv2d(ch, ch, 5, 1, 2, groups=ch, bias=False)
    return lambda: conv(x)


def rms_norm(rows=2048, d=2240):
    x, w = torch.randn(rows, d), torch.randn(d)
    return lambda: F.rms_norm(x, (d,), w, 1e-6)


CASES = {
    "cpu_kernels/linear/dit1600_qkvo/2048x2240->2240": lambda: linear(2048, 2240, 2240),
    "cpu_kernels/linear/dit1600_ffn_in/2048x2240->11200": lambda: linear(2048, 2240, 11200),
    "cpu_kernels/linear/dit1600_ffn_out/2048x5600->2240": lambda: linear(2048, 5600, 2240),
    "cpu_kernels/linear/dit600_qkvo/2048x1152->1152": lambda: linear(2048, 1152, 1152),
    "cpu_kernels/linear/gemma_mlp_up/568x2304->9216": lambda: linear(568, 2304, 9216),
    "cpu_kernels/linear_attention/dit1600/2x1024x70x32": lambda: linear_attention(1024),
    "cpu_kernels/linear_attention/dit1600/2x16384x70x32": lambda: linear_attention(16384),
    "cpu_kernels/cross_attention/dit1600/2x1024x300x20x112": cross_attention,
    "cpu_kernels/causal_attention/gemma/568x8/4x256": causal_attention,
    "cpu_kernels/dwconv3x3_glu/dit1600/2x32x32x11200": lambda: dwconv3x3_glu(2, 32),
    "cpu_kernels/dwconv3x3_glu/dit1600/1x128x128x11200": lambda: dwconv3x3_glu(1, 128),
    "cpu_kernels/conv3x3/dcae/256x256x512": lambda: conv3x3(256, 512),
    "cpu_kernels/conv3x3/dcae/512x512x256": lambda: conv3x3(512, 256),
    "cpu_kernels/conv3x3/dcae/1024x1024x128": lambda: conv3x3(1024, 128),
    "cpu_kernels/depthwise_conv5x5/dcae/128x128x1536": lambda: depthwise5x5(128, 1536),
    "cpu_kernels/rms_norm/dit1600/2048x2240": rms_norm,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--filter", default="", help="only the cases whose name contains this")
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, f32")
    with torch.inference_mode():
        for name, make in CASES.items():
            if args.filter not in name:
                continue
            run = make()
            run()
            times = []
            for _ in range(max(args.runs, 1)):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            print(f"{name}: {statistics.median(times) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
