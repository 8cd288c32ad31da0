#pragma once
// Pretraining the audio encoder before stage 2 (`loopy train-audio`). No wav2vec 2.0 checkpoint
// exists for the tiny configuration, and learning speech from nothing through the diffusion loss
// alone is slow on a CPU budget. So the encoder first learns to predict each video frame's mouth
// opening (from the clip's lip keypoints) from the same per-frame windows stage 2 feeds it; a
// linear head on the concatenated window is trained with it and then thrown away. Not part of
// the paper, which starts from a pretrained wav2vec 2.0 (docs/training.md).
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/audio_features.h"
#include "model/loopy_model.h"
#include "model/training.h"

namespace loopy::model {

struct AudioPretrainBatch {
    // Per item: the samples of plan_audio_window(first frame, F), zeros outside the clip's audio
    // (what inference feeds the encoder; as TrainingBatch::audio).
    std::vector<std::vector<float>> audio;
    torch::Tensor targets;  // [B, F]: each frame's mouth opening, normalised per clip

    int64_t size() const { return static_cast<int64_t>(audio.size()); }
};

struct AudioPretrainerOptions {
    // The tiny demo encoder: 1e-3 never learned (r 0.02 after 3,000 steps); 1e-4 reached r 0.36,
    // then diverged when continued; 3e-5 went on to r 0.77 (docs/training.md).
    double lr = 3e-5;
    AdamW::Options adamw;
    double max_grad_norm = 1.0;  // <= 0: no clipping
    // Linear warm-up of the rate, as wav2vec 2.0 (a post-LN transformer) is trained. Added after
    // the demo runs, which had none and were unstable (docs/training.md); not yet shown to fix
    // that.
    int64_t warmup_steps = 100;
    AudioFeatureOptions audio;  // window from the config, context as inference uses it
    uint64_t seed = 0;          // the head's initial weights
    bool reproducible = true;   // as TrainerOptions::reproducible
};

// Trains `model`'s audio_encoder (in place) and a linear head from each frame's window of
// every layer's states to one number.
class AudioPretrainer {
  public:
    AudioPretrainer(LoopyModel model, AudioPretrainerOptions options);
    StepStats step(const AudioPretrainBatch& batch);
    // The head's prediction for every frame of the batch, [B, F] (no gradients).
    torch::Tensor predict(const std::vector<std::vector<float>>& audio, int64_t frames);
    int64_t steps_done() const { return step_; }

  private:
    torch::Tensor forward(const std::vector<std::vector<float>>& audio, int64_t frames);

    LoopyModel model_;
    AudioPretrainerOptions options_;
    torch::nn::Linear head_{nullptr};
    AdamW optimizer_;
    int64_t step_ = 0;
};

// Pearson correlation of two equally long series (0 when either is constant).
double pearson_correlation(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace loopy::model
