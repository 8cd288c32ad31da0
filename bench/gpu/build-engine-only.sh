# Sourced by the device scripts: builds the engine-only `loopy` against the LibTorch of the
# machine's Python (LibTorch 2.x with CUDA) into $B and sets `loopy` to it; logs go to $LOG.
# Without spdlog, nlohmann-json or CLI11 on the machine, carry Debian's packages unpacked in .deps/
# (docs/packaging.md, "Engine-only build").
torch_cmake=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)') || return 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
prefix="$torch_cmake"
if [ ! -e /usr/include/spdlog/spdlog.h ] && [ -d .deps/usr ]; then
    prefix="$prefix;$PWD/.deps/usr"
    export LD_LIBRARY_PATH="$PWD/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "spdlog, fmt, nlohmann-json, CLI11 from .deps"
fi
build_start=$(date +%s)
if ! cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOOPY_ENGINE_ONLY=ON \
    -DCMAKE_PREFIX_PATH="$prefix" -DTORCH_CUDA_ARCH_LIST=9.0 >"$LOG/configure.log" 2>&1; then
    tail -40 "$LOG/configure.log"
    return 1
fi
timeout 420 cmake --build "$B" -j "$(nproc)" -- -k 0 >"$LOG/build.log" 2>&1
echo "build: rc $? after $(($(date +%s) - build_start)) s, $(grep -c 'warning:' "$LOG/build.log") warnings"
grep -E 'error|warning:' "$LOG/build.log" | head -30
loopy=$B/app/loopy
[ -x "$loopy" ] || return 1
