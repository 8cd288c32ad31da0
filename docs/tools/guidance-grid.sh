#!/bin/sh
# The guidance grid of docs/user-guide.md ("Guidance at a glance"): the same portrait and audio
# rendered with `loopy render` for every (reference ratio, audio ratio) pair, one frame of each
# tiled into one PNG: columns are audio ratios, rows reference ratios.
#
#   docs/tools/guidance-grid.sh LOOPY PORTRAIT AUDIO OUT.png
#
# e.g. docs/tools/guidance-grid.sh build/release/app/loopy resources/samples/portrait.png \
#          resources/samples/speech.wav docs/guidance-grid.png
#
# Optional environment:
#   CHECKPOINT    Loopy checkpoint (default: none given, so loopy uses its bundled demo model)
#   AUDIO_RATIOS  the columns (default "0 3 5 8")
#   REF_RATIOS    the rows (default "1 3 5")
#   STEPS         DDIM steps (default 8)
#   SEED          noise seed (default 1): the same for every cell
#   THREADS       loopy --threads (default: loopy's, all cores)
#   FRAME         the frame index shown (default: the middle frame of the video)
#   SCALE         integer upscale of each cell, nearest neighbour (default 1)
#   LABELS        1: write "audio A ref R" on each cell (ffmpeg's drawtext filter)
#   WORK          keep the renders (MP4s and frames) in this folder; default: a temporary folder,
#                 removed at the end
# Needs the ffmpeg command-line tool (Debian package ffmpeg) to assemble the grid.
set -eu

me=$(basename "$0")
die() {
    echo "$me: $*" >&2
    exit 1
}

if [ $# -ne 4 ]; then
    echo "usage: $me LOOPY PORTRAIT AUDIO OUT.png (options: see the top of $0)" >&2
    exit 2
fi
loopy=$1 portrait=$2 audio=$3 out=$4
audio_ratios=${AUDIO_RATIOS:-0 3 5 8}
ref_ratios=${REF_RATIOS:-1 3 5}
steps=${STEPS:-8}
seed=${SEED:-1}
scale=${SCALE:-1}
labels=${LABELS:-0}

[ -x "$loopy" ] || die "$loopy is not an executable (the loopy command-line program)"
[ -f "$portrait" ] || die "$portrait: no such file"
[ -f "$audio" ] || die "$audio: no such file"
command -v ffmpeg >/dev/null 2>&1 || die "ffmpeg not found (apt-get install ffmpeg)"

if [ -n "${WORK:-}" ]; then
    work=$WORK
    mkdir -p "$work"
else
    work=$(mktemp -d "${TMPDIR:-/tmp}/guidance-grid.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    trap 'exit 130' INT TERM
fi

# Options every render shares.
set -- --steps "$steps" --seed "$seed" --force
if [ -n "${CHECKPOINT:-}" ]; then set -- "$@" --checkpoint "$CHECKPOINT"; fi
if [ -n "${THREADS:-}" ]; then set -- "$@" --threads "$THREADS"; fi

# 1. One render per cell, row by row (rows: reference ratio; columns: audio ratio).
rows=0 cols=0 first=
for r in $ref_ratios; do
    rows=$((rows + 1))
    cols=0
    for a in $audio_ratios; do
        cols=$((cols + 1))
        name=ref${r}_audio${a}
        first=${first:-$work/$name}
        echo "$me: reference ratio $r, audio ratio $a" >&2
        "$loopy" render "$@" --portrait "$portrait" --audio "$audio" --out "$work/$name.mp4" \
            --cfg-audio "$a" --cfg-ref "$r" --frames-dir "$work/$name"
    done
done
if [ "$rows" -eq 0 ] || [ "$cols" -eq 0 ]; then die "AUDIO_RATIOS and REF_RATIOS must not be empty"; fi

# 2. The chosen frame of each render, as cell_000.png, cell_001.png, ... in row-major order.
if [ -n "${FRAME:-}" ]; then
    frame=$FRAME
else
    count=$(find "$first" -name 'frame_*.png' | wc -l)
    [ "$count" -gt 0 ] || die "no frames in $first"
    frame=$((count / 2))
fi
filter="null"
if [ "$scale" -gt 1 ]; then filter="scale=iw*$scale:ih*$scale:flags=neighbor"; fi
i=0
for r in $ref_ratios; do
    for a in $audio_ratios; do
        src=$(printf '%s/ref%s_audio%s/frame_%06d.png' "$work" "$r" "$a" "$frame")
        [ -f "$src" ] || die "$src does not exist (FRAME=$frame past the end of the video?)"
        cell_filter=$filter
        if [ "$labels" = 1 ]; then
            cell_filter="$filter,drawtext=text='audio $a ref $r':x=3:y=3:fontsize=${LABEL_SIZE:-12}"
            cell_filter="$cell_filter:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=2"
        fi
        ffmpeg -v error -y -i "$src" -vf "$cell_filter" "$(printf '%s/cell_%03d.png' "$work" "$i")"
        i=$((i + 1))
    done
done

# 3. Tile them: `tile=COLSxROWS` fills its grid row by row from consecutive input frames.
ffmpeg -v error -y -framerate 1 -i "$work/cell_%03d.png" \
    -vf "tile=${cols}x${rows}:padding=4:margin=4:color=white" -frames:v 1 "$out"
echo "$me: wrote $out: frame $frame; columns: audio ratios $audio_ratios;" \
    "rows: reference ratios $ref_ratios; $steps steps, seed $seed" >&2
