// `loopy synth --out DIR --clips N --seed S [--size 128|256|512] [--seconds X] [--png]
// [--split train|heldout]`: draws a synthetic talking-face data set (docs/synthetic-data.md).
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "app/commands.h"
#include "app/progress_bar.h"
#include "render/synth_dataset.h"

namespace loopy::cli {
namespace {

struct SynthArgs {
    synth::SynthOptions options;
    std::string split = "train";
    bool no_video = false;
};

int run_synth_command(SynthArgs args) {
    args.options.split = args.split == "heldout" ? synth::Split::HeldOut : synth::Split::Train;
    args.options.clip.write_mp4 = !args.no_video;
    ProgressBar bar("synth");
    const auto start = std::chrono::steady_clock::now();
    const auto made = synth::run_synth(
        args.options, [&](std::int64_t done, std::int64_t total, const std::string& clip) {
            bar.update(total > 0 ? static_cast<double>(done) / total : 0.0, clip);
        });
    bar.finish();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("wrote %zu %s clip%s (%s .. %s) to %s in %.1f s\n", made.size(),
                synth::to_string(args.options.split), made.size() == 1 ? "" : "s",
                made.front().name.c_str(), made.back().name.c_str(), args.options.out.c_str(),
                seconds);
    return 0;
}

}  // namespace

Runner add_synth_command(CLI::App& app) {
    auto args = std::make_shared<SynthArgs>();
    CLI::App* cmd =
        app.add_subcommand("synth", "Draw a synthetic talking-face data set (video, audio, truth)");
    cmd->add_option("--out", args->options.out, "Data set folder (created)")->required();
    cmd->add_option("--clips", args->options.clips, "Number of clips")
        ->check(CLI::Range(1, 1000000))
        ->capture_default_str();
    cmd->add_option("--seed", args->options.seed,
                    "First seed within the split (clip i uses seed + i)")
        ->capture_default_str();
    cmd->add_option("--size", args->options.clip.size, "Frame size in pixels")
        ->check(CLI::IsMember({128, 256, 512}))
        ->capture_default_str();
    cmd->add_option("--seconds", args->options.clip.seconds, "Length of each clip")
        ->check(CLI::Range(0.1, 600.0))
        ->capture_default_str();
    cmd->add_flag("--png", args->options.clip.write_png, "Also write every frame as PNG");
    cmd->add_flag("--no-video", args->no_video, "Skip video.mp4 (audio, truth and PNGs only)");
    cmd->add_option("--split", args->split,
                    "train: seeds below 1000000; heldout: seeds from 1000000 + seed")
        ->check(CLI::IsMember({"train", "heldout"}))
        ->capture_default_str();
    return [args]() { return run_synth_command(*args); };
}

}  // namespace loopy::cli
