#!/usr/bin/env bash
# Set-up command (1): installs every Debian package the project needs, then builds Release.
# Runs apt-get through sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root=()
if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
mapfile -t packages < <(grep -v -e '^#' -e '^$' packaging/debian-packages.txt)
"${as_root[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends \
    "${packages[@]}"
cmake --preset release
cmake --build --preset release
