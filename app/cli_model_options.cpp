// The options of ModelOptions and GenerationSettings that more than one `loopy` command offers.
#include <map>
#include <string>

#include "app/commands.h"
#include "core/engine.h"

namespace loopy::cli {

namespace {

const std::map<std::string, ModelOptions::MotionCache>& motion_cache_modes() {
    static const std::map<std::string, ModelOptions::MotionCache> modes{
        {"auto", ModelOptions::MotionCache::Auto},
        {"on", ModelOptions::MotionCache::On},
        {"off", ModelOptions::MotionCache::Off}};
    return modes;
}

}  // namespace

void add_decoder_option(CLI::App& cmd, Decoder& decoder, const std::string& help) {
    cmd.add_option("--decoder", decoder, help)
        ->transform(CLI::CheckedTransformer(std::map<std::string, Decoder>{
            {"full", Decoder::full}, {"preview", Decoder::preview}}));
}

void add_motion_cache_option(CLI::App& cmd, ModelOptions& model) {
    cmd.add_option("--motion-cache", model.motion_cache,
                   "Keep generated frames' motion features for the later clips that reuse them: "
                   "auto (the CPU only), on (on a GPU: faster, ~1.8 GB more for SD 1.5), off")
        ->transform(CLI::CheckedTransformer(motion_cache_modes()));
}

std::string motion_cache_name(const ModelOptions& model) {
    for (const auto& [name, mode] : motion_cache_modes())
        if (mode == model.motion_cache) return name;
    return "auto";
}

}  // namespace loopy::cli
