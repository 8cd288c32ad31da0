#pragma once
// DDIM sampling schedule, numerically as diffusers 0.25's DDIMScheduler: float32 betas and
// alphas_cumprod, the same timestep spacings and the same step / add_noise / get_velocity maths.
#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace loopy::model {

struct DDIMConfig {
    // Defaults: the Stable Diffusion 1.5 schedule.
    int64_t num_train_timesteps = 1000;
    double beta_start = 0.00085;
    double beta_end = 0.012;
    std::string beta_schedule = "scaled_linear";  // also "linear", "squaredcos_cap_v2"
    bool set_alpha_to_one = false;                // alpha after the last step: 1 or alphas[0]
    int64_t steps_offset = 1;
    std::string prediction_type = "epsilon";   // also "v_prediction", "sample"
    std::string timestep_spacing = "leading";  // also "trailing", "linspace"
    bool clip_sample = false;
    double clip_sample_range = 1.0;
    double eta = 0.0;  // DDIM's stochasticity (step's argument in diffusers)

    // Reads a diffusers scheduler_config.json. Absent keys take diffusers' DDIMScheduler
    // defaults (not SD 1.5's). Throws loopy::Error for options not implemented (trained_betas,
    // thresholding, rescale_betas_zero_snr) and invalid values.
    static DDIMConfig from_json(const nlohmann::json& json);
    void validate() const;
};

struct DDIMStepOutput {
    torch::Tensor prev_sample;           // x_{t-1}
    torch::Tensor pred_original_sample;  // the model's x_0 estimate (a preview)
};

class DDIMScheduler {
  public:
    explicit DDIMScheduler(DDIMConfig config = {});

    // Chooses num_inference_steps timesteps (1 <= N <= num_train_timesteps), descending.
    void set_timesteps(int64_t num_inference_steps);
    const torch::Tensor& timesteps() const { return timesteps_; }  // int64 [N]
    int64_t num_inference_steps() const { return num_inference_steps_; }

    // One denoising step from `timestep` to timestep - T/N. `variance_noise` is used only when
    // eta > 0 (drawn with randn if undefined).
    DDIMStepOutput step_full(const torch::Tensor& model_output, int64_t timestep,
                             const torch::Tensor& sample,
                             const torch::Tensor& variance_noise = {}) const;
    torch::Tensor step(const torch::Tensor& model_output, int64_t timestep,
                       const torch::Tensor& sample) const {
        return step_full(model_output, timestep, sample).prev_sample;
    }

    // q(x_t | x_0): sqrt(a_t) x0 + sqrt(1 - a_t) noise; `timesteps` int64, one per batch item
    // (or a single one).
    torch::Tensor add_noise(const torch::Tensor& original, const torch::Tensor& noise,
                            const torch::Tensor& timesteps) const;
    // v-prediction target: sqrt(a_t) noise - sqrt(1 - a_t) x0.
    torch::Tensor velocity(const torch::Tensor& sample, const torch::Tensor& noise,
                           const torch::Tensor& timesteps) const;

    const DDIMConfig& config() const { return config_; }
    const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  // float32 [T]
    double init_noise_sigma() const { return 1.0; }

  private:
    torch::Tensor alpha_at(int64_t timestep) const;  // 0-dim; final alpha for t < 0
    torch::Tensor gather_alphas(const torch::Tensor& timesteps, const torch::Tensor& like) const;

    DDIMConfig config_;
    torch::Tensor betas_, alphas_cumprod_, final_alpha_cumprod_, timesteps_;
    int64_t num_inference_steps_ = 0;
};

}  // namespace loopy::model
