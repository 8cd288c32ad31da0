#!/usr/bin/env bash
# The Debian package end to end: cpack builds it, dpkg-deb unpacks it into a scratch root, and the
# unpacked loopy runs --version and a short render with the demo model it finds in that root.
#   test_package.sh CPACK BUILD_DIR SOURCE_DIR SCRATCH_DIR VERSION
set -euo pipefail
cpack=$1 build=$2 source=$3 scratch=$4 version=$5

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
step() { echo "--- $*"; }

rm -rf "$scratch"
mkdir -p "$scratch"
cd "$scratch"  # not the source tree: nothing may be found relative to the working folder

step "cpack -G DEB"
if ! "$cpack" --config "$build/CPackConfig.cmake" -G DEB -B "$scratch/out" >cpack.log 2>&1; then
    cat cpack.log >&2
    fail "cpack failed"
fi
debs=("$scratch"/out/loopy-studio_*.deb)
[ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ] || fail "expected one loopy-studio_*.deb in $scratch/out"
deb=${debs[0]}
echo "package: $deb ($(du -h "$deb" | cut -f1))"

step "control fields"
[ "$(dpkg-deb -f "$deb" Package)" = loopy-studio ] || fail "Package is not loopy-studio"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version is not $version"
[ "$(dpkg-deb -f "$deb" Section)" = graphics ] || fail "Section is not graphics"
depends=$(dpkg-deb -f "$deb" Depends)
echo "Depends: $depends"
# dpkg-shlibdeps must have found the libraries the binaries link (not just the manual entries).
for lib in libtorch libqt6core6 libqt6widgets6 libavcodec libavformat libswresample libportaudio2 \
    libopencv-objdetect libspdlog libc6 opencv-data; do
    [[ $depends == *"$lib"* ]] || fail "Depends lacks $lib"
done

step "dpkg-deb -x"
root=$scratch/root
dpkg-deb -x "$deb" "$root"
share=$root/usr/share
expected=(
    usr/bin/loopy
    usr/bin/loopy-studio
    usr/share/loopy-studio/models/loopy-tiny-demo.safetensors
    usr/share/loopy-studio/samples/portrait.png
    usr/share/loopy-studio/samples/speech.wav
    usr/share/applications/loopy-studio.desktop
    usr/share/mime/packages/loopy-studio.xml
    usr/share/icons/hicolor/scalable/apps/loopy-studio.svg
    usr/share/man/man1/loopy.1.gz
    usr/share/man/man1/loopy-studio.1.gz
)
for size in 16 22 24 32 48 64 128 256; do
    expected+=("usr/share/icons/hicolor/${size}x${size}/apps/loopy-studio.png")
done
for file in "${expected[@]}"; do
    [ -s "$root/$file" ] || fail "$file is missing from the package"
done
[ -x "$root/usr/bin/loopy" ] && [ -x "$root/usr/bin/loopy-studio" ] || fail "binaries not executable"
zcat "$share/man/man1/loopy.1.gz" | grep -q '^\.SS "loopy render"' || fail "loopy.1 lacks loopy render"
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate "$share/applications/loopy-studio.desktop" || fail "invalid .desktop file"
fi
if command -v update-mime-database >/dev/null; then
    # Parses the MIME package the way the system will (into the scratch root only).
    XDG_DATA_DIRS=$share update-mime-database "$share/mime" 2>mime.log || fail "update-mime-database: $(cat mime.log)"
    [ ! -s mime.log ] || fail "update-mime-database: $(cat mime.log)"
    grep -q 'application/x-loopy-checkpoint' "$share/mime/types" || fail "MIME type not registered"
fi

step "no build-tree paths in RPATH/RUNPATH"
for exe in loopy loopy-studio; do
    if readelf -d "$root/usr/bin/$exe" | grep -E 'RPATH|RUNPATH' | grep -q -e "$build" -e "$source"; then
        fail "$exe has a RUNPATH into the build or source tree"
    fi
done

# The unpacked binaries on their own: no library path, no data folder override.
run() { env -u LD_LIBRARY_PATH -u LOOPY_DATA_DIR OMP_NUM_THREADS=1 "$@"; }

step "loopy --version"
out=$(run "$root/usr/bin/loopy" --version)
echo "$out"
[ "$out" = "loopy $version" ] || fail "loopy --version printed '$out'"

step "loopy render with the installed demo model"
# 0.3 s of silence, 16 kHz mono 16-bit PCM (4800 samples).
{
    printf 'RIFF\xa4\x25\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00'
    printf '\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00data\x80\x25\x00\x00'
    head -c 9600 /dev/zero
} >short.wav
if ! run "$root/usr/bin/loopy" render --portrait "$share/loopy-studio/samples/portrait.png" \
    --audio short.wav --out out.mp4 --steps 1 --threads 1 >render.out 2>render.log; then
    cat render.out render.log >&2
    fail "loopy render failed"
fi
cat render.out render.log
model=$share/loopy-studio/models/loopy-tiny-demo.safetensors
grep -qF "using the demo model $model" render.log ||
    fail "the demo model was not the installed one ($model)"
grep -qF "guidance ratios: audio 6, reference 1 (the checkpoint's recommendation" render.log ||
    fail "the demo model's recommended guidance (loopy.guidance) was not used"
frames=$(sed -n 's/^wrote out\.mp4: \([0-9]*\) frames.*/\1/p' render.out)
[ -n "$frames" ] && [ "$frames" -gt 0 ] || fail "no frames reported"
[ -s out.mp4 ] || fail "out.mp4 is missing"
[ "$(head -c 8 out.mp4 | tail -c 4)" = ftyp ] || fail "out.mp4 is not an MP4"
echo "PASS: $deb installs and renders ($frames frames)"
