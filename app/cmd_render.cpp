// `loopy render [--checkpoint C] --portrait P --audio A --out O.mp4 [...]`: a talking-portrait MP4.
// Without --checkpoint it uses the bundled demo model (core/resources.h).
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "app/commands.h"
#include "app/progress_bar.h"
#include "core/engine.h"
#include "core/log.h"
#include "core/resources.h"
#include "core/system.h"
#include "render/render_job.h"

namespace loopy::cli {
namespace {

struct RenderArgs {
    std::string checkpoint;
    render::RenderJob job;
    ModelOptions model;
    std::vector<int> crop;
    GuidanceOptions guidance;  // given or not: the checkpoint's recommendation fills in
};

// Players and file managers know an MP4 by these extensions.
bool named_as_mp4(const std::string& path) {
    std::string ext = std::filesystem::path(path).extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return ext == ".mp4" || ext == ".m4v" || ext == ".mov";
}

int run_render(RenderArgs& args) {
    // Cheap checks first: a typo in --out should not cost a model load.
    render::check_output_path(args.job.out, args.job.overwrite);
    if (!named_as_mp4(args.job.out))
        logger()->warn(
            "{}: written as MP4 (H.264 + AAC) whatever its name; name it .mp4 so that "
            "players recognise it",
            args.job.out);
    args.job.settings.validate();
    if (!args.crop.empty()) {
        if (args.crop.size() != 3) throw Error("--crop takes X Y SIZE");
        args.job.crop = render::CropRect{args.crop[0], args.crop[1], args.crop[2], args.crop[2]};
    }
    if (args.model.threads > 0) set_num_threads(args.model.threads);
    auto model = Model::load(checkpoint_or_default(args.checkpoint), args.model);
    apply_checkpoint_guidance(*model, args.job.settings, args.guidance);

    ProgressBar bar("render");
    render::RenderCallbacks callbacks;
    callbacks.on_progress = [&](const Progress& p) {
        const double clips = p.clips > 0 ? static_cast<double>(p.clips) : 0.0;
        const double done = p.clip + (p.steps > 0 ? static_cast<double>(p.step) / p.steps : 0.0);
        const std::string stage =
            "clip " + std::to_string(std::min(p.clip + 1, p.clips)) + "/" + std::to_string(p.clips);
        bar.update(clips > 0 ? done / clips : 0.0, stage,
                   p.eta_seconds >= 0 ? "ETA " + format_duration(p.eta_seconds) : "");
    };
    const auto result = render::render_video(model, args.job, callbacks);
    bar.finish();
    if (!result.face_found && !args.job.crop)
        std::cerr << "note: no face found in " << args.job.portrait << "; used a centre crop\n";
    char line[256];
    std::snprintf(line, sizeof line,
                  "%lld frames, %.2f s of video in %.2f s (real-time factor %.3f)",
                  static_cast<long long>(result.frames), result.video_seconds, result.wall_seconds,
                  result.real_time_factor());
    std::cout << "wrote " << args.job.out << ": " << line << "\n";
    return 0;
}

}  // namespace

Runner add_render_command(CLI::App& app) {
    auto args = std::make_shared<RenderArgs>();
    auto& s = args->job.settings;
    CLI::App* cmd =
        app.add_subcommand("render", "Render a talking-portrait MP4 from a portrait and audio");
    cmd->add_option("-c,--checkpoint", args->checkpoint,
                    "Loopy checkpoint (.safetensors; default: the bundled demo model)")
        ->check(CLI::ExistingFile);
    cmd->add_option("-p,--portrait", args->job.portrait, "Portrait image (PNG, JPEG, WebP, BMP)")
        ->required();
    cmd->add_option("-a,--audio", args->job.audio, "Speech or singing (any audio or video file)")
        ->required();
    cmd->add_option("-o,--out", args->job.out, "MP4 file to write")->required();
    cmd->add_option("--steps", s.steps, "DDIM steps per clip")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    args->guidance = add_guidance_options(*cmd, s);
    cmd->add_option("--seed", s.seed, "Noise seed")->capture_default_str();
    add_decoder_option(*cmd, s.decoder,
                       "full: the VAE decoder; preview: the fast preview decoder (lower quality; "
                       "checkpoints made by `loopy train-vae --preview`); default full");
    cmd->add_option("--device", args->model.device, "cpu, cuda or cuda:N")->capture_default_str();
    cmd->add_option("--dtype", args->model.dtype, "float32, or float16 / bfloat16 on CUDA")
        ->capture_default_str();
    add_motion_cache_option(*cmd, args->model);
    cmd->add_option("--threads", args->model.threads, "CPU threads (default: all cores)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--frames-dir", args->job.frames_dir, "Also write the frames as PNG here");
    cmd->add_option("--crf", args->job.crf, "H.264 quality (0 lossless .. 51 worst)")
        ->check(CLI::Range(0, 51))
        ->capture_default_str();
    cmd->add_option("--crop", args->crop, "Manual square crop of the portrait: X Y SIZE")
        ->expected(3);
    cmd->add_flag("-f,--force", args->job.overwrite, "Replace an existing output file");
    return [args]() { return run_render(*args); };
}

}  // namespace loopy::cli
