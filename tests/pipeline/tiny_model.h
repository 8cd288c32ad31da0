#pragma once
// Random-weight Loopy models for the pipeline tests: the `tiny` network, optionally at a smaller
// resolution, with every parameter (zero-initialised layers included) moved off its initial
// value so that each condition changes the output.
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/engine.h"
#include "model/loopy_model.h"

namespace loopy::test {

inline model::LoopyConfig tiny_config(int64_t resolution = 64) {
    auto config = model::LoopyConfig::preset("tiny");
    config.resolution = resolution;
    config.validate();
    return config;
}

// Smaller still, for tests about length rather than pictures: 32x32 frames, 4x4 latents, a
// two-level U-Net of width 8 and a one-layer audio encoder of width 16.
inline model::LoopyConfig micro_config() {
    auto config = tiny_config(32);
    config.name = "micro";
    config.unet["block_out_channels"] = {8, 8};
    config.unet["down_block_types"] = {"CrossAttnDownBlock2D", "DownBlock2D"};
    config.unet["up_block_types"] = {"UpBlock2D", "CrossAttnUpBlock2D"};
    config.unet["norm_num_groups"] = 4;
    config.unet["cross_attention_dim"] = 8;
    config.vae["block_out_channels"] = {8, 8, 8, 8};
    config.vae["norm_num_groups"] = 4;
    config.audio_encoder["conv_dim"] = {16, 16, 16, 16, 16, 16, 16};
    config.audio_encoder["hidden_size"] = 16;
    config.audio_encoder["num_hidden_layers"] = 1;
    config.audio_encoder["num_attention_heads"] = 2;
    config.audio_encoder["intermediate_size"] = 32;
    config.audio_projection.intermediate_dim = 32;
    config.validate();
    return config;
}

inline model::LoopyModel random_network(const model::LoopyConfig& config, uint64_t seed = 1) {
    torch::manual_seed(seed);
    model::LoopyModel net(config);
    torch::NoGradGuard no_grad;
    for (auto& p : net->parameters())
        p.add_(torch::randn_like(p) * 0.05);
    net->eval();
    return net;
}

// A fast preview decoder with fresh random weights for `config`.
inline model::PreviewDecoder random_preview(const model::LoopyConfig& config, uint64_t seed) {
    torch::manual_seed(seed);
    model::PreviewDecoder preview(model::preview_decoder_options(config));
    preview->eval();
    return preview;
}

inline std::shared_ptr<Model> random_model(int64_t resolution = 64, uint64_t seed = 1) {
    return Model::from_network(random_network(tiny_config(resolution), seed));
}

inline void save_random_checkpoint(const std::string& path, int64_t resolution = 64,
                                   uint64_t seed = 1) {
    auto net = random_network(tiny_config(resolution), seed);
    model::save_loopy_checkpoint(path, *net);
}

// A smooth synthetic portrait: colour gradients and a darker disc (no face detector needed).
inline std::vector<uint8_t> test_portrait(int size) {
    std::vector<uint8_t> rgb(static_cast<size_t>(size) * size * 3);
    for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x) {
            const double dx = x - size / 2.0, dy = y - size / 2.0;
            const bool disc = dx * dx + dy * dy < size * size / 9.0;
            auto* p = &rgb[(static_cast<size_t>(y) * size + x) * 3];
            p[0] = static_cast<uint8_t>(disc ? 200 : 255 * x / size);
            p[1] = static_cast<uint8_t>(disc ? 150 : 255 * y / size);
            p[2] = static_cast<uint8_t>(disc ? 120 : 128);
        }
    return rgb;
}

// Speech-like test audio: a vowel-ish tone whose loudness comes and goes at syllable rate.
inline std::vector<float> test_audio(double seconds, double phase = 0) {
    std::vector<float> out(static_cast<size_t>(seconds * 16000));
    for (size_t i = 0; i < out.size(); ++i) {
        const double t = static_cast<double>(i) / 16000;
        const double envelope = 0.5 + 0.5 * std::sin(2 * M_PI * 4 * t + phase);
        out[i] = static_cast<float>(
            0.3 * envelope * (std::sin(2 * M_PI * 180 * t) + 0.5 * std::sin(2 * M_PI * 720 * t)));
    }
    return out;
}

}  // namespace loopy::test
