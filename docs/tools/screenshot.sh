#!/bin/sh
# Takes the README's screenshot: the window, at its default size and settings, after generating
# the samples with the bundled demo model (as a new user's first run does).
#
#   docs/tools/screenshot.sh [OUT.png]        (default docs/screenshot.png; run from the source tree)
#
# Needs Xvfb, xdotool, xwd and netpbm (apt-get install xvfb xdotool x11-apps netpbm); none of
# them is needed to build or test the project. LOOPY_STUDIO names the binary (default
# build/release/app/loopy-studio). The settings and logs go to a temporary folder, never yours.
set -eu
out=${1:-docs/screenshot.png}
studio=${LOOPY_STUDIO:-build/release/app/loopy-studio}
for tool in Xvfb xdotool xwd xwdtopnm pnmtopng; do
    command -v "$tool" >/dev/null ||
        { echo "screenshot.sh: $tool is missing (apt-get install xvfb xdotool x11-apps netpbm)" >&2; exit 1; }
done
[ -x "$studio" ] || { echo "screenshot.sh: no $studio (build first, or set LOOPY_STUDIO)" >&2; exit 1; }

tmp=$(mktemp -d)
xvfb_pid='' studio_pid=''
trap 'kill $studio_pid $xvfb_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
display=:$((90 + $$ % 100))
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$tmp/xvfb.log" 2>&1 &
xvfb_pid=$!
export DISPLAY="$display" HOME="$tmp" XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data"
export LIBGL_ALWAYS_SOFTWARE=1
sleep 1
"$studio" resources/samples/portrait.png resources/samples/speech.wav >"$tmp/studio.log" 2>&1 &
studio_pid=$!

# No window manager: focus the main window by hand so that Ctrl+G reaches it.
window=$(xdotool search --sync --name '^Loopy Studio [0-9]' | head -n 1)
xdotool windowfocus --sync "$window"
xdotool key ctrl+g
log="$tmp/studio.log"  # the app's console log (its log file is written in batches)
tries=0
until grep -q '\] generated [0-9]* frames' "$log" 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -lt 600 ] || { echo "screenshot.sh: no generation after 10 minutes" >&2; exit 1; }
    sleep 1
done
grep -o 'generated [0-9]* frames.*' "$log"
sleep 1  # the last frame reaches the viewport
xwd -id "$window" -silent | xwdtopnm 2>/dev/null | pnmtopng >"$tmp/shot.png"  # the window alone
mv "$tmp/shot.png" "$out"
echo "wrote $out"
