#!/usr/bin/env bash
# Runs a command on the software GPU (softgpu/): builds the stand-in libcuda/libcublasLt when needed (installing
# nvcc 13.0 from PyPI first, as .ci/run does), links them under the names cudarc opens, and runs CMD with that
# folder first on the loader path. The device calls itself "softgpu (…, not a GPU)"; it runs the kernels' host build.
#
#   tools/softgpu.sh CMD [ARGS…]
#   tools/softgpu.sh cargo test --release --test cuda_engine
#   tools/softgpu.sh target/release/sana-run --engine cuda --output fox.png
#
# Settings for the device (environment): SOFTGPU_MEMORY=512MiB (capacity, default 80 GiB), SOFTGPU_CUBIN=reject
# (refuse cubins, so the engine takes its PTX path).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ $# -eq 0 ]]; then
    sed -n '2,11p' "${BASH_SOURCE[0]}" >&2
    exit 2
fi

CUDA_HOME=$("$repo/tools/install_nvcc.sh" "${SANA_CUDA_CACHE:-$repo/.cache/cuda}" | tail -n1)
export CUDA_HOME NVCC="$CUDA_HOME/bin/nvcc"

# Release: the device's own work (reference GEMMs, copies, canary checks) runs at optimised speed.
(cd "$repo" && cargo build --release -p softgpu --quiet)
lib="$repo/target/softgpu/lib"
mkdir -p "$lib"
for name in libcuda.so libcuda.so.1 libcublasLt.so libcublasLt.so.13; do
    ln -sf "$repo/target/release/libsoftgpu.so" "$lib/$name"
done
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$@"
