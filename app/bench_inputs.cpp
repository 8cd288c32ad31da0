#include "app/bench_inputs.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <fstream>

#include "core/system.h"

namespace loopy::cli {

std::shared_ptr<Model> bench_model(const std::string& checkpoint, const std::string& config_name,
                                   int resolution, const ModelOptions& options) {
    if (!checkpoint.empty()) return Model::load(checkpoint, options);
    auto config = model::LoopyConfig::preset(config_name);
    if (resolution > 0) config.resolution = resolution;
    config.validate();
    torch::manual_seed(0);
    return Model::from_network(model::LoopyModel(config), options);
}

std::vector<std::uint8_t> bench_portrait(int size) {
    std::vector<std::uint8_t> rgb(static_cast<size_t>(size) * size * 3);
    for (size_t i = 0; i < rgb.size(); ++i)
        rgb[i] = static_cast<std::uint8_t>((i * 7) % 251);
    return rgb;
}

std::vector<float> bench_audio(double seconds) {
    std::vector<float> x(static_cast<size_t>(seconds * model::kAudioSampleRate));
    for (size_t i = 0; i < x.size(); ++i) {
        const double t = static_cast<double>(i) / model::kAudioSampleRate;
        x[i] = static_cast<float>(0.3 * std::sin(2 * M_PI * 4 * t) * std::sin(2 * M_PI * 200 * t));
    }
    return x;
}

nlohmann::json machine_json() {
    const auto info = system_info();
    return {{"torch", info.torch_version},
            {"threads", info.threads},
            {"hardware_threads", info.hardware_cores},
            {"blas", info.blas},
            {"cpu_capability", info.cpu_capability}};
}

long peak_rss_kib() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss;
}

long current_rss_kib() {
    long pages = 0, resident = 0;
    std::ifstream statm("/proc/self/statm");
    statm >> pages >> resident;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

}  // namespace loopy::cli
