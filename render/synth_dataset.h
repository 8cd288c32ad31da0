#pragma once
// Synthetic talking-face clips: a drawn portrait (synth_face) speaking espeak-ng speech
// (synth_speech) with head motion, blinks and brow raises (synth_motion), and per-frame ground
// truth. Deterministic by seed: the same seed and options give byte-identical PNG, WAV and JSON
// files. The folder layout and the truth.json keys are documented in docs/synthetic-data.md.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "render/eval_metrics.h"
#include "render/synth_face.h"
#include "render/synth_motion.h"
#include "render/synth_speech.h"

namespace loopy::synth {

// Seeds [0, kHeldOutFirstSeed) are the training split; seeds from kHeldOutFirstSeed up are held
// out. A clip is named clip_<seed>, the seed zero-padded to 7 digits.
constexpr std::uint64_t kHeldOutFirstSeed = 1000000;
enum class Split { Train, HeldOut };
const char* to_string(Split split);
Split split_of(std::uint64_t seed);
std::string clip_name(std::uint64_t seed);

struct ClipOptions {
    int size = 256;        // 128, 256 or 512
    double seconds = 6.0;  // clip length
    int fps = 25;
    bool write_png = false;  // frames/000000.png ...
    bool write_mp4 = true;   // video.mp4: H.264 + AAC
};

struct FrameTruth {
    FaceState state;
    Keypoints keypoints;
    double energy = 0;        // speech loudness in [0, 1]
    double mouth_pixels = 0;  // eval::mouth_opening() of the drawn frame
};

struct Clip {
    std::uint64_t seed = 0;
    ClipOptions options;
    FaceStyle style;
    Speech speech;                // audio trimmed or padded to exactly frame_count / fps seconds
    std::vector<cv::Mat> frames;  // RGB
    std::vector<FrameTruth> truth;
    std::vector<double> blink_onsets;           // seconds
    std::vector<eval::WindowVariance> windows;  // 12-frame windows
    int frame_count() const { return static_cast<int>(frames.size()); }
};

// Called after each frame: (frames done, frames in all, what is being made).
using SynthProgress = std::function<void(std::int64_t, std::int64_t, const std::string&)>;

// Validates options (sizes 128/256/512, 0 < seconds <= 600, 1 <= fps <= 60); throws loopy::Error.
void check_clip_options(const ClipOptions& options);

// Makes one clip in memory.
Clip make_clip(std::uint64_t seed, const ClipOptions& options,
               const std::function<void(int)>& on_frame = {});

// 16-bit PCM mono WAV file bytes (samples clipped to [-1, 1] and rounded).
std::vector<std::uint8_t> wav_bytes(const std::vector<float>& samples, int sample_rate);
// truth.json text.
std::string truth_json(const Clip& clip);

// Writes audio.wav, truth.json, video.mp4 (if options.write_mp4) and frames/*.png (if
// options.write_png) into `clip_dir` (created), each file atomically.
void write_clip(const Clip& clip, const std::string& clip_dir);

struct ClipSummary {
    std::string name;
    std::string dir;
    std::uint64_t seed = 0;
    int frames = 0;
    std::string voice;
    bool singing = false;
    std::string text;
};

// make_clip + write_clip into out_dir/clip_<seed>.
ClipSummary generate_clip(std::uint64_t seed, const ClipOptions& options,
                          const std::string& out_dir,
                          const std::function<void(int)>& on_frame = {});

struct SynthOptions {
    std::string out;  // dataset folder (created)
    int clips = 1;
    std::uint64_t seed = 0;  // first seed, counted within the split
    Split split = Split::Train;
    ClipOptions clip;
};

// The seed of clip `index`: seed + index for training (must stay below kHeldOutFirstSeed),
// kHeldOutFirstSeed + seed + index for the held-out split.
std::uint64_t clip_seed(const SynthOptions& options, int index);

// `loopy synth`: generates the clips one after another and writes out/dataset.json (clips
// already listed there by earlier runs are kept).
std::vector<ClipSummary> run_synth(const SynthOptions& options, const SynthProgress& progress = {});

}  // namespace loopy::synth
