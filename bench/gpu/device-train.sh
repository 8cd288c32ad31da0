#!/usr/bin/env bash
# `loopy train` on a CUDA machine whose Python has PyTorch (LibTorch 2.x): builds the engine-only
# `loopy` (bench/gpu/build-engine-only.sh), then from a training data cache (`loopy train
# --save-data`, made by a full build; engine-only builds read no clip folders):
#   1. the same 4 stage-2 steps on the CPU and on CUDA: losses side by side and the largest weight
#      difference (the draws stay on the CPU, so only rounding may differ);
#   2. seconds per step on CUDA for batch 2 and 8, float32 and bfloat16 autocast;
#   3. with LONG=S1,S2 (seconds): a v-prediction stage 1 from the demo model (or INIT=checkpoint,
#      whose VAE must be the one the cache was encoded with) for S1 seconds, then
#      stage 2 on it for S2 seconds (each stopped by `timeout`; the last checkpoint is kept).
# What comes back stays within a device run's limits (8 files, 16 MiB each): $OUT/logs.tgz (logs and
# loss.csv files) and with LONG the checkpoints v-stage1.safetensors, v-stage2.safetensors and
# v-stage2-ema.safetensors (OUT defaults to ./gpu-out).
# CHECKS=0 skips 1 and 2. AB_PADDING=1 first times sd15 with the ReferenceNet's motion-batch
# padding off and on (issue 9). DATA may be xz-compressed (.xz) to fit a device run's 64 MiB.
#   DATA=train-cache.safetensors[.xz] [LONG=90,170] [CHECKS=0] [AB_PADDING=1] \
#       bench/gpu/device-train.sh [build-dir]
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
B=${1:-build-gpu}
LOG=$(mktemp -d)
mkdir -p "$OUT"
save() { tar czf "$OUT/logs.tgz" -C "$LOG" .; }
trap save EXIT
source bench/gpu/build-engine-only.sh || exit 1
"$loopy" info --system | grep -iE 'torch|cuda|gpu|threads' | head -8
data=${DATA:?DATA must name a training data cache}
if [ "${data%.xz}" != "$data" ]; then  # carried compressed (python3 has lzma where xz is missing)
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$data" "$LOG/../train-cache.safetensors" || exit 1
    data=$LOG/../train-cache.safetensors
fi
demo=resources/models/loopy-tiny-demo.safetensors
work=$(mktemp -d)
start=$(date +%s)

# The largest absolute difference over the float32 tensors two safetensors files share.
max_diff() {
    python3 - "$1" "$2" <<'PY'
import array, json, struct, sys
def load(path):
    raw = open(path, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name != '__metadata__' and t['dtype'] == 'F32':
            a, b = t['data_offsets']
            out[name] = array.array('f', raw[8 + n + a:8 + n + b])
    return out
x, y = load(sys.argv[1]), load(sys.argv[2])
worst = max((max((abs(p - q) for p, q in zip(x[k], y[k])), default=0.0), k) for k in x)
print(f"   largest weight difference {worst[0]:.3g} ({worst[1]}) over {len(x)} tensors")
PY
}
# Median seconds per step of a run's loss.csv, its first 3 steps left out (warm-up).
per_step() { tail -n +5 "$1/loss.csv" | cut -d, -f4 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

if [ -n "${AB_PADDING:-}" ]; then  # issue 9: the ReferenceNet's motion-batch padding off / on
    for padding in 0 1; do
        LOOPY_MOTION_BATCH_PADDING=$padding timeout 100 "$loopy" bench render --config sd15 \
            --resolution 512 --device cuda --dtype float16 --steps 4 --decoder preview \
            --seconds 3.84 --json "$LOG/sd15-ab-motion-batch-padding$padding.json" \
            >"$LOG/sd15-ab-motion-batch-padding$padding.txt" 2>&1
        echo "== sd15, motion-batch padding $padding:" \
            "$(grep -oE '[0-9.]+ frames/s' "$LOG/sd15-ab-motion-batch-padding$padding.txt")"
        grep -E 'motion per|step per' "$LOG/sd15-ab-motion-batch-padding$padding.txt"
    done
fi

common="--data $data --init $demo --stage 2 --lr 1e-4 --seed 3 --mouth-weight 5 --freeze-audio-encoder"
if [ "${CHECKS:-1}" != 0 ]; then  # CHECKS=0: straight to the long run
    echo "== 1. CPU against CUDA, 4 steps of stage 2 (batch 2)"
    for dev in cpu cuda; do
        timeout 90 "$loopy" train $common --steps 4 --batch 2 --device $dev --threads "$(nproc)" \
            -o "$work/parity-$dev" >"$LOG/parity-$dev.txt" 2>&1 || tail -5 "$LOG/parity-$dev.txt"
    done
    paste -d, "$work/parity-cpu/loss.csv" "$work/parity-cuda/loss.csv" | cut -d, -f1,2,6 |
        sed 's/^/   step,loss cpu,loss cuda: /'
    max_diff "$work/parity-cpu/model.safetensors" "$work/parity-cuda/model.safetensors"
    for dev in cpu cuda; do cp "$work/parity-$dev/loss.csv" "$LOG/parity-$dev-loss.csv"; done
    echo "   ($(($(date +%s) - start)) s so far)"

    echo "== 2. CUDA seconds per step (30 steps each)"
    for variant in "2 -" "8 -" "8 --bf16"; do
        set -- $variant
        flag=$2; [ "$flag" = - ] && flag=
        name="speed-b$1${flag:+-bf16}"
        timeout 60 "$loopy" train $common --steps 30 --batch "$1" --device cuda $flag \
            -o "$work/$name" >"$LOG/$name.txt" 2>&1 || tail -5 "$LOG/$name.txt"
        echo "   batch $1 ${flag:-float32}: $(per_step "$work/$name") s/step, last line:" \
            "$(tail -1 "$LOG/$name.txt" | cut -c1-140)"
    done
    echo "   ($(($(date +%s) - start)) s so far)"
fi

if [ -n "${LONG:-}" ]; then
    s1=${LONG%,*}
    s2=${LONG#*,}
    echo "== 3. v-prediction: stage 1 for $s1 s, then stage 2 for $s2 s"
    timeout "$s1" "$loopy" train --data "$data" --init "${INIT:-$demo}" --stage 1 --v-prediction \
        --batch 32 --lr 2e-4 --warmup 100 --mouth-weight 3 --steps 1000000 \
        --checkpoint-every 100 --device cuda -o "$work/v-stage1" >"$LOG/v-stage1.txt" 2>&1
    echo "   stage 1: $(tail -1 "$work/v-stage1/loss.csv"), $(per_step "$work/v-stage1") s/step"
    timeout "$s2" "$loopy" train --data "$data" --init "$work/v-stage1/model.safetensors" \
        --stage 2 --v-prediction --batch 8 --lr 1e-4 --warmup 50 --ema 0.999 --mouth-weight 5 \
        --freeze-audio-encoder --steps 1000000 --checkpoint-every 250 --device cuda \
        -o "$work/v-stage2" >"$LOG/v-stage2.txt" 2>&1
    echo "   stage 2: $(tail -1 "$work/v-stage2/loss.csv"), $(per_step "$work/v-stage2") s/step"
    cp "$work/v-stage1/loss.csv" "$LOG/v-stage1-loss.csv"
    cp "$work/v-stage2/loss.csv" "$LOG/v-stage2-loss.csv"
    cp "$work/v-stage1/model.safetensors" "$OUT/v-stage1.safetensors"
    cp "$work/v-stage2/model.safetensors" "$OUT/v-stage2.safetensors"
    cp "$work/v-stage2/model_ema.safetensors" "$OUT/v-stage2-ema.safetensors"
    ls -la "$OUT"
fi
echo "total: $(($(date +%s) - start)) s after the build"
