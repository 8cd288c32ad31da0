#!/usr/bin/env bash
# Set-up command (1): installs every Debian package the project needs, then builds Release.
# Runs apt-get through sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root=()
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
mapfile -t packages < <(grep -v -e '^#' -e '^$' packaging/debian-packages.txt)
# The list names bookworm's packages. Debian 13 (trixie) has clang 19's runtime, and Qt's OpenGL
# headers in qt6-base-dev.
if [ "$(. /etc/os-release && echo "${VERSION_CODENAME:-}")" = trixie ]; then
    mapfile -t packages < <(printf '%s\n' "${packages[@]}" | grep -vx libqt6opengl6-dev |
        sed 's/^libclang-rt-14-dev$/libclang-rt-19-dev/')
fi
"${as_root[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends \
    "${packages[@]}"
cmake --preset release
cmake --build --preset release
