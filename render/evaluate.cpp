#include "render/evaluate.h"

#include <torch/torch.h>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "audio/audio_decoder.h"
#include "core/error.h"
#include "model/pixels.h"
#include "render/eval_metrics.h"
#include "render/eval_report.h"
#include "render/video_probe.h"

namespace loopy::eval {

namespace fs = std::filesystem;

namespace {

struct TruthClip {
    std::string name, dir;
    std::vector<cv::Mat> frames;              // RGB at the model's resolution
    std::vector<synth::Keypoints> keypoints;  // scaled to that resolution
    std::vector<double> jaw_open;
    std::vector<float> audio;  // 16 kHz mono
};

std::vector<std::string> clip_dirs(const std::string& data) {
    std::vector<std::string> dirs;
    if (!fs::is_directory(data)) throw Error(data + ": not a folder");
    for (const auto& entry : fs::directory_iterator(data))
        if (entry.is_directory() && fs::exists(entry.path() / "truth.json") &&
            fs::exists(entry.path() / "video.mp4"))
            dirs.push_back(entry.path().string());
    std::sort(dirs.begin(), dirs.end());
    if (dirs.empty()) throw Error(data + ": no clips (folders with truth.json and video.mp4)");
    return dirs;
}

TruthClip load_clip(const std::string& dir, int resolution) {
    TruthClip clip;
    clip.dir = dir;
    clip.name = fs::path(dir).filename().string();
    std::ifstream in(fs::path(dir) / "truth.json");
    const auto truth = nlohmann::json::parse(in, nullptr, false);
    if (truth.is_discarded()) throw Error(dir + "/truth.json: not valid JSON");
    const double scale = static_cast<double>(resolution) / truth.at("size").get<double>();
    for (const auto& frame : truth.at("frames")) {
        synth::Keypoints k;
        const auto& points = frame.at("keypoints");
        for (size_t i = 0; i < k.size(); ++i)
            k[i] = cv::Point2f(static_cast<float>(points.at(i).at(0).get<double>() * scale),
                               static_cast<float>(points.at(i).at(1).get<double>() * scale));
        clip.keypoints.push_back(k);
        clip.jaw_open.push_back(frame.at("jaw_open").get<double>());
    }
    render::read_video_frames(
        (fs::path(dir) / "video.mp4").string(),
        [&](const std::vector<std::uint8_t>& rgb, int w, int h) {
            cv::Mat image(h, w, CV_8UC3, const_cast<std::uint8_t*>(rgb.data()));
            cv::Mat resized;
            cv::resize(image, resized, cv::Size(resolution, resolution), 0, 0, cv::INTER_AREA);
            clip.frames.push_back(resized);
        });
    clip.audio = audio::decode_audio_file((fs::path(dir) / "audio.wav").string()).samples;
    const size_t n = std::min(clip.frames.size(), clip.keypoints.size());
    if (n == 0) throw Error(dir + ": no frames");
    clip.frames.resize(n);
    clip.keypoints.resize(n);
    clip.jaw_open.resize(n);
    return clip;
}

std::vector<cv::Mat> generate(const std::shared_ptr<Model>& model, const TruthClip& clip,
                              const GenerationSettings& settings) {
    const int size = model->resolution();
    const cv::Mat& first = clip.frames.front();
    Session session(model, first.data, size, size, settings);
    session.push_audio(clip.audio.data(), clip.audio.size());
    session.end_audio();
    std::vector<cv::Mat> frames;
    session.generate([&](const Frame& f) {
        frames.push_back(
            cv::Mat(f.height, f.width, CV_8UC3, const_cast<std::uint8_t*>(f.rgb.data())).clone());
    });
    frames.resize(clip.frames.size(), frames.empty() ? first.clone() : frames.back().clone());
    return frames;
}

// The frames through the model's VAE (encode, decode): what a generator that gets every latent
// right would show, so the ceiling of every metric for this checkpoint.
std::vector<cv::Mat> vae_round_trip(Model& model, const std::vector<cv::Mat>& frames) {
    constexpr size_t kBatch = 16;
    std::lock_guard<std::mutex> lock(model.run_mutex());
    c10::InferenceMode inference;
    auto& vae = *model.network().vae;
    std::vector<cv::Mat> out;
    for (size_t i = 0; i < frames.size(); i += kBatch) {
        std::vector<torch::Tensor> batch;
        for (size_t k = i; k < std::min(frames.size(), i + kBatch); ++k) {
            const cv::Mat& f = frames[k];
            batch.push_back(
                torch::from_blob(f.data, {f.rows, f.cols, 3}, torch::kUInt8).permute({2, 0, 1}));
        }
        auto images = model::from_rgb8(torch::stack(batch).to(model.device()));
        auto decoded = vae.decode(vae.encode(images.to(model.dtype())).mode());
        const auto pixels = model::to_rgb8(decoded);
        for (int64_t k = 0; k < pixels.size(0); ++k)
            out.push_back(cv::Mat(static_cast<int>(pixels.size(1)),
                                  static_cast<int>(pixels.size(2)), CV_8UC3, pixels[k].data_ptr())
                              .clone());
    }
    return out;
}

const std::vector<std::string> kMetrics = {
    "psnr",    "ssim",         "mouth_psnr",     "mouth_ssim",
    "mouth_r", "jitter_ratio", "blinks_per_min", "truth_blinks_per_min"};

std::vector<double> score(const std::vector<cv::Mat>& frames, const TruthClip& clip) {
    double psnr_sum = 0, ssim_sum = 0, mouth_psnr_sum = 0, mouth_ssim_sum = 0;
    const auto n = frames.size();
    for (size_t i = 0; i < n; ++i) {
        const auto region = mouth_region(clip.keypoints[i], frames[i].size());
        psnr_sum += std::min(psnr(frames[i], clip.frames[i]), 100.0);
        ssim_sum += ssim(frames[i], clip.frames[i]);
        mouth_psnr_sum += std::min(psnr(frames[i], clip.frames[i], region), 100.0);
        mouth_ssim_sum += ssim(frames[i], clip.frames[i], region);
    }
    const double seconds = static_cast<double>(n) / 25.0;
    const auto blinks = blink_onsets_from_pixels(frames, clip.keypoints, 25.0);
    const auto truth_blinks = blink_onsets_from_pixels(clip.frames, clip.keypoints, 25.0);
    const double count = static_cast<double>(n);
    return {psnr_sum / count,
            ssim_sum / count,
            mouth_psnr_sum / count,
            mouth_ssim_sum / count,
            pearson(mouth_openings(frames), clip.jaw_open),
            jitter_ratio(frames, clip.frames),
            blinks_per_minute(blinks, seconds),
            blinks_per_minute(truth_blinks, seconds)};
}

}  // namespace

EvalSummary evaluate(const std::shared_ptr<Model>& model, const EvalOptions& options,
                     const EvalProgress& progress) {
    auto dirs = clip_dirs(options.data);
    if (options.max_clips > 0 && static_cast<int>(dirs.size()) > options.max_clips)
        dirs.resize(static_cast<size_t>(options.max_clips));
    ReportInputs report;
    report.table.metrics = kMetrics;
    EvalSummary summary;
    double r_model = 0, r_static = 0, r_vae = 0, r_truth = 0;
    std::vector<double> model_r;
    for (size_t c = 0; c < dirs.size(); ++c) {
        const auto clip = load_clip(dirs[c], model->resolution());
        if (progress) progress(static_cast<int>(c), static_cast<int>(dirs.size()), clip.name);
        const auto generated = generate(model, clip, options.settings);
        const std::vector<cv::Mat> still(clip.frames.size(), clip.frames.front());
        const auto model_scores = score(generated, clip);
        const auto static_scores = score(still, clip);
        const auto vae_scores = score(vae_round_trip(*model, clip.frames), clip);
        const auto truth_scores = score(clip.frames, clip);
        report.table.rows.push_back({"model", clip.name, model_scores});
        report.table.rows.push_back({"static", clip.name, static_scores});
        report.table.rows.push_back({"VAE round trip", clip.name, vae_scores});
        report.table.rows.push_back({"ground truth", clip.name, truth_scores});
        r_model += model_scores[4];
        model_r.push_back(model_scores[4]);
        r_static += static_scores[4];
        r_vae += vae_scores[4];
        r_truth += truth_scores[4];
        if (c == 0) {  // the first clip's frames and mouth curves illustrate the report
            for (int k = 0; k < 6; ++k) {
                const size_t i = k * (clip.frames.size() - 1) / 5;
                report.sheet_column_labels.push_back(cv::format("%.2f s", i / 25.0));
            }
            report.sheet_row_labels = {"model", "ground truth"};
            report.sheet_rows.assign(2, {});
            for (int k = 0; k < 6; ++k) {
                const size_t i = k * (clip.frames.size() - 1) / 5;
                report.sheet_rows[0].push_back(generated[i]);
                report.sheet_rows[1].push_back(clip.frames[i]);
            }
            report.mouth_series = {{"model (pixels)", mouth_openings(generated), {220, 60, 40}},
                                   {"truth (pixels)", mouth_openings(clip.frames), {40, 90, 220}}};
        }
    }
    write_report(options.report, report);
    const double n = static_cast<double>(dirs.size());
    summary.clips = static_cast<int>(dirs.size());
    summary.markdown = markdown_table(report.table);
    summary.model_mouth_r = r_model / n;
    summary.model_mouth_r_se = standard_error(model_r);
    summary.static_mouth_r = r_static / n;
    summary.vae_mouth_r = r_vae / n;
    summary.truth_mouth_r = r_truth / n;
    if (progress) progress(summary.clips, summary.clips, "report");
    return summary;
}

}  // namespace loopy::eval
