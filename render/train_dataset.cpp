#include "render/train_dataset.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "model/pixels.h"

namespace loopy::render {

namespace {

uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Population variance over dim 0, summed over the remaining dims.
double summed_variance(const torch::Tensor& x) {
    return x.var(0, /*unbiased=*/false).sum().item<double>();
}

std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch, int64_t n) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
        order[static_cast<size_t>(i)] = i;
    uint64_t state = mix(seed ^ mix(static_cast<uint64_t>(epoch) + 0x51ED));
    for (int64_t i = n - 1; i > 0; --i) {  // Fisher-Yates
        state = mix(state);
        std::swap(order[static_cast<size_t>(i)],
                  order[static_cast<size_t>(state % static_cast<uint64_t>(i + 1))]);
    }
    return order;
}

// The cache's format (docs/training.md, "Training data cache").
constexpr const char* kCacheFormatKey = "loopy.train_data.format";
constexpr const char* kCacheFormat = "1";
constexpr const char* kCacheVaeKey = "loopy.train_data.vae_encoder";
constexpr const char* kCacheResolutionKey = "loopy.train_data.resolution";
constexpr const char* kCacheClipsKey = "loopy.train_data.clips";  // names, one per line

// FNV-1a over the bytes of the VAE's encoder weights and its scaling factor: latents from another
// encoder (or scale) must not be trained on. Bytes, not sums, so any CPU computes the same value.
std::string vae_encoder_fingerprint(model::AutoencoderKLImpl& vae) {
    uint64_t h = 0xCBF29CE484222325ull;
    const auto add = [&](const void* data, size_t n) {
        const auto* p = static_cast<const unsigned char*>(data);
        for (size_t i = 0; i < n; ++i)
            h = (h ^ p[i]) * 0x100000001B3ull;
    };
    for (const auto& item : vae.named_parameters()) {
        const auto& name = item.key();
        if (name.rfind("encoder.", 0) != 0 && name.rfind("quant_conv.", 0) != 0) continue;
        const auto t = item.value().detach().to(torch::kCPU, torch::kFloat32).contiguous();
        add(name.data(), name.size());
        add(t.data_ptr(), static_cast<size_t>(t.numel()) * sizeof(float));
    }
    const double scale = vae.config.scaling_factor;
    add(&scale, sizeof scale);
    char text[17];
    std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(h));
    return text;
}

std::string clip_key(size_t i, const char* field) {
    char key[48];
    std::snprintf(key, sizeof key, "clip.%05zu.%s", i, field);
    return key;
}

// 16-bit audio (every sample k / 32768) is stored as int16, which is exact; anything else float32.
torch::Tensor audio_tensor(const std::vector<float>& samples) {
    auto wave = torch::tensor(samples, torch::kFloat32);
    auto scaled = wave * 32768.0f;
    if (samples.empty() || !scaled.round().equal(scaled) ||
        scaled.abs().max().item<float>() > 32767)
        return wave;
    return scaled.to(torch::kInt16);
}

std::vector<float> audio_samples(const torch::Tensor& stored) {
    auto wave = stored.scalar_type() == torch::kInt16 ? stored.to(torch::kFloat32) / 32768.0f
                                                      : stored.to(torch::kFloat32);
    wave = wave.contiguous();
    return {wave.data_ptr<float>(), wave.data_ptr<float>() + wave.numel()};
}

}  // namespace

double head_movement_variance(const TrainClip& clip, int64_t first, int64_t n) {
    return summed_variance(clip.nose.narrow(0, first, n));
}

double expression_variance(const TrainClip& clip, int64_t first, int64_t n) {
    const auto window = clip.expression.narrow(0, first, n);
    return summed_variance(window) / static_cast<double>(window.size(1));
}

torch::Tensor mouth_weight_map(const TrainClip& clip, int64_t first, int64_t n, int64_t s,
                               double weight) {
    auto map = torch::ones({n, 1, s, s});
    const auto box = clip.mouth_box.narrow(0, first, n);
    auto b = box.accessor<double, 2>();
    const auto cell = [&](double v) {
        return std::clamp<int64_t>(static_cast<int64_t>(std::floor(v * static_cast<double>(s))), 0,
                                   s - 1);
    };
    for (int64_t t = 0; t < n; ++t) {
        // One cell of margin: the lips' motion also shows in the cells around the box.
        const int64_t x0 = std::max<int64_t>(0, cell(b[t][0]) - 1);
        const int64_t y0 = std::max<int64_t>(0, cell(b[t][1]) - 1);
        const int64_t x1 = std::min(s - 1, cell(b[t][2]) + 1);
        const int64_t y1 = std::min(s - 1, cell(b[t][3]) + 1);
        map[t][0].narrow(0, y0, y1 - y0 + 1).narrow(1, x0, x1 - x0 + 1).fill_(weight);
    }
    return map;
}

TrainDataset::TrainDataset(const model::LoopyConfig& config, TrainDataOptions options)
    : config_(config), options_(options) {
    if (options_.frames < 1) throw Error("training data: frames per sample must be >= 1");
    if (!(options_.mouth_loss_weight >= 1.0))
        throw Error("training data: the mouth loss weight must be >= 1");
}

void TrainDataset::add_clip(TrainClip clip, model::AutoencoderKLImpl& vae) {
    if (clip.frame_count() < options_.frames)
        throw Error(clip.name + ": shorter than " + std::to_string(options_.frames) + " frames");
    torch::NoGradGuard no_grad;
    const auto device =
        vae.parameters().front().device();  // the trainer's; latents stay on the CPU
    std::vector<torch::Tensor> latents;
    for (int64_t f = 0; f < clip.frame_count(); f += 16) {
        const auto n = std::min<int64_t>(16, clip.frame_count() - f);
        auto image = model::from_rgb8(clip.frames.narrow(0, f, n)).to(device);
        latents.push_back((vae.encode(image).mode() * vae.config.scaling_factor).to(torch::kCPU));
    }
    latents_.push_back(torch::cat(latents, 0));
    clip.frames = torch::Tensor();  // only the latents are needed from here on
    clips_.push_back(std::move(clip));
}

void TrainDataset::save_cache(const std::string& path, model::AutoencoderKLImpl& vae) const {
    TensorMap tensors;
    std::string names;
    for (size_t i = 0; i < clips_.size(); ++i) {
        const auto& clip = clips_[i];
        names += clip.name + "\n";
        tensors[clip_key(i, "latents")] = latents_[i].to(torch::kHalf);
        tensors[clip_key(i, "audio")] = audio_tensor(clip.audio);
        tensors[clip_key(i, "nose")] = clip.nose;
        tensors[clip_key(i, "expression")] = clip.expression;
        tensors[clip_key(i, "mouth_box")] = clip.mouth_box;
    }
    save_safetensors(path, tensors,
                     {{kCacheFormatKey, kCacheFormat},
                      {kCacheVaeKey, vae_encoder_fingerprint(vae)},
                      {kCacheResolutionKey, std::to_string(config_.resolution)},
                      {kCacheClipsKey, names}});
}

TrainDataset TrainDataset::load_cache(const std::string& path, const model::LoopyConfig& config,
                                      model::AutoencoderKLImpl& vae, TrainDataOptions options) {
    Metadata meta;
    const auto tensors = load_safetensors(path, &meta);  // throws for a truncated file
    const auto value = [&](const char* key) {
        auto it = meta.find(key);
        if (it == meta.end())
            throw Error(path + ": not a training data cache (no '" + std::string(key) + "')");
        return it->second;
    };
    if (value(kCacheFormatKey) != kCacheFormat)
        throw Error(path + ": training data cache of an unknown format " + value(kCacheFormatKey));
    if (value(kCacheResolutionKey) != std::to_string(config.resolution))
        throw Error(path + ": cached at " + value(kCacheResolutionKey) + " px, the model is " +
                    std::to_string(config.resolution) + " px");
    if (value(kCacheVaeKey) != vae_encoder_fingerprint(vae))
        throw Error(path +
                    ": encoded with another VAE encoder than this model's; write the cache again "
                    "with this model (--init)");
    TrainDataset data(config, options);
    std::istringstream names(value(kCacheClipsKey));
    std::string name;
    for (size_t i = 0; std::getline(names, name); ++i) {
        const auto get = [&](const char* field) {
            auto it = tensors.find(clip_key(i, field));
            if (it == tensors.end()) throw Error(path + ": '" + clip_key(i, field) + "' missing");
            return it->second;
        };
        TrainClip clip;
        clip.name = name;
        clip.audio = audio_samples(get("audio"));
        clip.nose = get("nose").to(torch::kFloat64);
        clip.expression = get("expression").to(torch::kFloat64);
        clip.mouth_box = get("mouth_box").to(torch::kFloat64);
        auto latents = get("latents").to(torch::kFloat32);
        const int64_t t = clip.frame_count();
        if (latents.dim() != 4 || latents.size(0) != t || clip.expression.size(0) != t ||
            clip.mouth_box.size(0) != t || latents.size(2) != config.latent_size())
            throw Error(path + ": clip '" + name + "' has tensors of inconsistent shapes");
        if (t < options.frames)
            throw Error(path + ": clip '" + name + "' is shorter than " +
                        std::to_string(options.frames) + " frames");
        data.latents_.push_back(latents);
        data.clips_.push_back(std::move(clip));
    }
    if (data.clips_.empty()) throw Error(path + ": the training data cache holds no clips");
    return data;
}

std::vector<float> clip_window_samples(const TrainClip& clip, const model::AudioWindowPlan& plan) {
    std::vector<float> samples(static_cast<size_t>(plan.num_samples), 0.0f);
    const auto total = static_cast<int64_t>(clip.audio.size());
    for (int64_t k = std::max<int64_t>(0, plan.first_sample);
         k < std::min(total, plan.end_sample()); ++k)
        samples[static_cast<size_t>(k - plan.first_sample)] = clip.audio[static_cast<size_t>(k)];
    return samples;
}

torch::Tensor mouth_opening_track(const TrainClip& clip) {
    auto height = (clip.mouth_box.select(1, 3) - clip.mouth_box.select(1, 1)).to(torch::kFloat64);
    height = height - height.mean();
    const double deviation = height.numel() > 1 ? height.std().item<double>() : 0.0;
    return (deviation > 1e-9 ? height / deviation : torch::zeros_like(height)).to(torch::kFloat32);
}

model::AudioPretrainBatch audio_pretrain_batch(const std::vector<TrainClip>& clips,
                                               const model::LoopyConfig& config,
                                               const model::AudioFeatureOptions& audio,
                                               int64_t frames, uint64_t seed, int64_t first,
                                               int64_t count) {
    if (clips.empty()) throw Error("audio pretraining: no clips");
    model::AudioPretrainBatch b;
    std::vector<torch::Tensor> targets;
    for (int64_t i = 0; i < count; ++i) {
        const uint64_t r = mix(seed ^ mix(static_cast<uint64_t>(first + i) * 2 + 1));
        const auto& clip = clips[r % clips.size()];
        if (clip.frame_count() < frames)
            throw Error(clip.name + ": shorter than " + std::to_string(frames) + " frames");
        const auto start =
            static_cast<int64_t>(mix(r) % static_cast<uint64_t>(clip.frame_count() - frames + 1));
        b.audio.push_back(clip_window_samples(
            clip, model::plan_audio_window(config.audio_encoder_config(), audio, start, frames)));
        targets.push_back(mouth_opening_track(clip).narrow(0, start, frames));
    }
    b.targets = torch::stack(targets);
    return b;
}

SampleSource TrainDataset::source(int64_t sample) const {
    const int64_t n = clip_count();
    SampleSource s;
    s.clip = epoch_order(options_.seed, sample / n, n)[static_cast<size_t>(sample % n)];
    const int64_t frames = clips_[static_cast<size_t>(s.clip)].nose.size(0);
    const uint64_t r1 = mix(options_.seed ^ mix(static_cast<uint64_t>(sample) * 2 + 1));
    const uint64_t r2 = mix(r1);
    s.first_frame = static_cast<int64_t>(r1 % static_cast<uint64_t>(frames - options_.frames + 1));
    s.reference_frame = static_cast<int64_t>(r2 % static_cast<uint64_t>(frames));
    return s;
}

model::TrainingBatch TrainDataset::batch(int64_t first, int64_t count) const {
    const int64_t h = config_.history_frames(), f = options_.frames;
    std::vector<torch::Tensor> latents, history, valid, reference, weights;
    model::TrainingBatch b;
    std::vector<double> head, expression;
    for (int64_t i = 0; i < count; ++i) {
        const auto src = source(first + i);
        const auto& clip = clips_[static_cast<size_t>(src.clip)];
        const auto& lat = latents_[static_cast<size_t>(src.clip)];
        latents.push_back(lat.narrow(0, src.first_frame, f));
        reference.push_back(lat[src.reference_frame]);
        // The h frames before the clip; those before the video starts stay zero and invalid.
        auto hist = torch::zeros({h, lat.size(1), lat.size(2), lat.size(3)}, lat.options());
        auto ok = torch::zeros({h}, torch::kBool);
        const int64_t known = std::min(h, src.first_frame);
        if (known > 0) {
            hist.narrow(0, h - known, known).copy_(lat.narrow(0, src.first_frame - known, known));
            ok.narrow(0, h - known, known).fill_(true);
        }
        history.push_back(hist);
        valid.push_back(ok);
        b.audio.push_back(clip_window_samples(
            clip, model::plan_audio_window(config_.audio_encoder_config(), options_.audio,
                                           src.first_frame, f)));
        head.push_back(head_movement_variance(clip, src.first_frame, f));
        expression.push_back(expression_variance(clip, src.first_frame, f));
        if (options_.mouth_loss_weight > 1.0)
            weights.push_back(mouth_weight_map(clip, src.first_frame, f, lat.size(3),
                                               options_.mouth_loss_weight));
    }
    b.latents = torch::stack(latents);
    b.history = torch::stack(history);
    b.history_valid = torch::stack(valid);
    b.reference = torch::stack(reference);
    if (!weights.empty()) b.loss_weight = torch::stack(weights);
    b.head_variance = torch::tensor(head, torch::kFloat64).to(torch::kFloat32).view({count, 1});
    b.expression_variance =
        torch::tensor(expression, torch::kFloat64).to(torch::kFloat32).view({count, 1});
    return b;
}

}  // namespace loopy::render
