#include "render/train_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "audio/audio_decoder.h"
#include "core/error.h"
#include "model/pixels.h"
#include "render/video_probe.h"

namespace loopy::render {

namespace {

namespace fs = std::filesystem;

constexpr int kNoseTip = 30;
constexpr int kMouthFirst = 48, kMouthEnd = 68;  // outer and inner lip keypoints

uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

bool is_clip_folder(const fs::path& p) {
    return fs::is_regular_file(p / "video.mp4") && fs::is_regular_file(p / "audio.wav") &&
           fs::is_regular_file(p / "truth.json");
}

// uint8 [T, 3, H, W] -> uint8 [T, 3, S, S]: centre crop to a square, then resize.
torch::Tensor resize_frames(const torch::Tensor& frames, int64_t size) {
    const int64_t h = frames.size(2), w = frames.size(3), side = std::min(h, w);
    auto square = frames.narrow(2, (h - side) / 2, side).narrow(3, (w - side) / 2, side);
    if (side == size) return square.contiguous();
    namespace F = torch::nn::functional;
    auto opts = F::InterpolateFuncOptions().size(std::vector<int64_t>{size, size});
    if (side > size)
        opts.mode(torch::kArea);
    else
        opts.mode(torch::kBilinear).align_corners(false);
    std::vector<torch::Tensor> out;
    for (int64_t i = 0; i < square.size(0); i += 32) {
        auto chunk = square.narrow(0, i, std::min<int64_t>(32, square.size(0) - i));
        out.push_back(F::interpolate(chunk.to(torch::kFloat32), opts)
                          .round()
                          .clamp(0, 255)
                          .to(torch::kUInt8));
    }
    return torch::cat(out, 0);
}

torch::Tensor read_frames(const std::string& path, int64_t resolution) {
    std::vector<torch::Tensor> frames;
    read_video_frames(path, [&](const std::vector<std::uint8_t>& rgb, int width, int height) {
        frames.push_back(torch::from_blob(const_cast<std::uint8_t*>(rgb.data()), {height, width, 3},
                                          torch::kUInt8)
                             .permute({2, 0, 1})
                             .clone());
    });
    if (frames.empty()) throw Error(path + ": no video frames");
    return resize_frames(torch::stack(frames), resolution);
}

// Keypoints [T, 68, 2] normalised by the image size.
torch::Tensor read_keypoints(const std::string& path, int64_t frames) {
    std::ifstream in(path);
    if (!in) throw Error("cannot read " + path);
    nlohmann::json truth;
    try {
        in >> truth;
        const double size = truth.at("size").get<double>();
        const auto& list = truth.at("frames");
        if (static_cast<int64_t>(list.size()) < frames)
            throw Error(path + ": fewer frames than the video");
        auto out = torch::empty({frames, 68, 2}, torch::kFloat64);
        auto a = out.accessor<double, 3>();
        for (int64_t t = 0; t < frames; ++t) {
            const auto& kp = list[static_cast<size_t>(t)].at("keypoints");
            if (kp.size() != 68) throw Error(path + ": frames need 68 keypoints");
            for (int64_t i = 0; i < 68; ++i)
                for (int64_t c = 0; c < 2; ++c)
                    a[t][i][c] =
                        kp[static_cast<size_t>(i)][static_cast<size_t>(c)].get<double>() / size;
        }
        return out;
    } catch (const nlohmann::json::exception& e) {
        throw Error(path + ": " + e.what());
    }
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

}  // namespace

std::vector<std::string> find_train_clips(const std::string& dir) {
    if (!fs::is_directory(dir)) throw Error("training data: " + dir + " is not a folder");
    std::vector<std::string> out;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.is_directory() && is_clip_folder(entry.path())) out.push_back(entry.path());
    std::sort(out.begin(), out.end());
    if (out.empty())
        throw Error("training data: no clip folders (video.mp4 + audio.wav + truth.json) in " +
                    dir);
    return out;
}

TrainClip read_train_clip(const std::string& folder, int64_t resolution) {
    const fs::path dir(folder);
    TrainClip clip;
    clip.name = dir.filename().string();
    clip.frames = read_frames((dir / "video.mp4").string(), resolution);
    clip.audio =
        audio::decode_audio_file((dir / "audio.wav").string(), model::kAudioSampleRate).samples;
    const auto keypoints = read_keypoints((dir / "truth.json").string(), clip.frame_count());
    clip.nose = keypoints.select(1, kNoseTip).clone();
    // Brows, nose and eyes (17..47) without the tip, relative to the tip.
    auto points = torch::cat({keypoints.slice(1, 17, kNoseTip), keypoints.slice(1, 31, 48)}, 1);
    clip.expression = points - clip.nose.unsqueeze(1);
    const auto mouth = keypoints.slice(1, kMouthFirst, kMouthEnd);
    clip.mouth_box = torch::cat({std::get<0>(mouth.min(1)), std::get<0>(mouth.max(1))}, 1);
    return clip;
}

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

TrainDataset::TrainDataset(const std::string& dir, const model::LoopyConfig& config,
                           model::AutoencoderKLImpl& vae, TrainDataOptions options,
                           const Progress& progress)
    : config_(config), options_(options) {
    if (options_.frames < 1) throw Error("training data: frames per sample must be >= 1");
    if (!(options_.mouth_loss_weight >= 1.0))
        throw Error("training data: the mouth loss weight must be >= 1");
    const auto folders = find_train_clips(dir);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < folders.size(); ++i) {
        auto clip = read_train_clip(folders[i], config.resolution);
        if (clip.frame_count() < options_.frames)
            throw Error(folders[i] + ": shorter than " + std::to_string(options_.frames) +
                        " frames");
        std::vector<torch::Tensor> latents;
        for (int64_t f = 0; f < clip.frame_count(); f += 16) {
            const auto n = std::min<int64_t>(16, clip.frame_count() - f);
            auto image = model::from_rgb8(clip.frames.narrow(0, f, n));
            latents.push_back(vae.encode(image).mode() * vae.config.scaling_factor);
        }
        latents_.push_back(torch::cat(latents, 0));
        clip.frames = torch::Tensor();  // only the latents are needed from here on
        clips_.push_back(std::move(clip));
        if (progress) progress(static_cast<int64_t>(i) + 1, static_cast<int64_t>(folders.size()));
    }
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
