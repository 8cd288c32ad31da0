#pragma once
// Each `loopy` subcommand registers itself on the CLI11 app and runs from its own file.
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace loopy {
class Model;
enum class Decoder;
struct GenerationSettings;
struct ModelOptions;
}  // namespace loopy

namespace loopy::cli {

// Returns the function to run when the subcommand was chosen (exit code).
using Runner = std::function<int()>;

Runner add_info_command(CLI::App& app);
Runner add_bench_command(CLI::App& app);
Runner add_convert_command(CLI::App& app);
Runner add_render_command(CLI::App& app);
Runner add_synth_command(CLI::App& app);
Runner add_eval_command(CLI::App& app);
Runner add_train_command(CLI::App& app);
Runner add_train_vae_command(CLI::App& app);
Runner add_train_audio_command(CLI::App& app);
// --cfg-audio and --cfg-ref of `render` and `eval`; ratios left out are filled in from the
// checkpoint's recommendation (if any) by apply_checkpoint_guidance, which tells the user.
struct GuidanceOptions {
    CLI::Option* audio = nullptr;
    CLI::Option* reference = nullptr;
};
GuidanceOptions add_guidance_options(CLI::App& cmd, GenerationSettings& settings);
void apply_checkpoint_guidance(const Model& model, GenerationSettings& settings,
                               const GuidanceOptions& given);

// --decoder full|preview (GenerationSettings::decoder), for `render` and the benchmarks.
void add_decoder_option(CLI::App& cmd, Decoder& decoder, const std::string& help);

// --motion-cache auto|on|off (ModelOptions::motion_cache), for `render` and `bench render`.
void add_motion_cache_option(CLI::App& cmd, ModelOptions& model);
// Its value as the option spells it.
std::string motion_cache_name(const ModelOptions& model);

// `bench render`, registered on the `bench` subcommand.
Runner add_bench_render_command(CLI::App& bench);
// `bench live`, likewise.
Runner add_bench_live_command(CLI::App& bench);

}  // namespace loopy::cli
