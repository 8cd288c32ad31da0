#pragma once
// Training the VAE on its own (`loopy train-vae`): reconstruction (L1 + MSE) plus a small KL term,
// as Stable Diffusion's autoencoder without its adversarial and perceptual losses. The diffusion
// stages keep the VAE frozen, so it is trained first (docs/training.md).
#include <torch/torch.h>

#include <cstdint>

#include "model/autoencoder_kl.h"
#include "model/training.h"

namespace loopy::model {

struct VaeLossOptions {
    double l1_weight = 1.0;
    double mse_weight = 1.0;
    double kl_weight = 1e-6;  // on the KL summed over latent elements, averaged over the batch
};

struct VaeLoss {
    torch::Tensor total, reconstruction, kl;
};

// images [B, 3, H, W] in [-1, 1]; the latent is sampled from the posterior with `generator`.
VaeLoss vae_loss(AutoencoderKLImpl& vae, const torch::Tensor& images, const VaeLossOptions& options,
                 at::Generator& generator);

struct VaeTrainerOptions {
    double lr = 1e-4;
    AdamW::Options adamw;
    double max_grad_norm = 1.0;  // <= 0: no clipping
    VaeLossOptions loss;
    uint64_t seed = 0;
    bool reproducible = true;  // as TrainerOptions::reproducible
};

// Stable Diffusion's rule for a new VAE: the scaling factor that gives the latents (the
// posterior modes of `images`, [N, 3, S, S] in [-1, 1]) unit standard deviation, 1 / std. The
// diffusion schedule assumes unit-variance data; SD's 0.18215 fits SD's VAE only.
double latent_scaling_factor(AutoencoderKLImpl& vae, const torch::Tensor& images);

// AdamW over every VAE parameter; the generator of step N is seeded by (seed, N).
class VaeTrainer {
  public:
    VaeTrainer(AutoencoderKL vae, VaeTrainerOptions options);
    StepStats step(const torch::Tensor& images);
    int64_t steps_done() const { return step_; }

  private:
    AutoencoderKL vae_;
    VaeTrainerOptions options_;
    AdamW optimizer_;
    int64_t step_ = 0;
};

}  // namespace loopy::model
