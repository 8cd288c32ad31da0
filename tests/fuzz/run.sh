#!/usr/bin/env bash
# Builds the fuzzer with clang and runs it for SECONDS (default 600) on a seed corpus made from
# the golden files. Usage: tests/fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-600}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz --target fuzz_safetensors
corpus=build/fuzz/corpus
mkdir -p "$corpus"
cp tests/data/goldens/*.safetensors "$corpus/"
build/fuzz/tests/fuzz/fuzz_safetensors "$corpus" -max_total_time="$seconds" -max_len=65536 \
    -rss_limit_mb=4096 -print_final_stats=1
