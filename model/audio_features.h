#pragma once
// The audio path of generation: 16 kHz mono samples in, per-video-frame wav2vec windows out, the
// same for a whole file and for a live stream fed in chunks.
//
// wav2vec 2.0 attends over its whole input, so features depend on how audio is cut. To make the
// file and the stream give identical frames, both cut it the same way: the features of a clip
// (video frames f0 .. f0+F-1) come from one wav2vec pass over a window that starts
// `context_seconds` before the clip's first audio window and ends after the clip's lookahead
// (the 2-frame, 80 ms window of the last frame plus the CNN's receptive-field tail). Audio before
// the start and after the end of the stream is silence (zeros).
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/wav2vec2.h"

namespace loopy::model {

inline constexpr int kAudioSampleRate = 16000;
inline constexpr int kVideoFps = 25;
inline constexpr int64_t kSamplesPerFrame = kAudioSampleRate / kVideoFps;  // 640
// wav2vec's left context per clip: the one default of generation and training, which must match.
inline constexpr double kDefaultAudioContextSeconds = 1.0;

struct LoopyConfig;

// Where a clip's wav2vec window lies on the stream's sample axis.
struct AudioWindowPlan {
    int64_t first_sample = 0;        // may be negative (silence before the stream)
    int64_t num_samples = 0;         // window length
    int64_t first_feature = 0;       // wav2vec frame of video frame f0 - window
    int64_t features_per_frame = 0;  // wav2vec frames per video frame (2 at 50 Hz)
    int64_t end_sample() const { return first_sample + num_samples; }
};

struct AudioFeatureOptions {
    int64_t window = 2;  // video frames t-window..t+window per frame (config)
    double context_seconds = kDefaultAudioContextSeconds;  // left context given to wav2vec
};

// The options of a model: its config's window, and the left context it is run (or trained) with.
AudioFeatureOptions audio_feature_options(const LoopyConfig& config,
                                          double context_seconds = kDefaultAudioContextSeconds);

AudioWindowPlan plan_audio_window(const Wav2Vec2Config& encoder, const AudioFeatureOptions& options,
                                  int64_t first_frame, int64_t num_frames);

// Per-frame windows of every transformer layer's output for frames first_frame .. +num_frames-1:
// [num_frames, 2 * window + 1, L, C]. `window_samples` are the plan's samples (already padded
// with zeros outside the stream); each window is normalised as one utterance.
torch::Tensor clip_audio_windows(Wav2Vec2ModelImpl& encoder, const AudioWindowPlan& plan,
                                 const AudioFeatureOptions& options,
                                 const std::vector<float>& window_samples, int64_t num_frames);

// A growing stream of samples with absolute positions; old samples are forgotten once no future
// clip needs them, so a 10-minute file or an endless microphone needs bounded memory.
class AudioSampleBuffer {
  public:
    void push(const float* samples, std::size_t count);
    void end() { ended_ = true; }
    bool ended() const { return ended_; }
    int64_t total_samples() const { return offset_ + static_cast<int64_t>(samples_.size()); }
    // Samples [begin, end) with zeros outside [0, total). Throws if part of it was forgotten.
    std::vector<float> range(int64_t begin, int64_t end) const;
    // True when every sample of [begin, end) inside the stream has arrived.
    bool available(int64_t end) const { return ended_ || end <= total_samples(); }
    void forget_before(int64_t sample);  // no later range() starts before this
    std::size_t held_samples() const { return samples_.size(); }
    std::size_t peak_held_samples() const { return peak_held_; }

  private:
    std::vector<float> samples_;
    int64_t offset_ = 0;  // absolute index of samples_[0]
    bool ended_ = false;
    std::size_t peak_held_ = 0;
};

}  // namespace loopy::model
