#pragma once
// What the `loopy bench` commands share: the model (a checkpoint or random weights), synthetic
// inputs and memory figures.
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/engine.h"

namespace CLI {
class App;
}

namespace loopy::cli {

// What `bench render` and `bench live` both take: the model and how it generates.
struct BenchModelArgs {
    std::string checkpoint;  // or a random-weight network of the preset `config`
    std::string config = "tiny";
    int resolution = 0;           // > 0: overrides the config's
    std::string cfg = "on";       // "off": one pass (ratios 1 / 1)
    bool ratios_given = false;    // --cfg-audio or --cfg-ref (an error with --cfg off)
    GenerationSettings settings;  // 4 steps unless --steps; the method's ratios unless --cfg-*
    ModelOptions model;
    std::string json_out;

    BenchModelArgs() { settings.steps = 4; }
    GenerationSettings generation() const;  // `settings` with --cfg applied; throws on a clash
    // "3-pass (audio 5, reference 3)": the passes that run at these ratios, or "off (1 pass)".
    std::string guidance_name() const;
};
// --checkpoint, --config, --resolution, --steps, --decoder, --cfg, --cfg-audio, --cfg-ref,
// --device, --threads, --json.
void add_bench_model_options(CLI::App& cmd, BenchModelArgs& args);
// The model the arguments name, loaded or made with `options`. Throws if --resolution differs
// from a checkpoint's.
std::shared_ptr<Model> bench_model(const BenchModelArgs& args, const ModelOptions& options);
// What both commands' JSON files say of the run in "config".
nlohmann::json bench_config_json(const BenchModelArgs& args, const Model& model);
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
        double flops = 0;     // its products' work (core/flop_counter.h), 0 for other ops
    };
    std::vector<Row> rows() const;  // by self time, largest first

  private:
    std::uint64_t handle_ = 0;
};

}  // namespace loopy::cli
