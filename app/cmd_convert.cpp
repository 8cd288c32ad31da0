// `loopy convert --sd15 DIR --wav2vec2 DIR --out FILE [--config sd15|tiny]`: a Loopy training
// start from a diffusers Stable Diffusion folder and a transformers wav2vec2 folder.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "app/commands.h"
#include "app/progress_bar.h"
#include "core/error.h"
#include "model/convert.h"

namespace loopy::cli {
namespace {

struct ConvertArgs {
    model::ConvertOptions options;
    std::string out;
    bool list_fresh = false;
};

int run_convert(const ConvertArgs& args) {
    ProgressBar bar("convert");
    const auto report = model::convert_checkpoint(
        args.options, args.out, [&](const std::string& stage, int64_t done, int64_t total) {
            bar.update(total > 0 ? static_cast<double>(done) / total : 0.0, stage);
        });
    bar.finish();
    std::cout << report.describe(args.list_fresh);
    const auto bytes = std::filesystem::file_size(args.out);
    char size[32];
    std::snprintf(size, sizeof size, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
    std::cout << "wrote " << args.out << ": " << report.copied.size() + report.fresh.size()
              << " tensors, " << size << "\n";
    return 0;
}

}  // namespace

Runner add_convert_command(CLI::App& app) {
    auto args = std::make_shared<ConvertArgs>();
    CLI::App* cmd = app.add_subcommand(
        "convert", "Make a Loopy checkpoint from Stable Diffusion 1.5 and wav2vec2 folders");
    cmd->add_option("--sd15", args->options.sd_dir,
                    "diffusers Stable Diffusion folder (with unet/ and vae/)")
        ->required()
        ->check(CLI::ExistingDirectory);
    cmd->add_option("--wav2vec2", args->options.wav2vec2_dir,
                    "transformers Wav2Vec2 folder (config.json, model.safetensors)")
        ->required()
        ->check(CLI::ExistingDirectory);
    cmd->add_option("--out", args->out, "The Loopy checkpoint to write (.safetensors)")->required();
    cmd->add_option("--config", args->options.preset, "Loopy configuration: sd15 or tiny")
        ->check(CLI::IsMember({"sd15", "tiny"}))
        ->capture_default_str();
    cmd->add_option("--seed", args->options.seed, "Seed for the freshly initialised layers")
        ->capture_default_str();
    cmd->add_flag("--list-fresh", args->list_fresh,
                  "List every freshly initialised tensor (default: grouped by module)");
    return [args]() { return run_convert(*args); };
}

}  // namespace loopy::cli
