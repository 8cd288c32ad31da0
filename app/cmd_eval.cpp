// `loopy eval [--checkpoint C] --data DIR --report OUT [--steps ... --decoder full|preview]`:
// scores a model on held-out synthetic clips against the static and ground-truth baselines.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "app/commands.h"
#include "app/progress_bar.h"
#include "core/engine.h"
#include "core/resources.h"
#include "render/evaluate.h"

namespace loopy::cli {
namespace {

struct EvalArgs {
    std::string checkpoint;
    eval::EvalOptions options;
    ModelOptions model;
    GuidanceOptions guidance;  // given or not: the checkpoint's recommendation fills in
};

// " ± 0.055" after a mean over several clips; nothing after one clip's.
std::string standard_error_note(double se) {
    if (std::isnan(se)) return "";
    char buf[32];
    std::snprintf(buf, sizeof buf, " \u00b1 %.2g", se);
    return buf;
}

int run_eval(EvalArgs& args) {
    args.options.settings.validate();
    auto model = Model::load(checkpoint_or_default(args.checkpoint), args.model);
    apply_checkpoint_guidance(*model, args.options.settings, args.guidance);
    ProgressBar bar("eval");
    const auto summary =
        eval::evaluate(model, args.options, [&](int c, int n, const std::string& name) {
            bar.update(n > 0 ? static_cast<double>(c) / n : 0.0, name);
        });
    bar.finish();
    std::cout << summary.markdown << "\nmouth-opening correlation r: model "
              << summary.model_mouth_r << standard_error_note(summary.model_mouth_r_se)
              << ", static " << summary.static_mouth_r << ", VAE round trip " << summary.vae_mouth_r
              << ", ground truth " << summary.truth_mouth_r << " (" << summary.clips
              << " clips; guidance audio " << args.options.settings.audio_ratio << ", reference "
              << args.options.settings.reference_ratio << ", " << args.options.settings.steps
              << " steps, " << decoder_name(args.options.settings.decoder) << " decoder"
              << (std::isnan(summary.model_mouth_r_se) ? "" : "; \u00b1 its standard error")
              << "); report in " << args.options.report << "\n";
    return 0;
}

}  // namespace

Runner add_eval_command(CLI::App& app) {
    auto args = std::make_shared<EvalArgs>();
    auto& s = args->options.settings;
    s.steps = 8;
    CLI::App* cmd = app.add_subcommand("eval", "Score a model on held-out synthetic clips");
    cmd->add_option("-c,--checkpoint", args->checkpoint,
                    "Loopy checkpoint (default: the bundled demo model)")
        ->check(CLI::ExistingFile);
    cmd->add_option("--data", args->options.data, "A `loopy synth` folder (held-out clips)")
        ->required()
        ->check(CLI::ExistingDirectory);
    cmd->add_option("--report", args->options.report, "Folder for metrics.md/.csv and images")
        ->required();
    cmd->add_option("--steps", s.steps, "DDIM steps")->capture_default_str();
    args->guidance = add_guidance_options(*cmd, s);
    cmd->add_option("--seed", s.seed, "Noise seed")->capture_default_str();
    // The live preview's decoder can be scored too; the "VAE round trip" row stays the full VAE's.
    add_decoder_option(*cmd, s.decoder,
                       "The model's frames through full: the VAE decoder (default) or preview: the "
                       "fast preview decoder, as the live preview shows them");
    cmd->add_option("--max-clips", args->options.max_clips, "Evaluate at most this many clips");
    cmd->add_option("--device", args->model.device, "cpu, cuda or cuda:N")->capture_default_str();
    cmd->add_option("--threads", args->model.threads, "CPU threads (default: all cores)");
    return [args]() { return run_eval(*args); };
}

}  // namespace loopy::cli
