#include "app/bench_inputs.h"

#include <sys/resource.h>
#include <unistd.h>

#include <ATen/record_function.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "app/commands.h"
#include "core/error.h"
#include "core/flop_counter.h"
#include "core/system.h"
#include "model/guidance.h"

namespace loopy::cli {

GenerationSettings BenchModelArgs::generation() const {
    GenerationSettings s = settings;
    if (cfg == "off" && ratios_given)
        throw Error(
            "--cfg off times one pass, without guidance: leave out --cfg-audio / --cfg-ref");
    if (cfg == "off") s.reference_ratio = s.audio_ratio = 1.0;
    return s;
}

std::string BenchModelArgs::guidance_name() const {
    if (cfg == "off") return "off (1 pass)";
    const model::GuidanceWeights weights(settings.reference_ratio, settings.audio_ratio);
    std::ostringstream name;
    name << weights.passes().size() << "-pass (audio " << settings.audio_ratio << ", reference "
         << settings.reference_ratio << ")";
    return name.str();
}

void add_bench_model_options(CLI::App& cmd, BenchModelArgs& a) {
    cmd.add_option("-c,--checkpoint", a.checkpoint, "Loopy checkpoint (default: random weights)")
        ->check(CLI::ExistingFile);
    cmd.add_option("--config", a.config,
                   "Random-weight network without --checkpoint: tiny, sd15 or a config file (JSON)")
        ->capture_default_str();
    cmd.add_option("--resolution", a.resolution, "Override the config's resolution");
    cmd.add_option("--steps", a.settings.steps, "DDIM steps")->capture_default_str();
    add_decoder_option(cmd, a.settings.decoder,
                       "full (VAE, the default) or preview (the fast preview decoder)");
    cmd.add_option("--cfg", a.cfg,
                   "on: guidance at --cfg-audio / --cfg-ref; off: one pass (without them)")
        ->check(CLI::IsMember({"on", "off"}))
        ->capture_default_str();
    // The method's 5 / 3 (three passes) by default, as the benchmark targets ask, whatever the
    // checkpoint recommends; a ratio pair whose pass weight is zero skips that pass.
    const auto given = [&a](const std::string&) { a.ratios_given = true; };
    cmd.add_option("--cfg-audio", a.settings.audio_ratio, "Audio guidance ratio")
        ->each(given)
        ->capture_default_str();
    cmd.add_option("--cfg-ref", a.settings.reference_ratio, "Reference guidance ratio")
        ->each(given)
        ->capture_default_str();
    cmd.add_option("--device", a.model.device, "cpu, cuda or cuda:N")->capture_default_str();
    cmd.add_option("--threads", a.model.threads, "CPU threads (0: all cores)")
        ->capture_default_str();
    cmd.add_option("--json", a.json_out, "Also write the figures as JSON");
}

nlohmann::json bench_config_json(const BenchModelArgs& args, const Model& model) {
    return {{"name", model.config().name},
            {"resolution", model.resolution()},
            {"checkpoint", args.checkpoint},
            {"steps", args.settings.steps},
            {"cfg", args.cfg},
            {"guidance", args.guidance_name()},
            {"decoder", decoder_name(args.settings.decoder)},
            {"device", model.options().device},
            {"dtype", model.options().dtype}};
}

std::shared_ptr<Model> bench_model(const BenchModelArgs& args, const ModelOptions& options) {
    if (!args.checkpoint.empty()) {
        // A checkpoint fixes its resolution: say so rather than time another size than asked.
        const auto resolution = model::read_loopy_config(args.checkpoint).resolution;
        if (args.resolution > 0 && args.resolution != resolution)
            throw Error("--resolution " + std::to_string(args.resolution) +
                        " applies to random-weight networks (--config); " + args.checkpoint +
                        " is a " + std::to_string(resolution) + "x" + std::to_string(resolution) +
                        " model");
        return Model::load(args.checkpoint, options);
    }
    auto config = model::LoopyConfig::preset_or_file(args.config);
    if (args.resolution > 0) config.resolution = args.resolution;
    config.validate();
    torch::manual_seed(0);
    model::LoopyModel network(config);
    return Model::from_network(network, options,
                               model::PreviewDecoder(model::preview_decoder_options(config)));
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

std::unique_ptr<Session> bench_session(const std::shared_ptr<Model>& model,
                                       const GenerationSettings& settings, double seconds) {
    const int size = model->resolution();
    const auto portrait = bench_portrait(size);
    const auto audio = bench_audio(seconds);
    auto session = std::make_unique<Session>(model, portrait.data(), size, size, settings);
    session->push_audio(audio.data(), audio.size());
    session->end_audio();
    return session;
}

nlohmann::json machine_json() {
    const auto info = system_info();
    return {{"torch", info.torch_version},
            {"threads", info.threads},
            {"hardware_threads", info.hardware_cores},
            {"blas", info.blas},
            {"blas_threads", info.blas_threads},
            {"cpu_capability", info.cpu_capability},
            {"gpu", info.gpu_name}};
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

// --- OpProfile ---

namespace {

using ProfileClock = std::chrono::steady_clock;

struct OpFrame : at::ObserverContext {
    ProfileClock::time_point start;
    double children_ms = 0;
    double flops = 0;
    bool counted = false;
    bool opens_scope = false;
};

// The observers are plain function pointers, so their state is one global (one OpProfile at a
// time, on one thread).
struct ProfileState {
    bool active = false;
    std::string scope;
    int scope_depth = 0;
    std::vector<OpFrame*> stack;  // counted ops in progress
    std::map<std::string, OpProfile::Row> rows;
};

ProfileState& profile_state() {
    static ProfileState state;
    return state;
}

std::unique_ptr<at::ObserverContext> on_op_start(const at::RecordFunction& fn) {
    auto& s = profile_state();
    auto frame = std::make_unique<OpFrame>();
    frame->opens_scope = !s.scope.empty() && s.scope == fn.name();
    if (frame->opens_scope) ++s.scope_depth;
    frame->counted = s.scope.empty() || s.scope_depth > 0;
    if (frame->counted) {
        s.stack.push_back(frame.get());
        frame->flops = operator_flops(fn);
    }
    frame->start = ProfileClock::now();
    return frame;
}

void on_op_end(const at::RecordFunction& fn, at::ObserverContext* context) {
    const auto end = ProfileClock::now();
    auto& s = profile_state();
    auto* frame = static_cast<OpFrame*>(context);
    if (!frame) return;
    if (frame->opens_scope) --s.scope_depth;
    if (!frame->counted || s.stack.empty()) return;
    const double ms = std::chrono::duration<double, std::milli>(end - frame->start).count();
    s.stack.pop_back();
    if (!s.stack.empty()) s.stack.back()->children_ms += ms;
    auto& row = s.rows[fn.name()];
    row.name = fn.name();
    row.calls += 1;
    row.total_ms += ms;
    row.self_ms += ms - frame->children_ms;
    row.flops += frame->flops;
}

}  // namespace

OpProfile::OpProfile(std::string scope) {
    auto& s = profile_state();
    if (s.active) throw Error("OpProfile: only one profile at a time");
    s = ProfileState{};
    s.active = true;
    s.scope = std::move(scope);
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(on_op_start, on_op_end)
            .needsInputs(true)
            .scopes({at::RecordScope::FUNCTION, at::RecordScope::USER_SCOPE}));
}

OpProfile::~OpProfile() {
    at::removeCallback(handle_);
    profile_state().active = false;
}

std::vector<OpProfile::Row> OpProfile::rows() const {
    std::vector<Row> out;
    for (const auto& [name, row] : profile_state().rows)
        out.push_back(row);
    std::sort(out.begin(), out.end(),
              [](const Row& a, const Row& b) { return a.self_ms > b.self_ms; });
    return out;
}

}  // namespace loopy::cli
