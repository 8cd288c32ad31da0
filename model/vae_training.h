#pragma once
// Training the VAE on its own (`loopy train-vae`): reconstruction (L1 + MSE) plus a small KL term,
// as Stable Diffusion's autoencoder without its adversarial and perceptual losses. The diffusion
// stages keep the VAE frozen, so it is trained first (docs/training.md). Also the distillation
// of the fast preview decoder from the trained VAE's decoder (`loopy train-vae --preview`).
#include <torch/torch.h>

#include <cstdint>

#include "model/autoencoder_kl.h"
#include "model/preview_decoder.h"
#include "model/training.h"

namespace loopy::model {

struct VaeLossOptions {
    double l1_weight = 1.0;
    double mse_weight = 1.0;
    double kl_weight = 1e-6;  // on the KL summed over latent elements, averaged over the batch
    // Decode the posterior's mode instead of a sample: the latents diffusion makes are mode-like
    // (decoder-only fine-tuning).
    bool posterior_mode = false;
};

struct VaeLoss {
    torch::Tensor total, reconstruction, kl;
};

// images [B, 3, H, W] in [-1, 1]; the latent is sampled from the posterior with `generator`.
// weights [B, 1, H, W] (undefined: uniform): the reconstruction terms become weighted means,
// e.g. a mouth box weighted more (render::mouth_weight_map) so that small details get drawn.
VaeLoss vae_loss(AutoencoderKLImpl& vae, const torch::Tensor& images, const VaeLossOptions& options,
                 at::Generator& generator, const torch::Tensor& weights = {});

struct VaeTrainerOptions {
    double lr = 1e-4;
    AdamW::Options adamw;
    double max_grad_norm = 1.0;  // <= 0: no clipping
    VaeLossOptions loss;
    uint64_t seed = 0;
    bool reproducible = true;  // as TrainerOptions::reproducible
    // Train only the decoder (and post_quant_conv) on the posterior's mode: the encoder, hence
    // the latents and every diffusion model trained on them, stay valid.
    bool decoder_only = false;
};

// Stable Diffusion's rule for a new VAE: the scaling factor that gives the latents (the
// posterior modes of `images`, [N, 3, S, S] in [-1, 1]) unit standard deviation, 1 / std. The
// diffusion schedule assumes unit-variance data; SD's 0.18215 fits SD's VAE only.
double latent_scaling_factor(AutoencoderKLImpl& vae, const torch::Tensor& images);

// PSNR (dB, peak-to-peak 2) of the VAE's reconstruction (decoder of the posterior mode, clamped
// to [-1, 1]) against `images` [N, 3, S, S] in [-1, 1]. The diffusion model's frames can be no
// sharper than this.
double reconstruction_psnr(AutoencoderKLImpl& vae, const torch::Tensor& images);

// AdamW over every VAE parameter (or the decoder's); the generator of step N is seeded by
// (seed, N).
class VaeTrainer {
  public:
    VaeTrainer(AutoencoderKL vae, VaeTrainerOptions options);
    StepStats step(const torch::Tensor& images, const torch::Tensor& weights = {});
    int64_t steps_done() const { return step_; }

  private:
    AutoencoderKL vae_;
    VaeTrainerOptions options_;
    AdamW optimizer_;
    int64_t step_ = 0;
};

// --- the fast preview decoder (model/preview_decoder.h), distilled from the VAE decoder ---

// What the preview decoder learns from: the latents diffusion makes (posterior modes of `images`
// times the scaling factor), and what the full VAE decoder makes of them. No gradients; the VAE
// stays as it is.
struct PreviewTargets {
    torch::Tensor latents;  // [N, C, h, w]
    torch::Tensor images;   // [N, 3, H, W], the full decoder's output
    // [N, 1, H, W] or undefined (uniform): the loss becomes a weighted mean, as vae_loss's, so
    // that a mouth box weighted more keeps the few mouth-interior pixels a plain mean blurs away.
    torch::Tensor weights;
};
PreviewTargets preview_targets(AutoencoderKLImpl& vae, const torch::Tensor& images);

struct PreviewLossOptions {
    double mse_weight = 1.0;
    double l1_weight = 0.5;  // sharper edges than MSE alone
};
torch::Tensor preview_loss(PreviewDecoderImpl& preview, const PreviewTargets& batch,
                           const PreviewLossOptions& options);

// PSNR (dB) of the preview's output against the full decoder's, both clamped to [-1, 1] (the
// range frames are quantised from), over all of `targets`.
double preview_psnr(PreviewDecoderImpl& preview, const PreviewTargets& targets);

struct PreviewDistillerOptions {
    double lr = 2e-3;
    int64_t total_steps = 0;  // > 0: cosine decay of the learning rate to 5 % at this step
    AdamW::Options adamw{0.9, 0.999, 1e-8, 0.0};
    double max_grad_norm = 1.0;  // <= 0: no clipping
    PreviewLossOptions loss;
    bool reproducible = true;  // as TrainerOptions::reproducible
};

// AdamW over the preview decoder's parameters only.
class PreviewDistiller {
  public:
    PreviewDistiller(PreviewDecoder preview, PreviewDistillerOptions options);
    StepStats step(const PreviewTargets& batch);
    int64_t steps_done() const { return step_; }
    double lr_at(int64_t step) const;

  private:
    PreviewDecoder preview_;
    PreviewDistillerOptions options_;
    AdamW optimizer_;
    int64_t step_ = 0;
};

}  // namespace loopy::model
