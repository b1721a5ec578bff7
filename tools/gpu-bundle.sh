#!/usr/bin/env bash
# Builds the GPU suite into one folder that runs on a machine with only the NVIDIA driver and the CUDA libraries
# (no Rust, no nvcc): release `sana-run`, the GPU test executables (tests/*cuda* and the kernel families'), the GPU
# criterion benches, the fixtures and the demo model, tools/bench_reference.py with the diffusers wheel it needs
# (where pip can fetch it here), and run.sh, which runs everything, sets `sana-run bench` beside diffusers per stage,
# and writes its results to a folder.
#
#   tools/gpu-bundle.sh [DIR]          # default target/gpu-bundle, and DIR.tar.gz to carry; fails if the archive and
#                                      # the working tree exceed the 64 MiB a GPU host takes
#   tar xzf DIR.tar.gz -C "$(dirname DIR)" && DIR/run.sh [RESULTS]
#                                      # on the GPU host; default DIR/results (summary.txt, one log per program);
#                                      # SANA_RUN_BENCHES=0 runs the tests only; the tests fail rather than skip
#                                      # without a usable GPU (SANA_REQUIRE_GPU=1; set it to 0 to let them skip)
#
# The kernels are compiled here with nvcc 13.0 (tools/install_nvcc.sh), PTX for compute_80 plus sm_90 SASS, so the
# bundle needs nothing from the host but libcuda (driver 580+) and libcublasLt (CUDA 12 or 13).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-target/gpu-bundle}
limit_mib=64

CUDA_HOME=$(tools/install_nvcc.sh "${SANA_CUDA_CACHE:-$PWD/.cache/cuda}" | tail -n1)
export CUDA_HOME NVCC="$CUDA_HOME/bin/nvcc" SANA_REQUIRE_NVCC=1

rm -rf "$out"
mkdir -p "$out/bin" "$out/tests" "$out/benches"

# Executables of the selection, one "kind name path" line each, from cargo's JSON messages. Everything builds with
# the bench profile (release settings): one compilation of the library serves the tests, the benches and sana-run,
# which cargo builds for the integration tests anyway.
executables() {
    cargo "$@" --no-run --message-format=json-render-diagnostics |
        jq -r 'select(.reason == "compiler-artifact" and .executable != null)
               | "\(.target.kind[0]) \(.target.name) \(.executable)"'
}

tests=()
for t in tests/*cuda*.rs; do tests+=(--test "$(basename "$t" .rs)"); done
# The kernel families: their *_on_cuda tests check every op of the cuda engine (their emulation tests run too, in
# seconds).
for family in linear norm elementwise layout conv conv3x3 attention causal_attention embed linear_attn sampler; do
    tests+=(--test "$family")
done
while read -r kind name exe; do
    case $kind in
        bin) cp "$exe" "$out/bin/$name" ;;
        test) cp "$exe" "$out/tests/$name" ;;
    esac
done < <(executables test --profile bench "${tests[@]}")
# Only the GPU benches: the CPU reference benches at real shapes take minutes per sample and device time is scarce.
while read -r kind name exe; do
    if [ "$kind" = bench ] && [[ $name == gpu* ]]; then cp "$exe" "$out/benches/$name"; fi
done < <(executables bench)
[ -x "$out/bin/sana-run" ] || { echo "error: cargo built no sana-run" >&2; exit 1; }
strip "$out"/bin/* "$out"/tests/* "$out"/benches/*

cp -r tests/fixtures "$out/fixtures"
# The demo model, for tests/cuda_demo_semantic.rs (a few MB).
mkdir -p "$out/models" && cp -r models/sana-shapes "$out/models/"
cp tools/bench_reference.py "$out/"
# diffusers is the one package the reference needs beyond a CUDA PyTorch image (its other needs are common there).
if ! python3 -m pip download -q --no-deps --only-binary=:all: diffusers==0.40.0 importlib_metadata \
    -d "$out/wheels" 2>/dev/null; then
    echo "note: could not download the diffusers wheel; run.sh will use the host's diffusers if it has one" >&2
fi
git rev-parse HEAD >"$out/COMMIT"
if git status --porcelain --untracked-files=no | grep -q .; then echo "(with uncommitted changes)" >>"$out/COMMIT"; fi

cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs the bundled GPU suite: every test executable, every benchmark, and `sana-run bench` where this build has it.
# Usage: run.sh [RESULTS_DIR]. Each program's output goes to RESULTS_DIR/<kind>-<name>.log, a one-line verdict per
# program to RESULTS_DIR/summary.txt. Exit status: the number of programs that failed.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
results=${1:-$here/results}
mkdir -p "$results"
export SANA_FIXTURES=$here/fixtures
export SANA_MODELS=$here/models
# A GPU test that finds no usable GPU fails instead of printing "skipped": on the GPU host that is a broken setup.
export SANA_REQUIRE_GPU=${SANA_REQUIRE_GPU:-1}
# cuBLASLt: the toolkit's, or a CUDA wheel's inside a Python environment.
for lib in $(find /usr/local /usr/lib /opt -name 'libcublasLt.so*' 2>/dev/null | xargs -r -n1 dirname | sort -u); do
    LD_LIBRARY_PATH=$lib:${LD_LIBRARY_PATH:-}
done
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
{
    date -u +%FT%TZ
    echo "commit: $(cat "$here/COMMIT")"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "SANA_REQUIRE_GPU=$SANA_REQUIRE_GPU"
} | tee "$results/summary.txt"
failed=0
run() { # kind name command...
    local kind=$1 name=$2
    shift 2
    local start=$SECONDS
    (cd "$results" && "$@") >"$results/$kind-$name.log" 2>&1
    local rc=$?
    printf '%-8s %-28s exit %3d  %4d s\n' "$kind" "$name" "$rc" $((SECONDS - start)) | tee -a "$results/summary.txt"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}
# The lines of a test log worth a look in the summary: verdicts, skips, errors against tolerances, step graphs, the
# kernel image (cubin or PTX), panics.
notable='^(test |.*skipped|.*tol |.*step graph|.*kernels from the|.*panicked)'
for t in "$here"/tests/*; do
    run test "$(basename "$t")" "$t" --nocapture --test-threads=1
    grep -h -E "$notable" "$results/test-$(basename "$t").log" >>"$results/summary.txt"
done
if [ "${SANA_RUN_BENCHES:-1}" = 0 ]; then
    echo "failed programs: $failed" | tee -a "$results/summary.txt"
    exit "$failed"
fi
for b in "$here"/benches/*; do
    run bench "$(basename "$b")" "$b" --bench
done
# sana-run bench beside diffusers (eager and torch.compile) on the same variant, steps and CFG; the ratio per stage
# goes to the summary. SANA_BENCH_VARIANTS="name:steps:runs …" overrides the default sweep.
if [ -d "$here/wheels" ]; then
    # A fresh folder each run (pip --target does not replace an existing install), removed on exit.
    reference_lib=$(mktemp -d "${TMPDIR:-/tmp}/sana-reference.XXXXXX")
    trap 'rm -rf "$reference_lib"' EXIT
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$reference_lib" "$here"/wheels/*.whl &&
        export PYTHONPATH=$reference_lib${PYTHONPATH:+:$PYTHONPATH}
fi
reference=$(python3 -c 'import torch, diffusers; print(torch.cuda.is_available())' 2>/dev/null)
for spec in ${SANA_BENCH_VARIANTS:-sana-600m-1024:20:3 sana-1600m-1024:20:3 sana-1600m-4096:5:1}; do
    IFS=: read -r v steps runs <<<"$spec"
    run sana-run "bench-$v" "$here/bin/sana-run" bench --variant "$v" --engine cuda --steps "$steps" \
        --runs "$runs" --json
    if [ "$reference" != True ]; then
        echo "reference $v: skipped (python3 with torch on a GPU and diffusers not found)" | tee -a "$results/summary.txt"
        continue
    fi
    for mode in eager compile; do
        flag=$([ "$mode" = compile ] && echo --compile)
        run reference "$mode-$v" python3 "$here/bench_reference.py" --variant "$v" --steps "$steps" \
            --runs "$runs" --json $flag
        python3 - "$results/sana-run-bench-$v.log" "$results/reference-$mode-$v.log" <<'PY' | tee -a "$results/summary.txt"
import json, sys
def last_json(path):
    for line in reversed(open(path).read().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return None
ours, ref = last_json(sys.argv[1]), last_json(sys.argv[2])
if not ours or not ref:
    sys.exit(print(f"ratio: missing output ({sys.argv[1]}, {sys.argv[2]})"))
print(f"{ours['model']}: sana {ours['engine']} vs {ref['engine']}, {ours['steps']} steps")
for k in ["text_encode", "step", "denoise", "decode", "total"]:
    a, b = ours["stages"][k]["time_s"], ref["stages"][k]["time_s"]
    ratio = f"{b / a:.2f}x" if a and b else "-"
    print(f"  {k:<12} sana {a if a is None else f'{a:.4f}'} s  diffusers {b:.4f} s  speed-up {ratio}")
PY
    done
done
echo "failed programs: $failed" | tee -a "$results/summary.txt"
exit "$failed"
RUN
chmod +x "$out/run.sh"

# The transfer to a GPU host carries the working tree and the bundle together, 64 MiB in all, counted in bytes (not
# disk blocks, which round every small fixture file up to 4 KiB): the bundle goes as one gzip archive (its stripped
# executables shrink about threefold), unpacked there before run.sh.
tar -C "$(dirname "$out")" -czf "$out.tar.gz" "$(basename "$out")"
bundle_bytes=$(du -s --apparent-size --block-size=1 "$out" | cut -f1)
archive_bytes=$(stat -c %s "$out.tar.gz")
tree_bytes=$(git ls-files -co --exclude-standard -z | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
total=$(( archive_bytes + tree_bytes ))
mib() { echo "$(( ($1 + 1048575) / 1048576 )) MiB"; }
echo "bundle: $out ($(mib "$bundle_bytes")), $out.tar.gz ($(mib "$archive_bytes")) + the working tree ($(mib "$tree_bytes")) = $total bytes: $(ls "$out/tests" "$out/benches" | tr '\n' ' ')"
if [ "$total" -gt $(( limit_mib * 1048576 )) ]; then
    echo "error: the archive and the working tree are $total bytes, over the $limit_mib MiB a GPU host takes" >&2
    exit 1
fi
