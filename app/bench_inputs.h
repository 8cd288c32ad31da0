#pragma once
// What the `loopy bench` commands share: the model (a checkpoint or random weights), synthetic
// inputs and memory figures.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/engine.h"

namespace loopy::cli {

// `checkpoint` if given, else a random-weight network of the preset `config` (resolution > 0
// overrides its resolution).
std::shared_ptr<Model> bench_model(const std::string& checkpoint, const std::string& config,
                                   int resolution, const ModelOptions& options);
std::vector<std::uint8_t> bench_portrait(int size);  // a deterministic pattern
std::vector<float> bench_audio(double seconds);      // 16 kHz, a 200 Hz tone pulsing at 4 Hz
// A session on bench_portrait with `seconds` of bench_audio, all of it pushed and ended.
std::unique_ptr<Session> bench_session(const std::shared_ptr<Model>& model,
                                       const GenerationSettings& settings, double seconds);
// The machine a `--json` result was measured on (LibTorch, threads, BLAS, CPU kernel level).
nlohmann::json machine_json();
long peak_rss_kib();
long current_rss_kib();

// Per-operator CPU time of this thread while alive, from LibTorch's RecordFunction observers
// (the dispatcher's own hooks; no profiler build option needed). With `scope` set, only what runs
// inside a RECORD_USER_SCOPE(scope) counts (e.g. "loopy::denoising_unet").
class OpProfile {
  public:
    explicit OpProfile(std::string scope = {});
    ~OpProfile();
    OpProfile(const OpProfile&) = delete;
    OpProfile& operator=(const OpProfile&) = delete;

    struct Row {
        std::string name;
        std::int64_t calls = 0;
        double total_ms = 0;  // including the ops it called
        double self_ms = 0;   // excluding them
    };
    std::vector<Row> rows() const;  // by self time, largest first

  private:
    std::uint64_t handle_ = 0;
};

}  // namespace loopy::cli
