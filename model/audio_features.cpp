#include "model/audio_features.h"

#include <algorithm>

#include "core/error.h"
#include "model/loopy_config.h"

namespace loopy::model {

namespace {

int64_t product(const std::vector<int64_t>& values) {
    int64_t p = 1;
    for (auto v : values)
        p *= v;
    return p;
}

// Samples one CNN frame sees: its receptive field.
int64_t receptive_field(const Wav2Vec2Config& c) {
    int64_t field = 1, jump = 1;
    for (size_t i = 0; i < c.conv_kernel.size(); ++i) {
        field += (c.conv_kernel[i] - 1) * jump;
        jump *= c.conv_stride[i];
    }
    return field;
}

}  // namespace

AudioFeatureOptions audio_feature_options(const LoopyConfig& config, double context_seconds) {
    AudioFeatureOptions options;
    options.window = config.audio_projection.window;
    options.context_seconds = context_seconds;
    return options;
}

AudioWindowPlan plan_audio_window(const Wav2Vec2Config& encoder, const AudioFeatureOptions& options,
                                  int64_t first_frame, int64_t num_frames) {
    const int64_t stride = product(encoder.conv_stride);
    if (stride <= 0 || kSamplesPerFrame % stride != 0)
        throw Error("audio encoder: its frame stride (" + std::to_string(stride) +
                    " samples) must divide one video frame (" + std::to_string(kSamplesPerFrame) +
                    " samples at 16 kHz, 25 fps)");
    if (num_frames <= 0 || options.window < 0 || options.context_seconds < 0)
        throw Error("audio window: invalid frame count, window or context");
    AudioWindowPlan plan;
    plan.features_per_frame = kSamplesPerFrame / stride;
    // Context rounded to whole encoder frames, so feature frames stay on the stream's grid.
    const int64_t context =
        static_cast<int64_t>(options.context_seconds * kAudioSampleRate) / stride * stride;
    const int64_t frames = num_frames + 2 * options.window;
    const int64_t tail = std::max<int64_t>(0, receptive_field(encoder) - stride);
    plan.first_sample = (first_frame - options.window) * kSamplesPerFrame - context;
    plan.num_samples = context + frames * kSamplesPerFrame + tail;
    plan.first_feature = context / stride;
    return plan;
}

torch::Tensor clip_audio_windows(Wav2Vec2ModelImpl& encoder, const AudioWindowPlan& plan,
                                 const AudioFeatureOptions& options,
                                 const std::vector<float>& window_samples, int64_t num_frames) {
    if (static_cast<int64_t>(window_samples.size()) != plan.num_samples)
        throw Error("audio window: expected " + std::to_string(plan.num_samples) + " samples");
    const auto param = encoder.parameters().front();
    auto wave = torch::from_blob(const_cast<float*>(window_samples.data()), {1, plan.num_samples},
                                 torch::kFloat32)
                    .to(param.device());
    wave = normalize_waveform(wave).to(param.scalar_type());
    const auto out = encoder.forward(wave);
    // [1, T, C] per layer -> [T, L, C], layers 1..L (the CNN projection, layer 0, is left out).
    std::vector<torch::Tensor> layers(out.hidden_states.begin() + 1, out.hidden_states.end());
    auto features = torch::stack(layers, 2)[0].to(torch::kFloat32);
    const int64_t frames = num_frames + 2 * options.window;
    const int64_t needed = plan.first_feature + frames * plan.features_per_frame;
    if (features.size(0) < needed)
        throw Error("audio window: the encoder gave " + std::to_string(features.size(0)) +
                    " frames, " + std::to_string(needed) + " needed");
    // Video frame k (from f0 - window) = mean of its features_per_frame encoder frames.
    auto per_frame =
        features.narrow(0, plan.first_feature, frames * plan.features_per_frame)
            .reshape({frames, plan.features_per_frame, features.size(1), features.size(2)})
            .mean(1);
    // [frames, L, C] -> frame t gets t-window..t+window.
    return per_frame.unfold(0, 2 * options.window + 1, 1).permute({0, 3, 1, 2}).contiguous();
}

void AudioSampleBuffer::push(const float* samples, std::size_t count) {
    if (ended_) throw Error("audio stream: samples pushed after its end");
    samples_.insert(samples_.end(), samples, samples + count);
    peak_held_ = std::max(peak_held_, samples_.size());
}

std::vector<float> AudioSampleBuffer::range(int64_t begin, int64_t end) const {
    if (std::max<int64_t>(begin, 0) < std::min(end, offset_))
        throw Error("audio stream: samples from " + std::to_string(begin) +
                    " were already forgotten");
    std::vector<float> out(static_cast<size_t>(std::max<int64_t>(0, end - begin)), 0.0f);
    const int64_t from = std::max(begin, offset_), to = std::min(end, total_samples());
    if (from < to)
        std::copy(samples_.begin() + (from - offset_), samples_.begin() + (to - offset_),
                  out.begin() + (from - begin));
    return out;
}

void AudioSampleBuffer::forget_before(int64_t sample) {
    const int64_t drop = std::min<int64_t>(sample - offset_, samples_.size());
    if (drop <= 0) return;
    samples_.erase(samples_.begin(), samples_.begin() + drop);
    offset_ += drop;
}

}  // namespace loopy::model
