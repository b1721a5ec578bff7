#!/usr/bin/env bash
# Installs nvcc 13.0 from NVIDIA's PyPI wheels into one CUDA_HOME-like folder (bin/nvcc, nvvm/, include/, lib/),
# without root and without the CUDA toolkit installer. PTX from nvcc 13.0 loads on driver 580 (CUDA 13.0); a newer
# nvcc writes a PTX ISA that driver rejects, so the versions are pinned.
#
#   tools/install_nvcc.sh [DEST]        DEST defaults to $SANA_CUDA_CACHE, else <repo>/.cache/cuda
#
# Idempotent: when DEST already holds this exact set of wheels it does nothing. The last line of stdout is DEST:
#   export CUDA_HOME=$(tools/install_nvcc.sh | tail -n1) NVCC=$CUDA_HOME/bin/nvcc
# Needs python3 with pip and network access to PyPI; progress goes to stderr.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-${SANA_CUDA_CACHE:-$repo/.cache/cuda}}

# All five wheels unpack into nvidia/cu13/; runtime/cccl have their own 13.0 patch numbers.
wheels=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
)
stamp="$dest/.sana-wheels"

if [[ -x "$dest/bin/nvcc" && -f "$stamp" && "$(cat "$stamp")" == "${wheels[*]}" ]]; then
    echo "nvcc already installed in $dest" >&2
    echo "$dest"
    exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sana-nvcc.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "downloading ${wheels[*]}" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --python-version 3 --implementation py --abi none \
    --dest "$work/wheels" "${wheels[@]}" >&2

mkdir -p "$work/tree"
for whl in "$work"/wheels/*.whl; do
    python3 -m zipfile -e "$whl" "$work/tree"
done
root="$work/tree/nvidia/cu13"
# zip archives do not keep the executable bit
chmod +x "$root"/bin/* "$root"/nvvm/bin/*

"$root/bin/nvcc" --version >&2
printf 'extern "C" __global__ void probe(float* y) { y[threadIdx.x] = rsqrtf(y[threadIdx.x]); }\n' >"$work/probe.cu"
"$root/bin/nvcc" -arch=compute_80 -ptx "$work/probe.cu" -o "$work/probe.ptx"
grep -q '.entry probe' "$work/probe.ptx"

# Replace DEST only once the new tree is known to work.
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$root" "$dest"
echo "${wheels[*]}" >"$stamp"
echo "installed nvcc into $dest" >&2
echo "$dest"
