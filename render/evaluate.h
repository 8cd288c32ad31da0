#pragma once
// `loopy eval`: render each held-out synthetic clip from its first frame and its audio, and
// compare with the ground truth (docs/synthetic-data.md) next to two baselines: "static" (the
// first frame repeated) and "ground truth" itself (a sanity row that must score perfectly).
#include <functional>
#include <memory>
#include <string>

#include "core/engine.h"

namespace loopy::eval {

struct EvalOptions {
    std::string data;    // a `loopy synth` folder (every clip_* with truth.json and video.mp4)
    std::string report;  // output folder: metrics.md, metrics.csv, contact_sheet.png, ...
    GenerationSettings settings;
    int max_clips = 0;  // 0: all
};

struct EvalSummary {
    int clips = 0;
    std::string markdown;  // the table written to metrics.md
    double model_mouth_r = 0, static_mouth_r = 0, truth_mouth_r = 0;  // means over clips
    double vae_mouth_r = 0;       // the truth through the checkpoint's VAE: the model's ceiling
    double model_mouth_r_se = 0;  // standard error of model_mouth_r over the clips (NaN: 1 clip)
};

using EvalProgress = std::function<void(int clip, int clips, const std::string& name)>;

// Throws loopy::Error for a folder without clips or unreadable clip files.
EvalSummary evaluate(const std::shared_ptr<Model>& model, const EvalOptions& options,
                     const EvalProgress& progress = {});

}  // namespace loopy::eval
