// The guidance ratios of `loopy render` and `loopy eval`: the user's, else the checkpoint's.
#include "app/commands.h"
#include "core/engine.h"
#include "core/log.h"

namespace loopy::cli {

GuidanceOptions add_guidance_options(CLI::App& cmd, GenerationSettings& settings) {
    GuidanceOptions o;
    o.audio =
        cmd.add_option("--cfg-audio", settings.audio_ratio,
                       "Audio guidance ratio (default: the checkpoint's recommendation, else 5)");
    o.reference = cmd.add_option(
        "--cfg-ref", settings.reference_ratio,
        "Reference guidance ratio (default: the checkpoint's recommendation, else 3)");
    return o;
}

void apply_checkpoint_guidance(const Model& model, GenerationSettings& settings,
                               const GuidanceOptions& given) {
    const bool audio_given = given.audio && given.audio->count() > 0;
    const bool reference_given = given.reference && given.reference->count() > 0;
    if (!use_recommended_guidance(model, settings, audio_given, reference_given)) return;
    logger()->info(
        "guidance ratios: audio {}, reference {} (the checkpoint's recommendation; "
        "--cfg-audio / --cfg-ref override it)",
        settings.audio_ratio, settings.reference_ratio);
}

}  // namespace loopy::cli
