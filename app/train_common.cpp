#include "app/train_common.h"

#include <cstdio>

#include "app/progress_bar.h"
#include "core/error.h"

namespace loopy::cli {

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

model::LoopyModel initial_model(const std::string& init, const std::string& config, uint64_t seed) {
    if (init.empty() == config.empty()) throw Error("give exactly one of --init and --config");
    if (!init.empty()) return model::load_loopy_checkpoint(init);
    torch::manual_seed(seed);
    return model::LoopyModel(model::LoopyConfig::preset_or_file(config));
}

std::string progress_detail(const model::StepStats& stats, double seconds_per_step,
                            int64_t steps_left) {
    char text[96];
    std::snprintf(text, sizeof text, "loss %.4g, %.2f s/step, ETA ", stats.loss, seconds_per_step);
    return text + format_duration(seconds_per_step * static_cast<double>(steps_left));
}

void add_common(CLI::App* cmd, std::string& data, std::string& init, std::string& config,
                uint64_t& seed, int& threads, bool& fast, bool cache_allowed) {
    if (cache_allowed)
        cmd->add_option("--data", data,
                        "Training clips: a folder in loopy synth's format, or a training data "
                        "cache written by --save-data")
            ->required()
            ->check(CLI::ExistingPath);
    else
        cmd->add_option("--data", data, "Training clips (loopy synth's folder format)")
            ->required()
            ->check(CLI::ExistingDirectory);
    cmd->add_option("--init", init, "Start from this Loopy checkpoint")->check(CLI::ExistingFile);
    cmd->add_option("--config", config,
                    "Start from a fresh network of this preset (tiny) or config file (JSON, as "
                    "loopy info --config-json prints)");
    cmd->add_option("--seed", seed, "Seed of the data order, masks, noise and fresh weights")
        ->capture_default_str();
    cmd->add_option("--threads", threads, "CPU threads (default: all cores)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_flag("--fast", fast,
                  "Use oneDNN's convolution kernels: faster on CPU, but a resumed run then "
                  "matches an uninterrupted one only to rounding");
}

}  // namespace loopy::cli
