#include "model/vae_training.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "core/error.h"

namespace loopy::model {

namespace {

// The trained parameters; the others are frozen (no gradients computed for them).
std::vector<std::pair<std::string, torch::Tensor>> named_vae_parameters(AutoencoderKLImpl& vae,
                                                                        bool decoder_only) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (auto& item : vae.named_parameters()) {
        const auto& name = item.key();
        const bool trained = !decoder_only || name.rfind("decoder.", 0) == 0 ||
                             name.rfind("post_quant_conv.", 0) == 0;
        item.value().set_requires_grad(trained);
        if (trained) out.emplace_back(name, item.value());
    }
    return out;
}

// mean(weights * error) / mean(weights), weights broadcast over the channels.
torch::Tensor weighted_mean(const torch::Tensor& error, const torch::Tensor& weights) {
    if (!weights.defined()) return error.mean();
    return (error * weights).mean() / weights.mean();
}

uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

}  // namespace

VaeLoss vae_loss(AutoencoderKLImpl& vae, const torch::Tensor& images, const VaeLossOptions& options,
                 at::Generator& generator, const torch::Tensor& weights) {
    if (weights.defined() &&
        (weights.dim() != 4 || weights.size(0) != images.size(0) || weights.size(1) != 1 ||
         weights.size(2) != images.size(2) || weights.size(3) != images.size(3)))
        throw Error("VAE loss: weights must be [B, 1, H, W] like the images, got " +
                    c10::str(weights.sizes()));
    const auto posterior = vae.encode(images);
    const auto z = options.posterior_mode ? posterior.mode() : posterior.sample(generator);
    const auto out = vae.decode(z);
    const auto error = out - images;
    VaeLoss loss;
    loss.reconstruction = options.l1_weight * weighted_mean(error.abs(), weights) +
                          options.mse_weight * weighted_mean(error.pow(2), weights);
    const auto var = posterior.std.pow(2);
    loss.kl = 0.5 * (posterior.mean.pow(2) + var - 1.0 - posterior.logvar).flatten(1).sum(1).mean();
    loss.total = loss.reconstruction + options.kl_weight * loss.kl;
    return loss;
}

double latent_scaling_factor(AutoencoderKLImpl& vae, const torch::Tensor& images) {
    torch::NoGradGuard no_grad;
    const bool training = vae.is_training();
    vae.eval();
    std::vector<torch::Tensor> latents;
    for (int64_t i = 0; i < images.size(0); i += 16)
        latents.push_back(
            vae.encode(images.narrow(0, i, std::min<int64_t>(16, images.size(0) - i))).mode());
    vae.train(training);
    const double std = torch::cat(latents).to(torch::kFloat64).std().item<double>();
    if (!(std > 0)) throw Error("VAE latents have no variance: cannot calibrate the scaling");
    return 1.0 / std;
}

double reconstruction_psnr(AutoencoderKLImpl& vae, const torch::Tensor& images) {
    torch::NoGradGuard no_grad;
    const bool training = vae.is_training();
    vae.eval();
    double squared_error = 0;
    constexpr int64_t kChunk = 16;
    for (int64_t i = 0; i < images.size(0); i += kChunk) {
        const auto want = images.narrow(0, i, std::min(kChunk, images.size(0) - i));
        const auto out = vae.decode(vae.encode(want).mode()).clamp(-1, 1);
        squared_error += (out - want).pow(2).sum().item<double>();
    }
    vae.train(training);
    const double mse = squared_error / static_cast<double>(images.numel());
    return 10.0 * std::log10(4.0 / std::max(mse, 1e-20));
}

VaeTrainer::VaeTrainer(AutoencoderKL vae, VaeTrainerOptions options)
    : vae_(std::move(vae)),
      options_(options),
      optimizer_(named_vae_parameters(*vae_, options.decoder_only), options.adamw) {
    if (options_.decoder_only) options_.loss.posterior_mode = true;
    vae_->train();
}

StepStats VaeTrainer::step(const torch::Tensor& images, const torch::Tensor& weights) {
    DeterministicGuard deterministic(options_.reproducible);
    auto generator =
        at::detail::createCPUGenerator(mix(options_.seed ^ mix(static_cast<uint64_t>(step_) + 1)));
    optimizer_.zero_grad();
    auto loss = vae_loss(*vae_, images, options_.loss, generator, weights);
    loss.total.backward();
    return apply_update(optimizer_, loss.total.item<double>(), options_.lr, options_.max_grad_norm,
                        ++step_);
}

// --- preview decoder distillation ---

PreviewTargets preview_targets(AutoencoderKLImpl& vae, const torch::Tensor& images) {
    torch::NoGradGuard no_grad;
    const bool training = vae.is_training();
    vae.eval();
    constexpr int64_t kChunk = 16;
    std::vector<torch::Tensor> latents, decoded;
    for (int64_t i = 0; i < images.size(0); i += kChunk) {
        const auto mode =
            vae.encode(images.narrow(0, i, std::min(kChunk, images.size(0) - i))).mode();
        latents.push_back(mode * vae.config.scaling_factor);
        decoded.push_back(vae.decode(mode));
    }
    vae.train(training);
    return {torch::cat(latents), torch::cat(decoded), {}};
}

torch::Tensor preview_loss(PreviewDecoderImpl& preview, const PreviewTargets& batch,
                           const PreviewLossOptions& options) {
    const auto error = preview.forward(batch.latents) - batch.images;
    return options.mse_weight * weighted_mean(error.pow(2), batch.weights) +
           options.l1_weight * weighted_mean(error.abs(), batch.weights);
}

double preview_psnr(PreviewDecoderImpl& preview, const PreviewTargets& targets) {
    torch::NoGradGuard no_grad;
    const bool training = preview.is_training();
    preview.eval();
    double squared_error = 0;
    constexpr int64_t kChunk = 64;
    const int64_t n = targets.latents.size(0);
    for (int64_t i = 0; i < n; i += kChunk) {
        const int64_t m = std::min(kChunk, n - i);
        const auto out = preview.forward(targets.latents.narrow(0, i, m)).clamp(-1, 1);
        const auto want = targets.images.narrow(0, i, m).clamp(-1, 1);
        squared_error += (out - want).pow(2).sum().item<double>();
    }
    preview.train(training);
    const double mse = squared_error / static_cast<double>(targets.images.numel());
    return 10.0 * std::log10(4.0 / std::max(mse, 1e-12));  // peak-to-peak range 2
}

PreviewDistiller::PreviewDistiller(PreviewDecoder preview, PreviewDistillerOptions options)
    : preview_(std::move(preview)),
      options_(options),
      optimizer_(
          [&] {
              std::vector<std::pair<std::string, torch::Tensor>> params;
              for (auto& item : preview_->named_parameters()) {
                  item.value().set_requires_grad(true);
                  params.emplace_back(item.key(), item.value());
              }
              return params;
          }(),
          options.adamw) {
    preview_->train();
}

double PreviewDistiller::lr_at(int64_t step) const {
    if (options_.total_steps <= 0) return options_.lr;
    const double t = std::min(1.0, static_cast<double>(step) / options_.total_steps);
    constexpr double kFloor = 0.05;
    return options_.lr * (kFloor + (1 - kFloor) * 0.5 * (1 + std::cos(M_PI * t)));
}

StepStats PreviewDistiller::step(const PreviewTargets& batch) {
    DeterministicGuard deterministic(options_.reproducible);
    optimizer_.zero_grad();
    auto loss = preview_loss(*preview_, batch, options_.loss);
    loss.backward();
    const double lr = lr_at(step_);
    return apply_update(optimizer_, loss.item<double>(), lr, options_.max_grad_norm, ++step_);
}

}  // namespace loopy::model
