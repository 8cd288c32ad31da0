#!/usr/bin/env bash
# Issue 9's GPU figures in one go on a CUDA machine whose Python has PyTorch (LibTorch 2.x):
# builds the engine-only `loopy` against that LibTorch, checks the CUDA path against the CPU with
# the demo model and times the sd15 configuration at 512x512, each engine switch off and on on the
# same machine. Prints the figures; logs and JSON go to $OUT/gpu-results.tgz (OUT defaults to
# ./gpu-out).
#   bench/gpu/device-bench.sh [build-dir]       (QUICK=1: only the demo check and one sd15 run;
#                                               AB=1: only the switches one by one;
#                                               CUDNN_AB=1: the demo check, sd15 with cuDNN's
#                                               benchmark mode off and on, and the host CPU)
# Without spdlog, nlohmann-json or CLI11 on the machine, carry Debian's packages unpacked in .deps/
# (docs/packaging.md, "Engine-only build").
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
B=${1:-build-gpu}
LOG=$(mktemp -d)
mkdir -p "$OUT"
save() { tar czf "$OUT/gpu-results.tgz" -C "$LOG" .; }
start=$(date +%s)
source bench/gpu/build-engine-only.sh || { save; exit 1; }
save
"$loopy" info --system | tee "$LOG/system.txt"

# The whole GPU's memory in use, sampled; the allocator's own peaks are in each JSON.
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$LOG/gpu-memory.csv" &
sampler=$!

# The engine's switches (LOOPY_*=0 turns one off, =1 one that is off by default).
OLD="LOOPY_FUSED_LINEAR_BIAS=0"
run() {  # name, time limit, environment ("-" for none), bench render arguments...
    local name=$1 limit=$2 vars=$3
    shift 3
    [ "$vars" = - ] && vars=
    echo "== $name: $vars $*"
    : >"$LOG/gpu-memory.csv"
    env $vars timeout "$limit" "$loopy" bench render "$@" --json "$LOG/$name.json" 2>&1 |
        tee "$LOG/$name.txt" | grep -E 'frames/s|step|motion|GFLOP|memory|PSNR|rror'
    echo "   ($(($(date +%s) - start)) s so far; whole-GPU memory max" \
        "$(sort -n "$LOG/gpu-memory.csv" | tail -1) MiB)"
    save
}
# One line per run: frames per second and the per-stage medians.
summary() {
    for f in "$@"; do
        printf '%-42s %s | %s\n' "$(basename "$f" .txt)" "$(grep -oE '[0-9.]+ frames/s' "$f")" \
            "$(grep -E 'motion per|step per|decode per' "$f" | tr -s ' ' | tr '\n' ' ')"
    done
}
demo=resources/models/loopy-tiny-demo.safetensors
sd15="--config sd15 --resolution 512 --device cuda"
fast="$sd15 --dtype float16 --steps 4 --decoder preview --seconds 1.92"
if [ -n "${AB:-}" ]; then  # AB=1: each switch alone, 8 clips a run, then a profile
    long="$sd15 --dtype float16 --steps 4 --decoder preview --seconds 3.84"
    run ab-unfused 100 "$OLD" $long
    run ab-fused-bias 100 - $long
    run ab-motion-batch-unpadded 100 LOOPY_MOTION_BATCH_PADDING=0 $long
    run ab-fused-bias-sdpa-mask 100 LOOPY_FUSED_MASKED_ATTENTION=1 $long
    run ab-fused-bias-motioncache 100 - $long --motion-cache on
    run ab-fused-bias-steps2-blocking-profile 100 \
        CUDA_LAUNCH_BLOCKING=1 $sd15 --dtype float16 --steps 2 \
        --decoder preview --seconds 0.96 --profile 40
    kill $sampler
    summary "$LOG"/ab-*.txt
    exit 0
fi
run demo-cuda-fp16 60 - -c $demo --device cuda --dtype float16 --steps 4 --decoder preview \
    --compare-cpu
if [ -n "${CUDNN_AB:-}" ]; then  # CUDNN_AB=1: cuDNN's benchmark mode, then the machine's CPU
    long="$sd15 --dtype float16 --steps 4 --decoder preview --seconds 3.84"
    run cudnn-heuristics 100 - $long
    run cudnn-benchmark 100 LOOPY_CUDNN_BENCHMARK=1 $long
    kill $sampler
    # The engine's OpenMP and LibTorch's: one runtime or two (a wheel bundles its own libgomp)?
    ldd "$loopy" | grep -iE 'gomp|omp' | tee "$LOG/openmp-libraries.txt"
    grep -m1 'model name' /proc/cpuinfo
    grep -qw avx512f /proc/cpuinfo && echo "CPU has AVX-512F" || echo "CPU has no AVX-512F"
    cpu="-c $demo --device cpu --steps 4 --decoder preview --seconds 4.32"
    run host-cpu-t2 60 - $cpu --threads 2
    run host-cpu-t2-no-avx512 60 LOOPY_CPU_AVX512=0 $cpu --threads 2
    run host-cpu-t8 60 - $cpu --threads 8
    run host-cpu-t8-overlap 60 - $cpu --threads 8 --overlap-decode
    summary "$LOG"/cudnn-*.txt "$LOG"/host-cpu-*.txt
    save
    exit 0
fi
if [ -n "${QUICK:-}" ]; then
    run sd15-512-fp16-steps4-cfg3-preview 100 - $fast
    kill $sampler
    exit 0
fi
# Each switch off, then on, on the same machine (session 8 saw runs repeat within ~1 %).
run sd15-512-fp16-steps4-cfg3-preview-unfused 100 "$OLD" $fast
run sd15-512-fp16-steps4-cfg3-preview 100 - $fast
run sd15-512-fp16-steps4-cfg3-preview-motioncache 100 - $fast --motion-cache on
run sd15-512-fp16-steps25-cfg3-full-motioncache 150 - $sd15 --dtype float16 --steps 25 \
    --decoder full --seconds 1.44 --motion-cache on
# Where a step's GPU time goes: with blocking launches each operator's wall time holds its kernels.
run sd15-512-fp16-steps2-blocking-profile 100 CUDA_LAUNCH_BLOCKING=1 $sd15 --dtype float16 \
    --steps 2 --decoder preview --seconds 0.96 --profile 40
kill $sampler
save
echo "total: $(($(date +%s) - start)) s"
for f in "$LOG"/*.txt; do
    printf '%-50s %s\n' "$(basename "$f" .txt)" "$(grep -oE '[0-9.]+ frames/s' "$f" | head -1)"
done
