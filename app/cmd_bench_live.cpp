// `loopy bench live`: the GUI's live loop (render::LiveGenerator) fed by an audio file replayed at
// real-time pace instead of a microphone. Prints sustained frames/s, dropped audio and frames,
// audio-to-frame latency and memory; never passes or fails.
#include <algorithm>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/bench_inputs.h"
#include "app/commands.h"
#include "audio/audio_decoder.h"
#include "core/error.h"
#include "core/system.h"
#include "render/live_generator.h"
#include "render/portrait.h"

namespace loopy::cli {
namespace {

using Clock = render::LiveClock;

struct BenchLiveArgs {
    BenchModelArgs bench;
    std::string portrait, audio;
    double seconds = 0;      // 0: the audio's length (the file's, or 20 s of synthetic audio)
    double max_pending = 0;  // 0: the live loop's default bound
    bool overlap_decode = false;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const auto i = static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

// Frame emission time minus the capture time of the newest audio its clip needed. The GUI adds
// the hand-off to the UI thread and the paint (a few ms) on top of this.
struct LatencyLog {
    std::vector<double> seconds;
    void add(const render::LiveFrameEvent& e) {
        if (!e.after_stop)
            seconds.push_back(
                std::chrono::duration<double>(Clock::now() - e.audio_captured).count());
    }
};

std::vector<uint8_t> live_portrait(const BenchLiveArgs& a, int size) {
    if (a.portrait.empty()) return bench_portrait(size);
    render::PortraitOptions options;
    options.size = size;
    return render::load_portrait(a.portrait, options).rgb;
}

std::vector<float> live_audio(const BenchLiveArgs& a) {
    if (a.audio.empty()) return bench_audio(a.seconds > 0 ? a.seconds : 20.0);
    auto decoded = audio::decode_audio_file(a.audio, model::kAudioSampleRate);
    if (decoded.samples.empty()) throw Error(a.audio + ": no audio samples");
    return std::move(decoded.samples);
}

int run_bench_live(BenchLiveArgs& a) {
    const auto settings = a.bench.generation();
    auto m = bench_model(a.bench, a.bench.model);
    const auto portrait = live_portrait(a, m->resolution());
    auto samples = live_audio(a);
    const double clip_seconds = double(samples.size()) / model::kAudioSampleRate;
    const double total = a.seconds > 0 ? a.seconds : clip_seconds;
    const int loops = static_cast<int>(std::ceil(total / clip_seconds));
    samples.resize(std::min(samples.size() * static_cast<size_t>(loops),
                            static_cast<size_t>(total * model::kAudioSampleRate)));
    auto session =
        std::make_shared<Session>(m, portrait.data(), m->resolution(), m->resolution(), settings);
    render::LiveOptions options;
    options.max_pending_seconds = a.max_pending;
    options.overlap_decode = a.overlap_decode;
    render::LiveGenerator live(render::replay_source(std::move(samples)), session, options);

    LatencyLog latency;
    const auto start = Clock::now();
    long rss_early = 0;  // RSS after the first tenth of the run, the base for growth
    render::LiveCallbacks callbacks;
    callbacks.on_frame = [&](const render::LiveFrameEvent& e) { latency.add(e); };
    callbacks.on_tick = [&] {
        if (rss_early == 0 &&
            std::chrono::duration<double>(Clock::now() - start).count() > 0.1 * total)
            rss_early = current_rss_kib();
    };
    std::cerr << "replaying " << total << " s of audio in real time...\n";
    live.run(callbacks);
    const double wall = std::chrono::duration<double>(Clock::now() - start).count();
    const auto c = live.counters();
    const long rss_end = current_rss_kib();
    const double sustained = c.frames / wall;
    const double dropped_frames = c.discarded_seconds * model::kVideoFps;
    const double p50 = percentile(latency.seconds, 0.5), p95 = percentile(latency.seconds, 0.95);
    const double growth = rss_early > 0 ? 100.0 * (rss_end - rss_early) / rss_early : 0;

    const auto info = system_info();
    std::cout << std::fixed << std::setprecision(2) << "config " << m->config().name << ", "
              << m->resolution() << "x" << m->resolution() << ", " << settings.steps
              << " DDIM steps, guidance " << a.bench.guidance_name() << ", "
              << decoder_name(settings.decoder) << " decoder, " << info.threads
              << " threads, pending audio bound " << live.options().max_pending_seconds << " s, "
              << "decode " << (live.options().overlap_decode ? "overlapped" : "in turn") << "\n"
              << "replayed " << c.captured_seconds << " s of audio in " << wall << " s; pushed "
              << c.pushed_seconds << " s, dropped " << c.discarded_seconds << " s (~"
              << std::setprecision(0) << dropped_frames << " frames)\n"
              << std::setprecision(2) << c.frames << " frames: sustained " << sustained
              << " frames/s (real-time factor " << sustained / model::kVideoFps
              << "), generation alone " << c.generated_fps << " frames/s\n"
              << "audio-to-frame latency p50 " << std::setprecision(0) << p50 * 1e3 << " ms, p95 "
              << p95 * 1e3 << " ms (" << latency.seconds.size() << " live frames)\n"
              << "RSS " << rss_early / 1024 << " MiB after 10 % of the run, " << rss_end / 1024
              << " MiB at the end (" << std::setprecision(1) << growth << " %), peak "
              << peak_rss_kib() / 1024 << " MiB\n";
    if (!a.bench.json_out.empty()) {
        nlohmann::json j;
        j["machine"] = machine_json();
        j["config"] = bench_config_json(a.bench, *m);
        j["config"]["max_pending_seconds"] = live.options().max_pending_seconds;
        j["config"]["overlap_decode"] = live.options().overlap_decode;
        j["audio_seconds"] = c.captured_seconds;
        j["wall_seconds"] = wall;
        j["frames"] = c.frames;
        j["sustained_fps"] = sustained;
        j["real_time_factor"] = sustained / model::kVideoFps;
        j["generation_fps"] = c.generated_fps;
        j["dropped_audio_seconds"] = c.discarded_seconds;
        j["dropped_frames"] = dropped_frames;
        j["latency_ms"] = {{"p50", p50 * 1e3}, {"p95", p95 * 1e3}};
        j["rss_mib"] = {{"after_10_percent", rss_early / 1024.0},
                        {"end", rss_end / 1024.0},
                        {"growth_percent", growth},
                        {"peak", peak_rss_kib() / 1024.0}};
        std::ofstream(a.bench.json_out) << j.dump(2) << "\n";
    }
    return 0;
}

}  // namespace

Runner add_bench_live_command(CLI::App& bench) {
    auto a = std::make_shared<BenchLiveArgs>();
    CLI::App* cmd = bench.add_subcommand(
        "live", "Replay audio at real-time pace through the live loop: fps, drops, latency");
    add_bench_model_options(*cmd, a->bench);
    cmd->add_option("-p,--portrait", a->portrait, "Portrait image (default: a test pattern)")
        ->check(CLI::ExistingFile);
    cmd->add_option("-a,--audio", a->audio, "Audio to replay (default: a synthetic tone)")
        ->check(CLI::ExistingFile);
    cmd->add_option("--seconds", a->seconds, "Replay this long, looping the audio (0: once)")
        ->capture_default_str();
    cmd->add_option("--max-pending", a->max_pending,
                    "Drop audio waiting longer than this (s; 0: one clip and three frames)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_flag("--overlap-decode", a->overlap_decode,
                  "Decode each clip on a thread of its own while the next one is denoised");
    return [a]() { return run_bench_live(*a); };
}

}  // namespace loopy::cli
