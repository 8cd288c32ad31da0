#pragma once
// What the training commands (`train`, `train-vae`, `train-audio`) share: the start network,
// the options every one of them takes, and the progress line.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <string>

#include "model/loopy_model.h"
#include "model/training.h"

namespace loopy::cli {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t);

// A fresh network from a preset (seeded), or a checkpoint's.
model::LoopyModel initial_model(const std::string& init, const std::string& config, uint64_t seed);

// "loss 0.0312, 0.84 s/step, ETA 12:05"
std::string progress_detail(const model::StepStats& stats, double seconds_per_step,
                            int64_t steps_left);

// --data (a folder of clips; with `cache_allowed` also a training data cache file), --init,
// --config, --seed, --threads, --fast.
void add_common(CLI::App* cmd, std::string& data, std::string& init, std::string& config,
                uint64_t& seed, int& threads, bool& fast, bool cache_allowed = false);

}  // namespace loopy::cli
