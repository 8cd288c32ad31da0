#include "model/audio_pretraining.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace loopy::model {

namespace {

std::vector<std::pair<std::string, torch::Tensor>> encoder_and_head(LoopyModelImpl& model,
                                                                    torch::nn::Linear& head) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& item : model.audio_encoder->named_parameters())
        out.emplace_back("audio_encoder." + item.key(), item.value());
    for (const auto& item : head->named_parameters())
        out.emplace_back("head." + item.key(), item.value());
    return out;
}

torch::nn::Linear make_head(const LoopyConfig& config, uint64_t seed) {
    torch::manual_seed(seed);
    return torch::nn::Linear(
        config.audio_window_frames() * config.audio_layers() * config.audio_channels(), 1);
}

}  // namespace

AudioPretrainer::AudioPretrainer(LoopyModel model, AudioPretrainerOptions options)
    : model_(std::move(model)),
      options_(options),
      head_(make_head(model_->config, options.seed)),
      optimizer_(encoder_and_head(*model_, head_), options.adamw) {
    model_->audio_encoder->train();
    for (auto& p : model_->audio_encoder->parameters())
        p.set_requires_grad(true);
}

torch::Tensor AudioPretrainer::forward(const std::vector<std::vector<float>>& audio,
                                       int64_t frames) {
    const auto plan =
        plan_audio_window(model_->config.audio_encoder_config(), options_.audio, 0, frames);
    std::vector<torch::Tensor> windows;  // each [F, 2w+1, L, C]
    for (const auto& samples : audio) {
        if (static_cast<int64_t>(samples.size()) != plan.num_samples)
            throw Error("audio pretraining: each item needs " + std::to_string(plan.num_samples) +
                        " samples, got " + std::to_string(samples.size()));
        windows.push_back(
            clip_audio_windows(*model_->audio_encoder, plan, options_.audio, samples, frames));
    }
    const auto x = torch::stack(windows);  // [B, F, 2w+1, L, C]
    return head_(x.flatten(2)).squeeze(-1);
}

StepStats AudioPretrainer::step(const AudioPretrainBatch& batch) {
    if (!batch.targets.defined() || batch.targets.dim() != 2 ||
        batch.targets.size(0) != batch.size())
        throw Error("audio pretraining: targets must be [B, F], one row per audio window");
    DeterministicGuard deterministic(options_.reproducible);
    optimizer_.zero_grad();
    const auto loss = torch::mse_loss(forward(batch.audio, batch.targets.size(1)), batch.targets);
    loss.backward();
    const double warmup = static_cast<double>(std::max<int64_t>(1, options_.warmup_steps));
    const double lr = options_.lr * std::min(1.0, static_cast<double>(step_ + 1) / warmup);
    return apply_update(optimizer_, loss.item<double>(), lr, options_.max_grad_norm, ++step_);
}

torch::Tensor AudioPretrainer::predict(const std::vector<std::vector<float>>& audio,
                                       int64_t frames) {
    torch::NoGradGuard no_grad;
    return forward(audio, frames);
}

double pearson_correlation(const torch::Tensor& a, const torch::Tensor& b) {
    const auto x = a.reshape({-1}).to(torch::kFloat64), y = b.reshape({-1}).to(torch::kFloat64);
    if (x.numel() != y.numel()) throw Error("correlation: series of different lengths");
    const auto dx = x - x.mean(), dy = y - y.mean();
    const double denominator =
        std::sqrt((dx * dx).sum().item<double>() * (dy * dy).sum().item<double>());
    return denominator > 0 ? (dx * dy).sum().item<double>() / denominator : 0.0;
}

}  // namespace loopy::model
