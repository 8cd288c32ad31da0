#pragma once
// Training samples for `loopy train` (docs/training.md): clips of the synthetic data set's format
// held in memory as VAE latents, audio and keypoint tracks, turned into model::TrainingBatch
// samples; and their cache file. LibTorch only (render/train_data.h reads the clip folders).
//
// The latents of every clip stay in memory. Sample n of a run is a pure function of (seed, n), so
// the data order needs no state beyond the number of samples already used.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/audio_features.h"
#include "model/audio_pretraining.h"
#include "model/autoencoder_kl.h"
#include "model/loopy_config.h"
#include "model/training.h"

namespace loopy::render {

// One training clip (read from its folder, or from a cache without its frames).
struct TrainClip {
    std::string name;          // the folder's name
    torch::Tensor frames;      // uint8 [T, 3, S, S] at the model's resolution (RGB); undefined
                               // once encoded, and in clips from a cache
    std::vector<float> audio;  // 16 kHz mono
    torch::Tensor nose;        // float64 [T, 2]: keypoint 30, normalised by the image size
    torch::Tensor expression;  // float64 [T, 30, 2]: keypoints 17..47 except 30, minus the nose
    torch::Tensor mouth_box;   // float64 [T, 4]: x0, y0, x1, y1 of keypoints 48..67, normalised
    int64_t frame_count() const { return nose.size(0); }
};

// The synthetic data's window variances (docs/synthetic-data.md) of frames [first, first + n):
// head movement = Var(u30) + Var(v30); expression = mean over the 30 points of Var(du) + Var(dv).
double head_movement_variance(const TrainClip& clip, int64_t first, int64_t n);
double expression_variance(const TrainClip& clip, int64_t first, int64_t n);

struct TrainDataOptions {
    int64_t frames = 12;  // target frames per sample (stage 1 uses 1)
    uint64_t seed = 0;
    model::AudioFeatureOptions audio;  // window from the config; context as inference's
    // > 1: the loss weighs the latent cells under each frame's mouth box this many times more
    // (TrainingBatch::loss_weight); 1: a plain mean. See docs/training.md ("mouth weight").
    double mouth_loss_weight = 1.0;
};

// The loss weight map [F, 1, s, s] of frames [first, first + n) of `clip` on an s x s latent
// grid: `weight` on the cells the frame's mouth box (grown by one cell) touches, 1 elsewhere.
torch::Tensor mouth_weight_map(const TrainClip& clip, int64_t first, int64_t n, int64_t s,
                               double weight);

// The samples of `plan` from the clip's audio, zeros outside it (what inference feeds the
// audio encoder for those frames).
std::vector<float> clip_window_samples(const TrainClip& clip, const model::AudioWindowPlan& plan);

// Each frame's mouth opening, float32 [T]: the height of the lip keypoints' box, normalised over
// the clip to zero mean and unit deviation (all zeros when the mouth never moves).
torch::Tensor mouth_opening_track(const TrainClip& clip);

// Items first .. first + count - 1 of audio pretraining (model/audio_pretraining.h): `frames`
// consecutive frames of a clip, both picked by (seed, item); targets from mouth_opening_track.
model::AudioPretrainBatch audio_pretrain_batch(const std::vector<TrainClip>& clips,
                                               const model::LoopyConfig& config,
                                               const model::AudioFeatureOptions& audio,
                                               int64_t frames, uint64_t seed, int64_t first,
                                               int64_t count);

// Where sample n comes from.
struct SampleSource {
    int64_t clip = 0;         // index into the data set's clips
    int64_t first_frame = 0;  // of the target frames
    int64_t reference_frame = 0;
};

class TrainDataset {
  public:
    using Progress = std::function<void(int64_t done, int64_t total)>;

    // Reads every clip under `dir` and encodes its frames with `vae` (mode of the posterior,
    // times scaling_factor: what inference does with the portrait). Defined with the folder
    // reader in render/train_data.cpp (FFmpeg); engine-only builds read caches only.
    TrainDataset(const std::string& dir, const model::LoopyConfig& config,
                 model::AutoencoderKLImpl& vae, TrainDataOptions options,
                 const Progress& progress = {});

    // A data set written by save_cache(), for a model whose VAE encoder is the one that encoded
    // it (checked by fingerprint). Needs no media libraries: the cache is how a GPU server with
    // LibTorch alone gets training data. Throws loopy::Error for a file that is not such a cache
    // (truncated, another VAE or resolution, clips shorter than options.frames).
    static TrainDataset load_cache(const std::string& path, const model::LoopyConfig& config,
                                   model::AutoencoderKLImpl& vae, TrainDataOptions options);
    // Writes the clips (latents as float16, audio, keypoint tracks) atomically to `path`, a
    // safetensors file (docs/training.md, "Training data cache"). Latents are stored rounded to
    // float16, so a run from the cache matches one from the folders only to that rounding.
    void save_cache(const std::string& path, model::AutoencoderKLImpl& vae) const;

    int64_t clip_count() const { return static_cast<int64_t>(clips_.size()); }
    const TrainClip& clip(int64_t i) const { return clips_.at(static_cast<size_t>(i)); }
    const torch::Tensor& clip_latents(int64_t i) const {
        return latents_.at(static_cast<size_t>(i));
    }

    // Clips are visited in a fresh permutation per epoch; the start and the reference frame are
    // uniform over the clip.
    SampleSource source(int64_t sample) const;
    // Samples first .. first + count - 1.
    model::TrainingBatch batch(int64_t first, int64_t count) const;

  private:
    TrainDataset(const model::LoopyConfig& config, TrainDataOptions options);
    // Encodes the clip's frames (then dropped) and keeps the clip.
    void add_clip(TrainClip clip, model::AutoencoderKLImpl& vae);

    model::LoopyConfig config_;
    TrainDataOptions options_;
    std::vector<TrainClip> clips_;
    std::vector<torch::Tensor> latents_;  // per clip [T, C, h, w]
};

}  // namespace loopy::render
