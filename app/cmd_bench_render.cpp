// `loopy bench render`: the generation pipeline's speed, stage by stage, on synthetic input.
// Prints figures; never passes or fails.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <unistd.h>  // environ

#include "app/bench_inputs.h"
#include "app/commands.h"
#include "core/decode_worker.h"
#include "core/engine.h"
#include "core/error.h"
#include "core/flop_counter.h"
#include "core/system.h"

namespace loopy::cli {
namespace {

struct BenchRenderArgs {
    BenchModelArgs bench;
    double seconds = 4.8;  // of synthetic audio
    int profile_rows = 0;  // > 0: print the denoiser's most expensive operators
    bool compare_cpu = false;
    bool overlap_decode = false;  // decode clip n while clip n+1 is denoised
};

// The LOOPY_* environment variables set for the run (the engine's on/off switches), so that a
// JSON file says which variant it timed.
nlohmann::json loopy_switches() {
    nlohmann::json out = nlohmann::json::object();
    for (char** e = environ; e && *e; ++e) {
        const std::string entry(*e);
        const auto eq = entry.find('=');
        if (entry.rfind("LOOPY_", 0) == 0 && eq != std::string::npos)
            out[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
    return out;
}

// The first clip of a fresh session, frame after frame (RGB).
std::vector<std::uint8_t> first_clip_pixels(const std::shared_ptr<Model>& m,
                                            const GenerationSettings& s) {
    std::vector<std::uint8_t> out;
    bench_session(m, s, 0.48)->generate_clip([&](const Frame& f) {
        out.insert(out.end(), f.rgb.begin(), f.rgb.end());
    });
    return out;
}

// --compare-cpu: the same weights and seed on the CPU in float32 and NCHW (the unoptimised path),
// against the settings under test: how far half precision, fused kernels, NHWC move the frames.
nlohmann::json compare_with_cpu(const BenchModelArgs& a, const std::shared_ptr<Model>& m) {
    ModelOptions cpu = a.model;
    cpu.device = "cpu";
    cpu.dtype = "float32";
    cpu.channels_last = false;
    const auto settings = a.generation();
    const auto want = first_clip_pixels(bench_model(a, cpu), settings);
    const auto got = first_clip_pixels(m, settings);
    if (got.size() != want.size() || want.empty()) throw Error("compare-cpu: frame sizes differ");
    double squares = 0, sum = 0;
    int max_diff = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const int d = std::abs(int(got[i]) - int(want[i]));
        squares += double(d) * d;
        sum += d;
        max_diff = std::max(max_diff, d);
    }
    const double mse = squares / want.size();
    const double psnr = mse > 0 ? 10 * std::log10(255.0 * 255.0 / mse) : 99.0;
    std::cout << std::setprecision(2) << "first clip against the CPU in float32: PSNR " << psnr
              << " dB, mean |difference| " << sum / want.size() << ", max " << max_diff
              << " (of 255)\n";
    return {{"psnr_db", psnr}, {"mean_abs_diff", sum / want.size()}, {"max_abs_diff", max_diff}};
}

// FLOP of one denoising step: one clip with 2 steps minus one clip with 1 step.
double denoise_step_flop(const std::shared_ptr<Model>& m, GenerationSettings s) {
    double flop[2];
    for (int steps : {1, 2}) {
        s.steps = steps;
        const auto session = bench_session(m, s, 0.48);
        FlopCounter counter;
        session->generate({});
        flop[steps - 1] = counter.flops();
    }
    return flop[1] - flop[0];
}

// Profiles the denoising U-Net during the second clip of a fresh session (the first has no
// motion frames) and prints its `rows` most expensive operators per denoising step.
nlohmann::json profile_denoiser(const std::shared_ptr<Model>& m, const GenerationSettings& s,
                                int rows) {
    const auto session = bench_session(m, s, 0.96);
    session->generate_clip({});
    OpProfile profile("loopy::denoising_unet");
    session->generate_clip({});
    const double steps = s.steps;
    std::cout << "denoiser profile per step (self ms, total ms, calls, GFLOP/s of its products):\n";
    nlohmann::json out = nlohmann::json::array();
    for (const auto& row : profile.rows()) {
        if (static_cast<int>(out.size()) == rows) break;
        // Over total time: aten::convolution's work is done by the backend op it calls.
        const double gflops = row.total_ms > 0 ? row.flops / (row.total_ms * 1e6) : 0.0;
        std::cout << "  " << std::left << std::setw(40) << row.name << std::right << std::fixed
                  << std::setprecision(2) << std::setw(9) << row.self_ms / steps << std::setw(9)
                  << row.total_ms / steps << std::setw(7) << row.calls / steps;
        if (row.flops > 0) std::cout << std::setprecision(1) << std::setw(8) << gflops;
        std::cout << std::defaultfloat << "\n";
        out.push_back({{"op", row.name},
                       {"self_ms", row.self_ms / steps},
                       {"total_ms", row.total_ms / steps},
                       {"calls", row.calls / steps},
                       {"gflop", row.flops / steps / 1e9}});
    }
    return out;
}

int run_bench_render(BenchRenderArgs& a) {
    const auto settings = a.bench.generation();
    const auto device = parse_device(a.bench.model.device);
    const int gpu = device.is_cuda() ? std::max<int>(0, device.index()) : -1;
    auto m = bench_model(a.bench, a.bench.model);
    if (gpu >= 0) reset_gpu_memory_peak(gpu);  // after CUDA's start; the weights stay counted
    const auto session = bench_session(m, settings, a.seconds);
    session->generate_clip({});  // warm-up (allocator, kernels), not timed below
    const auto warm = session->stats();
    const auto start = std::chrono::steady_clock::now();
    if (a.overlap_decode) {
        DecodeWorker decoder(*session, {});
        while (auto clip = session->denoise_clip())
            decoder.submit(std::move(*clip));
        decoder.finish();
    } else {
        session->generate({});
    }
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto& st = session->stats();
    const auto frames = st.frames - warm.frames;
    const double fps = frames / wall;
    const double step_flop = denoise_step_flop(m, settings);
    const auto gpu_peak = gpu >= 0 ? gpu_memory_peak(gpu) : GpuMemoryPeak{};
    const double matmul = measure_matmul_gflops(m->options().device, m->options().dtype);
    const double step_gflops = step_flop / 1e9 / st.denoise_step.median();

    const auto info = system_info();
    std::cout << std::fixed << std::setprecision(2) << "config " << m->config().name << ", "
              << m->resolution() << "x" << m->resolution() << ", " << settings.steps
              << " DDIM steps, guidance " << a.bench.guidance_name() << ", " << info.threads
              << " threads, " << m->options().device << " " << m->options().dtype
              << (m->options().channels_last ? ", channels last" : "")
              << (a.overlap_decode ? ", decode overlapped" : "") << "\n";
    std::cout << "stage (median)                      ms\n"
              << "  reference (once per portrait) " << std::setw(10)
              << st.reference_encode.median() * 1e3 << "\n"
              << "  audio encoder per clip         " << std::setw(10)
              << st.audio_encoder.median() * 1e3 << "  (" << st.audio_encoder.median() * 1e3 / 0.48
              << " ms per second of audio)\n"
              << "  ReferenceNet motion per clip   " << std::setw(10)
              << st.motion_encode.median() * 1e3 << "\n"
              << "  denoising step per clip        " << std::setw(10)
              << st.denoise_step.median() * 1e3 << "\n"
              << "  VAE decode per frame           " << std::setw(10)
              << st.vae_decode.median() * 1e3 << "\n";
    std::cout << frames << " frames in " << wall << " s: " << fps << " frames/s, real-time factor "
              << std::setprecision(3) << fps / model::kVideoFps << "\n"
              << std::setprecision(1) << "denoising step " << step_flop / 1e9 << " GFLOP, "
              << step_gflops << " GFLOP/s = " << 100 * step_gflops / matmul << " % of matmul ("
              << matmul << " GFLOP/s)\n"
              << "peak RSS " << peak_rss_kib() / 1024 << " MiB\n";
    if (gpu_peak.allocated >= 0)
        std::cout << "peak GPU memory " << gpu_peak.allocated / 1048576.0 << " MiB in tensors, "
                  << gpu_peak.reserved / 1048576.0 << " MiB reserved by the allocator\n";
    const auto profile =
        a.profile_rows > 0 ? profile_denoiser(m, settings, a.profile_rows) : nlohmann::json();
    const auto against_cpu = a.compare_cpu ? compare_with_cpu(a.bench, m) : nlohmann::json();
    if (!a.bench.json_out.empty()) {
        nlohmann::json j;
        j["machine"] = machine_json();
        j["config"] = bench_config_json(a.bench, *m);
        j["config"]["channels_last"] = m->options().channels_last;
        j["config"]["motion_cache"] = motion_cache_name(m->options());
        j["config"]["overlap_decode"] = a.overlap_decode;
        j["config"]["switches"] = loopy_switches();
        j["median_ms"] = {{"reference", st.reference_encode.median() * 1e3},
                          {"audio_encoder_per_clip", st.audio_encoder.median() * 1e3},
                          {"motion_reference_net_per_clip", st.motion_encode.median() * 1e3},
                          {"denoise_step", st.denoise_step.median() * 1e3},
                          {"vae_decode_per_frame", st.vae_decode.median() * 1e3}};
        j["frames"] = frames;
        j["frames_per_second"] = fps;
        j["real_time_factor"] = fps / model::kVideoFps;
        j["denoise_step_gflop"] = step_flop / 1e9;
        j["denoise_step_gflops"] = step_gflops;
        j["matmul_gflops"] = matmul;
        j["peak_rss_mib"] = peak_rss_kib() / 1024.0;
        if (gpu_peak.allocated >= 0) {
            j["peak_gpu_allocated_mib"] = gpu_peak.allocated / 1048576.0;
            j["peak_gpu_reserved_mib"] = gpu_peak.reserved / 1048576.0;
        }
        if (!profile.is_null()) j["denoiser_profile_per_step"] = profile;
        if (!against_cpu.is_null()) j["first_clip_vs_cpu_float32"] = against_cpu;
        std::ofstream(a.bench.json_out) << j.dump(2) << "\n";
    }
    return 0;
}

}  // namespace

Runner add_bench_render_command(CLI::App& bench) {
    auto a = std::make_shared<BenchRenderArgs>();
    CLI::App* cmd = bench.add_subcommand("render", "Time the generation pipeline stage by stage");
    add_bench_model_options(*cmd, a->bench);
    cmd->add_option("--seconds", a->seconds, "Seconds of synthetic audio")->capture_default_str();
    cmd->add_option("--dtype", a->bench.model.dtype, "float32, float16, bfloat16")
        ->capture_default_str();
    cmd->add_flag("--channels-last", a->bench.model.channels_last,
                  "Convolution weights (and so activations) in NHWC order");
    add_motion_cache_option(*cmd, a->bench.model);
    cmd->add_option("--profile", a->profile_rows,
                    "Also print the denoiser's N most expensive operators per step (time, calls, "
                    "and the GFLOP/s of the matrix products among them)");
    cmd->add_flag("--overlap-decode", a->overlap_decode,
                  "Decode each clip on a thread of its own while the next one is denoised, as "
                  "bench live --overlap-decode does (frames/s then counts both together)");
    cmd->add_flag("--compare-cpu", a->compare_cpu,
                  "Also render the first clip on the CPU in float32 and print the difference "
                  "(small models: the CPU runs the whole clip)");
    return [a]() { return run_bench_render(*a); };
}

}  // namespace loopy::cli
