#!/usr/bin/env bash
# Registers, static shared memory, stack and spills of every kernel on sm_90, from ptxas (-Xptxas -v). Dynamic
# shared memory is chosen at launch by src/launch/<family>.rs and does not show here.
# Usage: tools/ptx_report.sh [nvcc]   (default: $NVCC, else the copy tools/install_nvcc.sh manages)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
nvcc=${1:-${NVCC:-$(tools/install_nvcc.sh | tail -n1)/bin/nvcc}}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-48s %5s %9s %7s %7s\n' kernel regs smem_B stack_B spill_B
for src in kernels/*.cu; do
    "$nvcc" -arch=sm_90 -cubin -std=c++17 -O3 -I kernels -Xptxas -v "$src" -o "$out/k.cubin" 2>&1 |
        awk '
            /Compiling entry function/ { name = $7; gsub(/\047/, "", name) }
            /bytes stack frame/ { stack = $1; spill = $5 + $9 }
            /Used [0-9]+ registers/ {
                regs = $5; smem = 0
                for (i = 3; i <= NF; i++) if ($i ~ /^smem/) smem += $(i - 2) + 0
                printf "%-48s %5s %9s %7s %7s\n", name, regs, smem, stack, spill
            }'
done
