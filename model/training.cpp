#include "model/training.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <tuple>

#include "core/error.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/torch_compat.h"
#include "model/preview_decoder.h"
#include "model/temporal_segment.h"

namespace loopy::model {

namespace {

namespace fs = std::filesystem;

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

bool contains(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

// The denoising U-Net's layers that stage 2 adds on top of the spatial network.
bool temporal_or_audio_layer(const std::string& name) {
    return contains(name, ".inter_clip_temporal.") || contains(name, ".audio_attentions.") ||
           contains(name, ".motion_modules.");
}

uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// The audio tokens [B, F, N, D] of a batch: wav2vec over each item's window (with gradients:
// the encoder trains in stage 2), then the audio projection.
torch::Tensor batch_audio_tokens(LoopyModelImpl& model, const TrainingBatch& batch,
                                 const AudioFeatureOptions& audio, int64_t frames) {
    if (static_cast<int64_t>(batch.audio.size()) != batch.size())
        throw Error("training batch: one audio window per item needed");
    // Only the window's length and layout matter here, not where the clip starts.
    const auto plan = plan_audio_window(model.config.audio_encoder_config(), audio, 0, frames);
    std::vector<torch::Tensor> windows;
    for (const auto& samples : batch.audio)
        windows.push_back(clip_audio_windows(*model.audio_encoder, plan, audio, samples, frames));
    return model.audio_proj(torch::stack(windows));
}

void check_batch(const TrainingBatch& b, TrainStage stage) {
    if (!b.latents.defined() || b.latents.dim() != 5)
        throw Error("training batch: latents must be [B, F, C, h, w]");
    if (!b.reference.defined() || b.reference.dim() != 4 || b.reference.size(0) != b.size())
        throw Error("training batch: reference must be [B, C, h, w]");
    if (stage == TrainStage::Image) return;
    if (!b.history.defined() || !b.history_valid.defined() || !b.head_variance.defined() ||
        !b.expression_variance.defined())
        throw Error("training batch: stage 2 needs the motion history and the variances");
}

int64_t metadata_int(const Metadata& m, const std::string& key, const std::string& source) {
    auto it = m.find(key);
    if (it == m.end()) throw Error(source + ": no '" + key + "' in its metadata");
    return std::stoll(it->second);
}

}  // namespace

TrainStage parse_train_stage(int stage) {
    if (stage != 1 && stage != 2)
        throw Error("training stage must be 1 or 2, got " + std::to_string(stage));
    return static_cast<TrainStage>(stage);
}

bool trained_in_stage(const std::string& name, TrainStage stage) {
    if (stage == TrainStage::Image)
        return starts_with(name, "reference_unet.") ||
               (starts_with(name, "denoising_unet.") && !temporal_or_audio_layer(name));
    return (starts_with(name, "denoising_unet.") && temporal_or_audio_layer(name)) ||
           starts_with(name, "audio_encoder.") || starts_with(name, "audio_proj.") ||
           starts_with(name, "audio_to_latents.");
}

std::vector<std::pair<std::string, torch::Tensor>> stage_parameters(torch::nn::Module& model,
                                                                    TrainStage stage) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& item : model.named_parameters())
        if (trained_in_stage(item.key(), stage)) out.emplace_back(item.key(), item.value());
    return out;
}

ConditionMasks sample_condition_masks(int64_t batch, at::Generator& generator,
                                      const MaskProbabilities& p) {
    // One uniform draw per item and mask, in a fixed order.
    auto u = torch::rand({3, batch}, generator, torch::kFloat64);
    ConditionMasks m;
    m.drop_audio = u[0] < p.audio;
    m.drop_reference = u[1] < p.reference;
    m.drop_motion = u[2] < p.motion;
    m.condition = torch::randint(0, 3, {batch}, generator, torch::kLong);
    return m;
}

torch::Tensor normalize_variance(const torch::Tensor& variance) {
    return (torch::log10(variance.clamp_min(0) + 1e-7) + 5.0) / 2.0;
}

namespace {

// The random inputs of a batch, each item's drawn from its own generator.
struct BatchDraws {
    ConditionMasks masks;
    torch::Tensor timesteps, noise;
    MotionFrames motion;  // stage 2 only
};

torch::Tensor cat_field(const std::vector<ConditionMasks>& items,
                        torch::Tensor ConditionMasks::*field) {
    std::vector<torch::Tensor> parts;
    for (const auto& m : items)
        parts.push_back(m.*field);
    return torch::cat(parts);
}

// Item i draws masks, timestep, noise, then its TSM sampling from generators[i], so an item's
// draws do not depend on which batch (or rank) it is in.
BatchDraws draw_batch(const TrainingBatch& batch, const torch::Tensor& x0,
                      const LossOptions& options, int64_t num_train_timesteps,
                      const TemporalSegmentOptions& tsm, std::vector<at::Generator>& generators) {
    if (static_cast<int64_t>(generators.size()) != batch.size())
        throw Error("training: one generator per batch item needed");
    torch::NoGradGuard no_grad;
    const bool video = options.stage == TrainStage::Video;
    std::vector<ConditionMasks> masks;
    std::vector<torch::Tensor> timesteps, noise, frames, frame_masks;
    for (int64_t i = 0; i < batch.size(); ++i) {
        auto& gen = generators[static_cast<size_t>(i)];
        masks.push_back(sample_condition_masks(1, gen, options.masks));
        timesteps.push_back(torch::randint(0, num_train_timesteps, {1}, gen, torch::kLong));
        noise.push_back(torch::randn(x0.narrow(0, i, 1).sizes(), gen, x0.options()));
        if (!video) continue;
        auto motion = abstract_history(batch.history.narrow(0, i, 1),
                                       batch.history_valid.narrow(0, i, 1), tsm, gen);
        frames.push_back(motion.frames);
        frame_masks.push_back(motion.mask);
    }
    BatchDraws d;
    d.masks.drop_audio = cat_field(masks, &ConditionMasks::drop_audio);
    d.masks.drop_reference = cat_field(masks, &ConditionMasks::drop_reference);
    d.masks.drop_motion = cat_field(masks, &ConditionMasks::drop_motion);
    d.masks.condition = cat_field(masks, &ConditionMasks::condition);
    d.timesteps = torch::cat(timesteps);
    d.noise = torch::cat(noise);
    if (video) d.motion = {torch::cat(frames), torch::cat(frame_masks)};
    return d;
}

// Per item sum(w * (a - b)^2) / sum(w) (w broadcast over the channels), then the mean over items:
// mse_loss when w is constant, and per item so that ranks of a distributed run average exactly.
torch::Tensor weighted_mse(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& w) {
    if (w.dim() != a.dim() || w.size(0) != a.size(0) || w.size(1) != a.size(1) ||
        w.size(-1) != a.size(-1) || w.size(-2) != a.size(-2))
        throw Error("training batch: loss_weight must be [B, F, 1, h, w] like the latents");
    const auto full = w.expand_as(a).flatten(1);
    return ((full * (a - b).pow(2).flatten(1)).sum(1) / full.sum(1)).mean();
}

}  // namespace

torch::Tensor diffusion_loss(LoopyModelImpl& model, const DDIMScheduler& scheduler,
                             const TrainingBatch& batch, const LossOptions& options,
                             std::vector<at::Generator>& item_generators) {
    check_batch(batch, options.stage);
    const bool video = options.stage == TrainStage::Video;
    const auto x0 = video ? batch.latents : batch.latents.narrow(1, 0, 1);
    const auto draws = draw_batch(batch, x0, options, scheduler.config().num_train_timesteps,
                                  model.config.temporal_segment, item_generators);
    // Drawn on the CPU above; from here on everything is on the model's device.
    const auto device = model.parameters().front().device();
    const auto on = [&](const torch::Tensor& t) { return t.defined() ? t.to(device) : t; };
    const auto x0_d = on(x0), noise = on(draws.noise), t = on(draws.timesteps);
    const auto& masks = draws.masks;

    LoopyInputs in;
    in.latents = scheduler.add_noise(x0_d, noise, t);
    in.timestep = t;
    in.drop.reference = on(masks.drop_reference);
    if (!video) {
        in.reference = model.reference_unet->encode_reference(on(batch.reference));
    } else {
        {
            // The reference net is frozen in stage 2: no graph through it.
            torch::NoGradGuard no_grad;
            in.reference = model.reference_unet->encode_reference(on(batch.reference));
            in.motion =
                model.reference_unet->encode_motion(on(draws.motion.frames), on(draws.motion.mask));
        }
        in.drop.audio = on(masks.drop_audio);
        in.drop.motion = on(masks.drop_motion);
        in.audio_tokens = batch_audio_tokens(model, batch, options.audio, x0.size(1));
        in.motion_condition.type = on(masks.condition);
        in.motion_condition.head_variance = on(normalize_variance(batch.head_variance));
        in.motion_condition.expression_variance = on(normalize_variance(batch.expression_variance));
    }
    // Under autocast the prediction may be bfloat16; the loss is taken in float32.
    const auto prediction = model.predict_noise(in).to(torch::kFloat32);
    const auto target = options.v_prediction ? scheduler.velocity(x0_d, noise, t) : noise;
    if (!batch.loss_weight.defined()) return torch::mse_loss(prediction, target);
    return weighted_mse(prediction, target,
                        on(video ? batch.loss_weight : batch.loss_weight.narrow(1, 0, 1)));
}

// --- AdamW ---

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, Options options)
    : params_(std::move(params)), options_(options) {
    for (const auto& [name, p] : params_) {
        (void)name;
        slots_.push_back({torch::zeros_like(p), torch::zeros_like(p), 0});
    }
}

void AdamW::zero_grad() {
    for (auto& [name, p] : params_) {
        (void)name;
        p.mutable_grad() = torch::Tensor();
    }
}

void AdamW::step(double lr) {
    torch::NoGradGuard no_grad;
    const auto& o = options_;
    for (size_t i = 0; i < params_.size(); ++i) {
        auto& p = params_[i].second;
        if (!p.grad().defined()) continue;
        const auto& g = p.grad();
        auto& s = slots_[i];
        s.step += 1;
        p.mul_(1.0 - lr * o.weight_decay);
        s.exp_avg.mul_(o.beta1).add_(g, 1.0 - o.beta1);
        s.exp_avg_sq.mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
        const double bias1 = 1.0 - std::pow(o.beta1, static_cast<double>(s.step));
        const double bias2 = 1.0 - std::pow(o.beta2, static_cast<double>(s.step));
        const auto denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias2)).add_(o.eps);
        p.addcdiv_(s.exp_avg, denom, -lr / bias1);
    }
}

TensorMap AdamW::state() const {
    TensorMap out;
    for (size_t i = 0; i < params_.size(); ++i) {
        const auto& name = params_[i].first;
        out["adamw.exp_avg." + name] = slots_[i].exp_avg;
        out["adamw.exp_avg_sq." + name] = slots_[i].exp_avg_sq;
        out["adamw.step." + name] = torch::full({1}, slots_[i].step, torch::kLong);
    }
    return out;
}

void AdamW::load_state(const TensorMap& state) {
    auto get = [&](const std::string& key, const torch::Tensor& like) {
        auto it = state.find(key);
        if (it == state.end()) throw Error("training state: '" + key + "' missing");
        if (like.defined() && !it->second.sizes().equals(like.sizes()))
            throw Error("training state: '" + key + "' has the wrong shape");
        return it->second.to(torch::kCPU).clone();
    };
    for (size_t i = 0; i < params_.size(); ++i) {
        const auto& [name, p] = params_[i];
        slots_[i].exp_avg = get("adamw.exp_avg." + name, p).to(p.device(), p.scalar_type());
        slots_[i].exp_avg_sq = get("adamw.exp_avg_sq." + name, p).to(p.device(), p.scalar_type());
        slots_[i].step = get("adamw.step." + name, {}).item<int64_t>();
    }
}

// --- Trainer ---

namespace {

// Sets requires_grad by stage and returns the trained parameters; a pretrained audio encoder
// (`loopy train-audio`) may be kept as it is, the denoiser's image layers fine-tuned in stage 2.
std::vector<std::pair<std::string, torch::Tensor>> prepare_parameters(
    LoopyModelImpl& model, const TrainerOptions& options) {
    auto trained = [&](const std::string& name) {
        const bool image_layer = options.stage == TrainStage::Video && options.train_image_layers &&
                                 starts_with(name, "denoising_unet.") &&
                                 trained_in_stage(name, TrainStage::Image);
        return (trained_in_stage(name, options.stage) || image_layer) &&
               !(options.freeze_audio_encoder && starts_with(name, "audio_encoder."));
    };
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (auto& item : model.named_parameters()) {
        item.value().set_requires_grad(trained(item.key()));
        if (trained(item.key())) out.emplace_back(item.key(), item.value());
    }
    return out;
}

}  // namespace

StepStats apply_update(AdamW& optimizer, double loss, double lr, double max_grad_norm,
                       int64_t step) {
    StepStats stats;
    stats.step = step;
    stats.loss = loss;
    stats.lr = lr;
    stats.grad_norm = clip_gradients(optimizer.params(), max_grad_norm);
    stats.skipped = !std::isfinite(stats.loss) || !std::isfinite(stats.grad_norm);
    if (stats.skipped)
        logger()->warn("step {}: non-finite loss or gradient, update skipped", step);
    else
        optimizer.step(lr);
    optimizer.zero_grad();  // frees the gradients between steps
    return stats;
}

double clip_gradients(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                      double max_norm) {
    torch::NoGradGuard no_grad;
    // One read of the device for all parameters (a GPU would wait once per .item()).
    std::vector<torch::Tensor> squares;
    for (const auto& [name, p] : params)
        if (p.grad().defined()) squares.push_back(p.grad().pow(2).sum().to(torch::kFloat64));
    const double norm =
        squares.empty() ? 0.0 : std::sqrt(torch::stack(squares).sum().item<double>());
    if (max_norm > 0 && norm > max_norm) {
        const double scale = max_norm / (norm + 1e-6);
        for (const auto& [name, p] : params)
            if (p.grad().defined()) p.grad().mul_(scale);
    }
    return norm;
}

namespace {

// The model in float32 on the trainer's device, before the optimiser makes its state there.
LoopyModelImpl& place_model(LoopyModelImpl& model, const TrainerOptions& options) {
    const auto& device = options.device;
    if (!device.is_cpu() && !device.is_cuda())
        throw Error("training: the device must be the CPU or CUDA");
    if (device.is_cuda() && !torch::cuda::is_available())
        throw Error(
            "training on CUDA: no CUDA device (a LibTorch without CUDA, or no GPU visible)");
    if (options.autocast_bf16 && !device.is_cuda())
        throw Error("training: bfloat16 autocast is for CUDA devices only");
    model.to(device, torch::kFloat32);
    return model;
}

}  // namespace

Trainer::Trainer(LoopyModel model, TrainerOptions options)
    : model_(std::move(model)),
      options_(options),
      optimizer_(prepare_parameters(place_model(*model_, options), options), options.adamw) {
    model_->train();
    model_->prediction_type = options_.v_prediction ? "v_prediction" : "epsilon";
    if (options_.ema_decay < 0 || options_.ema_decay >= 1)
        throw Error("EMA decay must be in [0, 1)");
    if (options_.ema_decay > 0)
        for (const auto& [name, p] : optimizer_.params())
            ema_.push_back(p.detach().clone());
    if (options_.distributed) broadcast_state();
}

std::vector<at::Generator> Trainer::item_generators(int64_t first_item, int64_t count) const {
    const uint64_t step = options_.repeat_randomness ? 0 : static_cast<uint64_t>(step_);
    const uint64_t step_seed = splitmix64(options_.seed ^ splitmix64(step + 1));
    std::vector<at::Generator> out;
    for (int64_t i = 0; i < count; ++i) {
        const auto item = static_cast<uint64_t>(first_item + i);
        out.push_back(at::detail::createCPUGenerator(splitmix64(step_seed ^ splitmix64(item + 1))));
    }
    return out;
}

// DistributedDataParallel's reduction: every rank ends with the mean of the ranks' gradients,
// which for equal per-rank batches is the gradient of the mean loss over the global batch. A
// gradient missing on a rank (no loss path reached the parameter there) counts as zero, and stays
// missing only where it is missing on every rank, as it would in one process. Returns the mean
// loss over the ranks.
double Trainer::all_reduce_gradients(double loss, int64_t batch_size) {
    auto& group = *options_.distributed;
    const auto& params = optimizer_.params();
    const auto n = static_cast<int64_t>(params.size());
    // Per parameter "has a gradient", then the loss and the batch size, summed with the gradients.
    auto extras = torch::zeros({n + 2}, torch::kFloat64);
    auto e = extras.accessor<double, 1>();  // all_reduce_sum writes into extras in place
    std::vector<torch::Tensor> buffers;
    for (int64_t i = 0; i < n; ++i) {
        const auto& p = params[static_cast<size_t>(i)].second;
        e[i] = p.grad().defined() ? 1.0 : 0.0;
        buffers.push_back(p.grad().defined() ? p.grad() : torch::zeros_like(p));
    }
    e[n] = loss;
    e[n + 1] = static_cast<double>(batch_size);
    buffers.push_back(extras);
    group.all_reduce_sum(buffers);

    const int world = group.world_size();
    if (e[n + 1] != static_cast<double>(batch_size * world))
        throw Error("distributed training: every rank needs the same batch size (--batch)");
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < n; ++i) {
        auto p = params[static_cast<size_t>(i)].second;
        auto& summed = buffers[static_cast<size_t>(i)];
        p.mutable_grad() = e[i] > 0 ? summed.div_(world) : torch::Tensor();
    }
    return e[n] / world;
}

// Rank 0's weights, buffers, optimiser and EMA state and step on every rank.
void Trainer::broadcast_state() {
    std::vector<torch::Tensor> tensors;
    for (auto& p : model_->parameters())
        tensors.push_back(p);
    for (auto& b : model_->buffers())
        tensors.push_back(b);
    auto state = optimizer_.state();  // the moments alias the optimiser's; the steps are copies
    for (auto& [name, t] : state)
        tensors.push_back(t);
    for (auto& e : ema_)
        tensors.push_back(e);
    tensors.push_back(torch::tensor({step_}, torch::kLong));
    options_.distributed->broadcast(tensors);
    optimizer_.load_state(state);
    step_ = tensors.back().item<int64_t>();
}

double Trainer::lr_at(int64_t step) const {
    if (options_.warmup_steps <= 0) return options_.lr;
    const double ramp = static_cast<double>(step + 1) / static_cast<double>(options_.warmup_steps);
    return options_.lr * std::min(1.0, ramp);
}

void Trainer::update_ema() {
    if (ema_.empty()) return;
    torch::NoGradGuard no_grad;
    const auto& params = optimizer_.params();
    for (size_t i = 0; i < ema_.size(); ++i)
        ema_[i].mul_(options_.ema_decay).add_(params[i].second, 1.0 - options_.ema_decay);
}

DeterministicGuard::DeterministicGuard(bool enabled)
    : mkldnn_(at::globalContext().userEnabledMkldnn()) {
    if (enabled) at::globalContext().setUserEnabledMkldnn(false);
}

DeterministicGuard::~DeterministicGuard() {
    at::globalContext().setUserEnabledMkldnn(mkldnn_);
}

StepStats Trainer::step(const TrainingBatch& batch) {
    DeterministicGuard deterministic(options_.reproducible);
    // This rank's items are rank * B .. rank * B + B - 1 of the step's global batch.
    auto generators = item_generators(rank() * batch.size(), batch.size());
    LossOptions loss_options;
    loss_options.stage = options_.stage;
    loss_options.v_prediction = options_.v_prediction;
    loss_options.masks = options_.masks;
    loss_options.audio = audio_feature_options(model_->config, options_.audio_context_seconds);

    optimizer_.zero_grad();
    torch::Tensor loss;
    {
        std::optional<compat::CudaAutocastGuard> autocast;
        if (options_.autocast_bf16) autocast.emplace(torch::kBFloat16);
        loss = diffusion_loss(*model_, scheduler_, batch, loss_options, generators);
    }
    loss.backward();
    double loss_value = loss.item<double>();
    if (options_.distributed) loss_value = all_reduce_gradients(loss_value, batch.size());
    const double lr = lr_at(step_);
    const auto stats = apply_update(optimizer_, loss_value, lr, options_.max_grad_norm, ++step_);
    if (!stats.skipped) update_ema();
    return stats;
}

void Trainer::save(const std::string& dir, int64_t samples_seen) const {
    if (!writes_files()) return;
    fs::create_directories(dir);
    auto& model = *model_.ptr();
    const Metadata meta = {{"loopy.train.step", std::to_string(step_)},
                           {"loopy.train.stage", std::to_string(static_cast<int>(options_.stage))},
                           {"loopy.train.seed", std::to_string(options_.seed)},
                           {"loopy.train.samples_seen", std::to_string(samples_seen)}};
    Metadata model_meta = kept_metadata_;
    model_meta.insert(meta.begin(), meta.end());
    save_loopy_checkpoint((fs::path(dir) / kTrainModelFile).string(), model, model_meta,
                          kept_tensors_);

    auto state = optimizer_.state();
    const auto& params = optimizer_.params();
    if (!ema_.empty()) {
        auto tensors = state_dict(model);
        for (size_t i = 0; i < ema_.size(); ++i) {
            tensors[params[i].first] = ema_[i];
            state["ema." + params[i].first] = ema_[i];
        }
        tensors.insert(kept_tensors_.begin(), kept_tensors_.end());
        // The same metadata as the model file: without the prediction type a v-prediction
        // run's EMA model would be sampled as an epsilon model.
        save_safetensors((fs::path(dir) / kTrainEmaFile).string(), tensors,
                         loopy_checkpoint_metadata(model, model_meta));
    }
    save_safetensors((fs::path(dir) / kTrainStateFile).string(), state, meta);
}

void Trainer::keep_unchanged_parts(const std::string& checkpoint) {
    const bool preview = has_preview_decoder(checkpoint);
    const auto record = safetensors::File::open(checkpoint).header.metadata;
    kept_tensors_.clear();
    kept_metadata_.clear();
    std::vector<std::string> keys = {"loopy.train.vae_steps"};
    if (preview) keys.push_back("loopy.train.preview_steps");
    for (const auto& key : keys)
        if (const auto it = record.find(key); it != record.end()) kept_metadata_.insert(*it);
    if (!preview) return;
    const auto decoder = load_preview_decoder(checkpoint);
    kept_tensors_ = preview_decoder_tensors(*decoder);
    kept_metadata_.merge(preview_decoder_metadata(*decoder));
}

void reuse_pretrained_parts(LoopyModelImpl& net, const std::string& checkpoint) {
    const auto source = read_loopy_config(checkpoint);
    for (const auto& [part, ours, theirs] :
         {std::tuple{"VAE", &net.config.vae, &source.vae},
          std::tuple{"audio encoder", &net.config.audio_encoder, &source.audio_encoder}})
        if (*ours != *theirs)
            throw Error(checkpoint + ": its " + part + " is configured differently (" +
                        theirs->dump() + ") from the network's (" + ours->dump() + ")");
    const auto tensors = load_safetensors(checkpoint);
    LoadOptions vae;
    vae.prefix = "vae.";
    load_state_dict(*net.vae, tensors, vae, checkpoint);
    LoadOptions audio;
    audio.prefix = "audio_encoder.";
    load_state_dict(*net.audio_encoder, tensors, audio, checkpoint);
}

int64_t Trainer::resume(const std::string& dir) {
    if (!options_.distributed) return load_run(dir);
    // Rank 0 reads the files; the others learn whether it could, then receive its state.
    int64_t samples = 0;
    std::string error;
    if (writes_files()) {
        try {
            samples = load_run(dir);
        } catch (const std::exception& e) {
            error = e.what();
        }
    }
    std::vector<torch::Tensor> header = {
        torch::tensor({error.empty() ? int64_t{1} : int64_t{0}, samples})};
    options_.distributed->broadcast(header);
    if (!error.empty()) throw Error(error);
    if (header[0][0].item<int64_t>() == 0)
        throw Error("rank 0 could not resume from " + dir + " (its output says why)");
    broadcast_state();
    return header[0][1].item<int64_t>();
}

int64_t Trainer::load_run(const std::string& dir) {
    const auto state_path = (fs::path(dir) / kTrainStateFile).string();
    const auto model_path = (fs::path(dir) / kTrainModelFile).string();
    Metadata state_meta, model_meta;
    const auto state = load_safetensors(state_path, &state_meta);
    const auto tensors = load_safetensors(model_path, &model_meta);
    const int64_t step = metadata_int(state_meta, "loopy.train.step", state_path);
    if (metadata_int(model_meta, "loopy.train.step", model_path) != step)
        throw Error(dir +
                    ": the model and the training state are from different steps (a save "
                    "was interrupted); restart from an earlier copy");
    if (metadata_int(state_meta, "loopy.train.stage", state_path) !=
        static_cast<int>(options_.stage))
        throw Error(state_path + ": saved by a run of another training stage");
    if (state_meta.at("loopy.train.seed") != std::to_string(options_.seed))
        throw Error(state_path + ": saved by a run with another --seed");
    if (loopy_config_from_metadata(model_meta, model_path).to_json() != model_->config.to_json())
        throw Error(model_path + ": its config differs from the model being trained");

    // The preview decoder it keeps is not the network's (keep_unchanged_parts reads it).
    load_state_dict(*model_, tensors, {"", true, {kPreviewDecoderPrefix}}, model_path);
    optimizer_.load_state(state);
    const auto& params = optimizer_.params();
    for (size_t i = 0; i < ema_.size(); ++i) {
        auto it = state.find("ema." + params[i].first);
        if (it == state.end()) throw Error(state_path + ": no EMA weights (saved without --ema)");
        ema_[i] = it->second.to(options_.device, torch::kFloat32).clone();
    }
    step_ = step;
    return metadata_int(state_meta, "loopy.train.samples_seen", state_path);
}

// --- LossLog ---

LossLog::LossLog(const std::string& path, int64_t resume_step) {
    std::vector<std::string> kept;
    if (resume_step > 0) {
        std::ifstream in(path);
        std::string line;
        std::getline(in, line);  // header
        while (std::getline(in, line))
            if (!line.empty() && std::stoll(line.substr(0, line.find(','))) <= resume_step)
                kept.push_back(line);
    }
    out_.open(path, std::ios::trunc);
    if (!out_) throw Error("cannot write " + path);
    out_ << "step,loss,lr,seconds\n";
    for (const auto& line : kept)
        out_ << line << "\n";
    out_.flush();
}

void LossLog::append(const StepStats& stats, double seconds) {
    char line[128];
    std::snprintf(line, sizeof line, "%lld,%.8g,%.6g,%.4f\n", static_cast<long long>(stats.step),
                  stats.loss, stats.lr, seconds);
    out_ << line;
    out_.flush();
}

}  // namespace loopy::model
