#pragma once
// Loopy's temporal segment module (TSM): a long motion history abstracted to a few motion frames.
//
// The history before the current clip is split into K segments. Segment k (k = 1 nearest the
// clip) covers round(s * (1 + r)^(k - 1)) frames and is abstracted to s motion frames: it is cut
// into s consecutive groups and each group gives one frame (its centre frame, the mean of its
// frames, or a random one of them). Defaults s = 4, r = 1, K = 5: 4 + 8 + 16 + 32 + 64 = 124
// history frames -> 20 motion frames, the far past at ever coarser steps.
//
// History index 0 is the oldest frame, H - 1 the one just before the clip; motion frames come out
// in the same (chronological) order. Frames not generated yet are zero and masked.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace loopy::model {

enum class SegmentSampling { Uniform, Mean, Random };

std::string to_string(SegmentSampling sampling);                  // "uniform", "mean", "random"
SegmentSampling parse_segment_sampling(const std::string& name);  // throws loopy::Error

struct TemporalSegmentOptions {
    int64_t stride = 4;         // s: motion frames per segment
    double expand_ratio = 1.0;  // r: each segment is (1 + r) times longer than the next nearer
    int64_t num_segments = 5;   // K
    SegmentSampling sampling = SegmentSampling::Uniform;

    void validate() const;  // throws loopy::Error
};

// A range of history indices [begin, end).
struct FrameRange {
    int64_t begin = 0;
    int64_t end = 0;
    int64_t size() const { return end - begin; }
};

// The K segments, oldest (k = K) first.
std::vector<FrameRange> temporal_segments(const TemporalSegmentOptions& options);
// H: frames of history the module looks at (124 for the defaults).
int64_t history_length(const TemporalSegmentOptions& options);
// M = K * s: motion frames it produces (20 for the defaults).
int64_t num_motion_frames(const TemporalSegmentOptions& options);
// The M groups (segment j split at floor(i * n / s)), chronological; motion frame i abstracts
// group i.
std::vector<FrameRange> motion_frame_groups(const TemporalSegmentOptions& options);
// Uniform sampling's source frame per motion frame: group.begin + group.size() / 2.
std::vector<int64_t> uniform_source_indices(const TemporalSegmentOptions& options);

struct MotionFrames {
    torch::Tensor frames;  // [B, M, ...]; zero where masked
    torch::Tensor mask;    // bool [B, M]: true where the frame holds generated content
};

// history [B, H, ...] (H = history_length), chronological; valid bool [B, H] (undefined: all
// valid). Uniform: the centre frame (masked if it is not valid). Mean: the mean of the group's
// valid frames (masked if none). Random: a uniformly chosen valid frame of the group, drawn from
// `generator` (masked if none).
MotionFrames abstract_history(const torch::Tensor& history, const torch::Tensor& valid,
                              const TemporalSegmentOptions& options,
                              c10::optional<at::Generator> generator = c10::nullopt);

// The last H generated frames of each video in a batch, for clip-by-clip generation: push each
// finished clip, then abstract() gives the next clip's motion frames.
class MotionHistory {
  public:
    // frame_shape: one frame's shape (e.g. {4, h, w} for latents).
    MotionHistory(const TemporalSegmentOptions& options, int64_t batch,
                  std::vector<int64_t> frame_shape,
                  torch::TensorOptions tensor_options = torch::kFloat32);

    void push(const torch::Tensor& frames);  // [B, n, ...], oldest first
    void reset();                            // forget everything (all frames masked again)

    const torch::Tensor& frames() const { return frames_; }  // [B, H, ...]
    const torch::Tensor& valid() const { return valid_; }    // bool [B, H]
    MotionFrames abstract(c10::optional<at::Generator> generator = c10::nullopt) const;

  private:
    TemporalSegmentOptions options_;
    torch::Tensor frames_, valid_;
};

}  // namespace loopy::model
