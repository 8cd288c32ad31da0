#include "render/train_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "audio/audio_decoder.h"
#include "core/error.h"
#include "render/video_probe.h"

namespace loopy::render {

namespace {

namespace fs = std::filesystem;

constexpr int kNoseTip = 30;
constexpr int kMouthFirst = 48, kMouthEnd = 68;  // outer and inner lip keypoints

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
    const auto keypoints = read_keypoints((dir / "truth.json").string(), clip.frames.size(0));
    clip.nose = keypoints.select(1, kNoseTip).clone();
    // Brows, nose and eyes (17..47) without the tip, relative to the tip.
    auto points = torch::cat({keypoints.slice(1, 17, kNoseTip), keypoints.slice(1, 31, 48)}, 1);
    clip.expression = points - clip.nose.unsqueeze(1);
    const auto mouth = keypoints.slice(1, kMouthFirst, kMouthEnd);
    clip.mouth_box = torch::cat({std::get<0>(mouth.min(1)), std::get<0>(mouth.max(1))}, 1);
    return clip;
}

TrainDataset::TrainDataset(const std::string& dir, const model::LoopyConfig& config,
                           model::AutoencoderKLImpl& vae, TrainDataOptions options,
                           const Progress& progress)
    : TrainDataset(config, options) {
    const auto folders = find_train_clips(dir);
    for (size_t i = 0; i < folders.size(); ++i) {
        add_clip(read_train_clip(folders[i], config.resolution), vae);
        if (progress) progress(static_cast<int64_t>(i) + 1, static_cast<int64_t>(folders.size()));
    }
}

}  // namespace loopy::render
