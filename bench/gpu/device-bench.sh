#!/usr/bin/env bash
# Issue 9's GPU figures in one go on a CUDA machine whose Python has PyTorch (LibTorch 2.x):
# builds the engine-only `loopy` against that LibTorch, times the sd15 configuration at 512x512
# and checks the CUDA path against the CPU with the demo model. Prints the figures; logs and JSON
# go to $OUT/gpu-results.tgz (OUT defaults to ./gpu-out).
#   bench/gpu/device-bench.sh [build-dir]       (QUICK=1: only the demo check and one sd15 run)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
B=${1:-build-gpu}
LOG=$(mktemp -d)
mkdir -p "$OUT"
save() { tar czf "$OUT/gpu-results.tgz" -C "$LOG" .; }
torch_cmake=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

start=$(date +%s)
if ! cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOOPY_ENGINE_ONLY=ON \
    -DCMAKE_PREFIX_PATH="$torch_cmake" -DTORCH_CUDA_ARCH_LIST=9.0 >"$LOG/configure.log" 2>&1; then
    tail -40 "$LOG/configure.log"
    save
    exit 1
fi
timeout 420 cmake --build "$B" -j "$(nproc)" -- -k 0 >"$LOG/build.log" 2>&1
echo "build: rc $? after $(($(date +%s) - start)) s, $(grep -c 'warning:' "$LOG/build.log") warnings"
grep -E 'error|warning:' "$LOG/build.log" | head -30
save
loopy=$B/app/loopy
[ -x "$loopy" ] || exit 1
"$loopy" info --system | tee "$LOG/system.txt"

# The whole GPU's memory in use, sampled; the allocator's own peaks are in each JSON.
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$LOG/gpu-memory.csv" &
sampler=$!

run() {  # name, time limit, bench render arguments...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$loopy" bench render "$@" --json "$LOG/$name.json" 2>&1 |
        tee "$LOG/$name.txt" | grep -vE '^\s*$'
    echo "   ($(($(date +%s) - start)) s so far; whole-GPU memory max" \
        "$(sort -n "$LOG/gpu-memory.csv" | tail -1) MiB)"
    save
}
demo=resources/models/loopy-tiny-demo.safetensors
sd15="--config sd15 --resolution 512 --device cuda"
if [ -n "${QUICK:-}" ]; then  # a build check: the demo against the CPU and one sd15 run
    run demo-cuda-fp16 45 -c $demo --device cuda --dtype float16 --steps 4 --decoder preview \
        --compare-cpu
    run sd15-512-fp16-steps4-cfg3-preview 100 $sd15 --dtype float16 --steps 4 \
        --decoder preview --seconds 1.92
    kill $sampler
    exit 0
fi
run sd15-512-fp16-steps4-cfg3-preview 100 $sd15 --dtype float16 --steps 4 --decoder preview \
    --seconds 1.92
run sd15-512-fp16-steps4-cfg3-preview-nhwc 100 $sd15 --dtype float16 --steps 4 \
    --decoder preview --seconds 1.92 --channels-last
run sd15-512-fp16-steps25-cfg3-full-nhwc 150 $sd15 --dtype float16 --steps 25 --decoder full \
    --seconds 1.44 --channels-last
run demo-cuda-fp16-nhwc 45 -c $demo --device cuda --dtype float16 --steps 4 --decoder preview \
    --compare-cpu --channels-last
# Where a step's GPU time goes: with blocking launches each operator's wall time holds its kernels.
export CUDA_LAUNCH_BLOCKING=1
run sd15-512-fp16-steps2-profile 100 $sd15 --dtype float16 --steps 2 \
    --decoder preview --seconds 0.96 --channels-last --profile 40
kill $sampler
save
echo "total: $(($(date +%s) - start)) s"
