#pragma once
// Training data for `loopy train` (docs/training.md): clip folders in the synthetic data set's
// format (video.mp4 at 25 fps, audio.wav at 16 kHz, truth.json with per-frame keypoints) turned
// into model::TrainingBatch samples. No Qt, no OpenCV.
//
// Frames are resized to the model's resolution and encoded once with the (frozen) VAE; the
// latents of every clip stay in memory. Sample n of a run is a pure function of (seed, n), so the
// data order needs no state beyond the number of samples already used.
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

// One clip folder read from disk.
struct TrainClip {
    std::string name;          // the folder's name
    torch::Tensor frames;      // uint8 [T, 3, S, S] at the model's resolution (RGB)
    std::vector<float> audio;  // 16 kHz mono
    torch::Tensor nose;        // float64 [T, 2]: keypoint 30, normalised by the image size
    torch::Tensor expression;  // float64 [T, 30, 2]: keypoints 17..47 except 30, minus the nose
    torch::Tensor mouth_box;   // float64 [T, 4]: x0, y0, x1, y1 of keypoints 48..67, normalised
    int64_t frame_count() const { return frames.size(0); }
};

// The clip folders under `dir` (sub-folders holding video.mp4, audio.wav and truth.json), sorted
// by name. Throws loopy::Error when there are none.
std::vector<std::string> find_train_clips(const std::string& dir);

// Reads a clip folder; frames are resized (area when shrinking, bilinear when growing) to
// resolution x resolution.
TrainClip read_train_clip(const std::string& folder, int64_t resolution);

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
    // times scaling_factor: what inference does with the portrait).
    TrainDataset(const std::string& dir, const model::LoopyConfig& config,
                 model::AutoencoderKLImpl& vae, TrainDataOptions options,
                 const Progress& progress = {});

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
    model::LoopyConfig config_;
    TrainDataOptions options_;
    std::vector<TrainClip> clips_;
    std::vector<torch::Tensor> latents_;  // per clip [T, C, h, w]
};

}  // namespace loopy::render
