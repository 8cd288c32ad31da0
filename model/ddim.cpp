#include "model/ddim.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "model/config_json.h"

namespace loopy::model {

namespace {

template <typename T>
void read_key(const nlohmann::json& json, const char* key, T& value) {
    read_config_key(json, key, value, "DDIM");
}

void require(bool ok, const std::string& message) {
    if (!ok) throw Error("DDIM config: " + message);
}

// diffusers' betas_for_alpha_bar with the cosine transform (computed in double, stored float32).
torch::Tensor cosine_betas(int64_t steps) {
    auto alpha_bar = [](double t) {
        const double c = std::cos((t + 0.008) / 1.008 * std::acos(-1.0) / 2);
        return c * c;
    };
    std::vector<double> betas;
    for (int64_t i = 0; i < steps; ++i) {
        const double t1 = static_cast<double>(i) / steps, t2 = static_cast<double>(i + 1) / steps;
        betas.push_back(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
    }
    return torch::tensor(betas, torch::kDouble).to(torch::kFloat);
}

// numpy's round: halves go to the even neighbour.
int64_t round_half_even(double x) {
    double r = std::round(x);
    if (std::fabs(x - std::trunc(x)) == 0.5) r = 2.0 * std::round(x / 2.0);
    return static_cast<int64_t>(r);
}

}  // namespace

// --- config -----------------------------------------------------------------------------------

DDIMConfig DDIMConfig::from_json(const nlohmann::json& json) {
    if (!json.is_object()) throw Error("DDIM config: expected a JSON object");
    require(!json.contains("trained_betas") || json.at("trained_betas").is_null(),
            "trained_betas is not supported");
    bool unsupported = false;
    read_key(json, "thresholding", unsupported);
    require(!unsupported, "thresholding is not supported");
    read_key(json, "rescale_betas_zero_snr", unsupported);
    require(!unsupported, "rescale_betas_zero_snr is not supported");

    DDIMConfig c;  // diffusers' DDIMScheduler defaults for absent keys
    c.beta_start = 0.0001;
    c.beta_end = 0.02;
    c.beta_schedule = "linear";
    c.set_alpha_to_one = true;
    c.steps_offset = 0;
    c.clip_sample = true;
    read_key(json, "num_train_timesteps", c.num_train_timesteps);
    read_key(json, "beta_start", c.beta_start);
    read_key(json, "beta_end", c.beta_end);
    read_key(json, "beta_schedule", c.beta_schedule);
    read_key(json, "set_alpha_to_one", c.set_alpha_to_one);
    read_key(json, "steps_offset", c.steps_offset);
    read_key(json, "prediction_type", c.prediction_type);
    read_key(json, "timestep_spacing", c.timestep_spacing);
    read_key(json, "clip_sample", c.clip_sample);
    read_key(json, "clip_sample_range", c.clip_sample_range);
    c.validate();
    return c;
}

void DDIMConfig::validate() const {
    require(num_train_timesteps >= 1, "num_train_timesteps must be positive");
    require(beta_schedule == "linear" || beta_schedule == "scaled_linear" ||
                beta_schedule == "squaredcos_cap_v2",
            "beta_schedule '" + beta_schedule + "' is not supported");
    require(prediction_type == "epsilon" || prediction_type == "v_prediction" ||
                prediction_type == "sample",
            "prediction_type '" + prediction_type + "' is not supported");
    require(timestep_spacing == "leading" || timestep_spacing == "trailing" ||
                timestep_spacing == "linspace",
            "timestep_spacing '" + timestep_spacing + "' is not supported");
    require(steps_offset >= 0, "steps_offset must not be negative");
    require(eta >= 0, "eta must not be negative");
}

// --- scheduler --------------------------------------------------------------------------------

DDIMScheduler::DDIMScheduler(DDIMConfig config) : config_(std::move(config)) {
    config_.validate();
    const int64_t steps = config_.num_train_timesteps;
    if (config_.beta_schedule == "linear") {
        betas_ = torch::linspace(config_.beta_start, config_.beta_end, steps, torch::kFloat);
    } else if (config_.beta_schedule == "scaled_linear") {
        betas_ = torch::linspace(std::sqrt(config_.beta_start), std::sqrt(config_.beta_end), steps,
                                 torch::kFloat)
                     .pow(2);
    } else {
        betas_ = cosine_betas(steps);
    }
    alphas_cumprod_ = torch::cumprod(1.0 - betas_, 0);  // float32, as diffusers
    final_alpha_cumprod_ =
        config_.set_alpha_to_one ? torch::tensor(1.0f) : alphas_cumprod_[0].clone();
}

void DDIMScheduler::set_timesteps(int64_t n) {
    const int64_t train = config_.num_train_timesteps;
    if (n < 1 || n > train)
        throw Error("DDIM: number of inference steps must be in [1, " + std::to_string(train) +
                    "], got " + std::to_string(n));
    std::vector<int64_t> t(n);
    if (config_.timestep_spacing == "leading") {
        const int64_t ratio = train / n;
        for (int64_t i = 0; i < n; ++i)
            t[i] = (n - 1 - i) * ratio + config_.steps_offset;
    } else if (config_.timestep_spacing == "trailing") {
        // np.round(np.arange(T, 0, -T/n)) - 1 with numpy's arange fill rule (start + i*delta,
        // delta re-derived from the second element). numpy can emit an (n+1)-th value (-1) for
        // some n through rounding of the length; we keep exactly n.
        const double ratio = static_cast<double>(train) / n, start = static_cast<double>(train);
        const double delta = (start - ratio) - start;
        for (int64_t i = 0; i < n; ++i)
            t[i] = round_half_even(i == 1 ? start - ratio : start + i * delta) - 1;
    } else {  // linspace: np.linspace(0, T-1, n).round()[::-1]
        const double step = n > 1 ? static_cast<double>(train - 1) / (n - 1) : 0.0;
        for (int64_t i = 0; i < n; ++i)
            t[n - 1 - i] = i == n - 1 && n > 1 ? train - 1 : round_half_even(i * step);
    }
    timesteps_ = torch::tensor(t, torch::kLong);
    num_inference_steps_ = n;
}

torch::Tensor DDIMScheduler::alpha_at(int64_t timestep) const {
    if (timestep < 0) return final_alpha_cumprod_;
    if (timestep >= config_.num_train_timesteps)
        throw Error("DDIM: timestep " + std::to_string(timestep) + " is outside [0, " +
                    std::to_string(config_.num_train_timesteps) +
                    ") (with 'leading' spacing and steps_offset, use fewer steps than " +
                    std::to_string(config_.num_train_timesteps) + ")");
    return alphas_cumprod_[timestep];
}

DDIMStepOutput DDIMScheduler::step_full(const torch::Tensor& model_output, int64_t timestep,
                                        const torch::Tensor& sample,
                                        const torch::Tensor& variance_noise) const {
    if (num_inference_steps_ < 1) throw Error("DDIM: call set_timesteps before step");
    const int64_t prev_timestep = timestep - config_.num_train_timesteps / num_inference_steps_;
    // 0-dim float32 tensors, so the arithmetic (and dtype promotion) is diffusers'.
    const auto alpha_t = alpha_at(timestep);
    const auto alpha_prev = alpha_at(prev_timestep);
    const auto beta_t = 1 - alpha_t;

    torch::Tensor x0, eps;
    if (config_.prediction_type == "epsilon") {
        x0 = (sample - beta_t.pow(0.5) * model_output) / alpha_t.pow(0.5);
        eps = model_output;
    } else if (config_.prediction_type == "sample") {
        x0 = model_output;
        eps = (sample - alpha_t.pow(0.5) * x0) / beta_t.pow(0.5);
    } else {  // v_prediction
        x0 = alpha_t.pow(0.5) * sample - beta_t.pow(0.5) * model_output;
        eps = alpha_t.pow(0.5) * model_output + beta_t.pow(0.5) * sample;
    }
    if (config_.clip_sample) x0 = x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);

    // sigma_t = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)), formula (16).
    const auto variance = ((1 - alpha_prev) / beta_t) * (1 - alpha_t / alpha_prev);
    const auto std_dev = config_.eta * variance.pow(0.5);
    auto direction = (1 - alpha_prev - std_dev.pow(2)).pow(0.5) * eps;
    auto prev = alpha_prev.pow(0.5) * x0 + direction;
    if (config_.eta > 0) {
        const auto noise = variance_noise.defined() ? variance_noise : torch::randn_like(eps);
        prev = prev + std_dev * noise;
    }
    return {prev, x0};
}

torch::Tensor DDIMScheduler::gather_alphas(const torch::Tensor& timesteps,
                                           const torch::Tensor& like) const {
    auto t = timesteps.to(torch::kLong).flatten();
    if (t.numel() == 0) throw Error("DDIM: no timesteps given");
    if (t.min().item<int64_t>() < 0 || t.max().item<int64_t>() >= config_.num_train_timesteps)
        throw Error("DDIM: timesteps must be in [0, " +
                    std::to_string(config_.num_train_timesteps) + ")");
    auto a =
        alphas_cumprod_.to(like.device(), like.scalar_type()).index_select(0, t.to(like.device()));
    std::vector<int64_t> shape(std::max<int64_t>(like.dim(), 1), 1);
    shape[0] = a.size(0);
    return a.view(shape);  // [B, 1, 1, ...] broadcasts over the sample
}

torch::Tensor DDIMScheduler::add_noise(const torch::Tensor& original, const torch::Tensor& noise,
                                       const torch::Tensor& timesteps) const {
    const auto a = gather_alphas(timesteps, original);
    return a.pow(0.5) * original + (1 - a).pow(0.5) * noise;
}

torch::Tensor DDIMScheduler::velocity(const torch::Tensor& sample, const torch::Tensor& noise,
                                      const torch::Tensor& timesteps) const {
    const auto a = gather_alphas(timesteps, sample);
    return a.pow(0.5) * noise - (1 - a).pow(0.5) * sample;
}

}  // namespace loopy::model
