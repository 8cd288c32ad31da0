#!/usr/bin/env bash
# Runs .ci/run (the README's set-up and test commands) for this commit on Debian trixie, inside a
# chroot: LibTorch 2.6 (where the engine takes its LibTorch >= 2.0 paths, SDPA among them), Qt 6.8,
# FFmpeg 7.1, GCC 14. Not part of CI (the first run downloads about 0.6 GB, takes 3.4 GB of disk and
# builds for about 40 minutes on 2 cores); run it as root after changes to core/torch_compat.h or to
# FFmpeg, Qt or LibTorch calls.
#   packaging/check-trixie.sh [CHROOT_DIR]   (default /var/tmp/loopy-trixie; kept and reused)
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-/var/tmp/loopy-trixie}
if [ "$(id -u)" -ne 0 ]; then
    echo "check-trixie.sh: needs root (debootstrap, chroot, mount)" >&2
    exit 1
fi
command -v debootstrap > /dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
[ -x "$root/usr/bin/apt-get" ] ||
    debootstrap --variant=minbase trixie "$root" http://deb.debian.org/debian

mounts=()
cleanup() {
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" || true; done
}
trap cleanup EXIT
mountpoint -q "$root/proc" || { mount -t proc proc "$root/proc" && mounts+=("$root/proc"); }
for d in dev sys; do
    mountpoint -q "$root/$d" || { mount --rbind "/$d" "$root/$d" && mounts+=("$root/$d"); }
done
cp /etc/resolv.conf "$root/etc/resolv.conf"

# This commit, in a clone kept beside the build (a rerun builds only what changed).
if [ -d "$root/src/.git" ]; then
    git -C "$root/src" fetch -q "$PWD" HEAD
    git -C "$root/src" checkout -q --detach FETCH_HEAD
else
    git clone -q . "$root/src"
    git -C "$root/src" checkout -q --detach "$(git rev-parse HEAD)"
fi
# CI's two commands there: the set-up (apt-get, build) and the tests.
chroot "$root" /src/.ci/run
