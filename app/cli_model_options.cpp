// The options of ModelOptions that more than one `loopy` command offers.
#include <map>
#include <string>

#include "app/commands.h"
#include "core/engine.h"

namespace loopy::cli {

void add_motion_cache_option(CLI::App& cmd, ModelOptions& model) {
    cmd.add_option("--motion-cache", model.motion_cache,
                   "Keep generated frames' motion features for the later clips that reuse them: "
                   "auto (the CPU only), on (on a GPU: faster, ~1.8 GB more for SD 1.5), off")
        ->transform(CLI::CheckedTransformer(std::map<std::string, ModelOptions::MotionCache>{
            {"auto", ModelOptions::MotionCache::Auto},
            {"on", ModelOptions::MotionCache::On},
            {"off", ModelOptions::MotionCache::Off}}));
}

}  // namespace loopy::cli
