#!/usr/bin/env python3
"""Our CPU engine beside diffusers on this machine, per stage, in one command.

Runs `sana-run bench --engine cpu --json` and `tools/bench_reference.py --device cpu --dtype fp32 --json` (the same
variant, synthetic/random weights of the same shapes, one warm-up each, the same thread count) one after the other,
for --rounds rounds, alternating which goes first so that a shared machine's drift falls on both sides. Prints, per
stage, each side's median time, the median of the per-round ratios ours ÷ diffusers (below 1: ours is faster) with
their range, and each side's peak host memory (the max RSS of its process, from wait4).

Run it with the Python that has diffusers (tools/requirements-fixtures.txt), after `cargo build --release --features
cli`:

    /tmp/venv/bin/python tools/compare_cpu.py --variant sana-600m-512 --steps 1 --rounds 3
    /tmp/venv/bin/python tools/compare_cpu.py --variant sana-sprint-600m-1024 --steps 2 --height 512 --width 512
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = [("text_encode", "text encode"), ("step", "one step"), ("denoise", "all steps"), ("decode", "decode"),
          ("total", "total")]


def run(cmd, env):
    """(the JSON report a command prints last, its max RSS in bytes)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"compare_cpu: {' '.join(map(str, cmd))} exited with {proc.returncode}")
    report = next((json.loads(line) for line in reversed(out.splitlines()) if line.startswith("{")), None)
    if report is None:
        sys.exit(f"compare_cpu: {' '.join(map(str, cmd))} printed no JSON report")
    return report, usage.ru_maxrss * 1024


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--sana-run", type=Path, default=ROOT / "target" / "release" / "sana-run")
    args = p.parse_args()

    common = ["--variant", args.variant, "--steps", str(args.steps), "--guidance", str(args.guidance), "--json"]
    for flag in ("height", "width"):
        if getattr(args, flag):
            common += [f"--{flag}", str(getattr(args, flag))]
    ours = [str(args.sana_run), "bench", "--engine", "cpu", "--runs", "1", "--warmup", "1", *common]
    theirs = [sys.executable, str(ROOT / "tools" / "bench_reference.py"), "--device", "cpu", "--dtype", "fp32",
              "--runs", "1", *common]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), RAYON_NUM_THREADS=str(args.threads))

    rounds = []
    for r in range(args.rounds):
        order = [("ours", ours), ("diffusers", theirs)]
        if r % 2:
            order.reverse()
        got = {}
        for who, cmd in order:
            got[who] = run(cmd, env)
            print(f"round {r + 1}: {who} total {got[who][0]['stages']['total']['time_s']:.2f} s", file=sys.stderr)
        rounds.append(got)

    size = f"{args.width or 'native'}×{args.height or 'native'}"
    print(f"{args.variant} at {size}, {args.steps} steps, guidance {args.guidance}, {args.threads} threads, "
          f"{args.rounds} rounds alternated (ours: {rounds[0]['ours'][0]['engine']}; diffusers: "
          f"{rounds[0]['diffusers'][0]['engine']})")
    print()
    print("| stage | ours (median s) | diffusers (median s) | ours ÷ diffusers (median, range) |")
    print("|---|---|---|---|")
    for key, name in STAGES:
        mine = [g["ours"][0]["stages"][key]["time_s"] for g in rounds]
        ref = [g["diffusers"][0]["stages"][key]["time_s"] for g in rounds]
        ratios = [a / b for a, b in zip(mine, ref)]
        print(f"| {name} | {statistics.median(mine):.2f} | {statistics.median(ref):.2f} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")
    rss = {who: max(g[who][1] for g in rounds) / 1e9 for who in ("ours", "diffusers")}
    print(f"| peak host memory (max RSS) | {rss['ours']:.2f} GB | {rss['diffusers']:.2f} GB | "
          f"{rss['ours'] / rss['diffusers']:.2f} |")


if __name__ == "__main__":
    main()
