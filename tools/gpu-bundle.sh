#!/usr/bin/env bash
# Builds the GPU suite into one folder that runs on a machine with only the NVIDIA driver and the CUDA libraries
# (no Rust, no nvcc): release `sana-run`, the GPU test executables (tests/*cuda*), the criterion benches, the
# fixtures, and run.sh, which runs everything and writes its results to a folder.
#
#   tools/gpu-bundle.sh [DIR]          # default target/gpu-bundle; fails if the bundle exceeds 64 MiB
#   DIR/run.sh [RESULTS]               # on the GPU host; default DIR/results (summary.txt, one log per program);
#                                      # SANA_RUN_BENCHES=0 runs the tests only
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
while read -r kind name exe; do
    case $kind in
        bin) cp "$exe" "$out/bin/$name" ;;
        test) cp "$exe" "$out/tests/$name" ;;
    esac
done < <(executables test --profile bench "${tests[@]}")
while read -r kind name exe; do
    if [ "$kind" = bench ]; then cp "$exe" "$out/benches/$name"; fi
done < <(executables bench)
[ -x "$out/bin/sana-run" ] || { echo "error: cargo built no sana-run" >&2; exit 1; }
strip "$out"/bin/* "$out"/tests/* "$out"/benches/*

cp -r tests/fixtures "$out/fixtures"
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
for t in "$here"/tests/*; do
    run test "$(basename "$t")" "$t" --nocapture --test-threads=1
    grep -h -E '^(test |.*skipped|.*tol )' "$results/test-$(basename "$t").log" >>"$results/summary.txt"
done
if [ "${SANA_RUN_BENCHES:-1}" != 0 ]; then
    for b in "$here"/benches/*; do
        run bench "$(basename "$b")" "$b" --bench
    done
fi
if "$here/bin/sana-run" bench --help >/dev/null 2>&1; then
    for v in sana-600m-1024 sana-1600m-1024 sana-1600m-4096; do
        run sana-run "bench-$v" "$here/bin/sana-run" bench --variant "$v" --engine cuda --json
    done
fi
echo "failed programs: $failed" | tee -a "$results/summary.txt"
exit "$failed"
RUN
chmod +x "$out/run.sh"

size_mib=$(du -sm "$out" | cut -f1)
echo "bundle: $out ($size_mib MiB): $(ls "$out/tests" "$out/benches" | tr '\n' ' ')"
if [ "$size_mib" -ge "$limit_mib" ]; then
    echo "error: the bundle is $size_mib MiB, over the $limit_mib MiB a GPU host takes" >&2
    exit 1
fi
