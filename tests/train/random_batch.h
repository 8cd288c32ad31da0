#pragma once
// Random training batches for the trainer tests (model/training.h), fully determined by a seed.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cstdint>

#include "model/training.h"

namespace loopy::test {

// A random batch of `b` items for `config`.
inline model::TrainingBatch random_batch(const model::LoopyConfig& config, int64_t b,
                                         uint64_t seed) {
    auto gen = at::detail::createCPUGenerator(seed);
    const int64_t c = config.vae_config().latent_channels, s = config.latent_size();
    const int64_t f = config.num_frames, h = config.history_frames();
    model::TrainingBatch batch;
    batch.latents = torch::randn({b, f, c, s, s}, gen);
    batch.history = torch::randn({b, h, c, s, s}, gen);
    batch.history_valid = torch::rand({b, h}, gen) < 0.7;
    batch.reference = torch::randn({b, c, s, s}, gen);
    const auto plan = model::plan_audio_window(config.audio_encoder_config(), {}, 0, f);
    for (int64_t i = 0; i < b; ++i) {
        auto wave = torch::randn({plan.num_samples}, gen) * 0.1;
        batch.audio.emplace_back(wave.data_ptr<float>(), wave.data_ptr<float>() + wave.numel());
    }
    batch.head_variance = torch::rand({b, 1}, gen) * 1e-4;
    batch.expression_variance = torch::rand({b, 1}, gen) * 1e-4;
    return batch;
}

// Items [first, first + count) of `batch` (a rank's share of a global batch).
inline model::TrainingBatch slice_batch(const model::TrainingBatch& batch, int64_t first,
                                        int64_t count) {
    model::TrainingBatch out;
    out.latents = batch.latents.narrow(0, first, count);
    out.history = batch.history.narrow(0, first, count);
    out.history_valid = batch.history_valid.narrow(0, first, count);
    out.reference = batch.reference.narrow(0, first, count);
    out.audio.assign(batch.audio.begin() + first, batch.audio.begin() + first + count);
    out.head_variance = batch.head_variance.narrow(0, first, count);
    out.expression_variance = batch.expression_variance.narrow(0, first, count);
    return out;
}

}  // namespace loopy::test
