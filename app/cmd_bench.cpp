// `loopy bench modules`: parameter count, forward time, GFLOP per forward and achieved GFLOP/s of
// each building block, on the goldens' tiny configurations and on full-size SD 1.5 shapes.
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "app/bench_inputs.h"
#include "app/commands.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/flop_counter.h"
#include "core/system.h"
#include "model/autoencoder_kl.h"
#include "model/transformer_temporal.h"
#include "model/unet2d_condition.h"
#include "model/wav2vec2.h"

namespace loopy::cli {
namespace {

struct BenchArgs {
    std::string goldens = LOOPY_DEFAULT_GOLDENS;
    std::string device = "cpu";
    int repeat = 5;
    bool sd15 = true;
    std::string json_out;
};

struct Row {
    std::string network, config;
    int64_t parameters = 0;
    double seconds = 0, gflop = 0;
};

int64_t count_parameters(const torch::nn::Module& m) {
    int64_t n = 0;
    for (const auto& p : m.parameters())
        n += p.numel();
    return n;
}

nlohmann::json golden_config(const std::string& dir, const std::string& file) {
    Metadata meta;
    const std::string path = dir + "/" + file;
    if (!std::filesystem::exists(path))
        throw Error("bench: " + path + " not found (give --goldens DIR)");
    load_safetensors(path, &meta);
    return nlohmann::json::parse(meta.at("config"));
}

Row measure(const std::string& network, const std::string& config, torch::nn::Module& module,
            int repeat, const std::function<void()>& forward) {
    Row row{network, config, count_parameters(module)};
    {
        FlopCounter counter;
        forward();
        row.gflop = counter.flops() / 1e9;
    }
    row.seconds = median_seconds(1, repeat, forward);
    return row;
}

std::vector<Row> run_benchmarks(const BenchArgs& a, const torch::Device& dev) {
    torch::InferenceMode inference;
    std::vector<Row> rows;
    const auto opts = torch::TensorOptions().device(dev);
    {
        model::AutoencoderKL vae(model::AutoencoderKLConfig::from_json(
            golden_config(a.goldens, "autoencoder_kl.safetensors")));
        vae->to(dev);
        const auto img = torch::randn({1, 3, 16, 16}, opts);
        const auto lat = torch::randn({1, 4, 8, 8}, opts);
        rows.push_back(measure("AutoencoderKL encode+decode", "golden tiny 16x16", *vae, a.repeat,
                               [&] { vae->decode(vae->encode(img).mean); }));
    }
    {
        auto cfg = model::UNet2DConditionConfig::parse(
            golden_config(a.goldens, "unet2d_condition.safetensors"));
        model::UNet2DConditionModel unet(cfg);
        unet->to(dev);
        const auto x = torch::randn({2, 4, 8, 8}, opts);
        const auto t = torch::full({2}, 500, opts.dtype(torch::kLong));
        const auto ctx = torch::randn({2, 5, cfg.cross_attention_dim}, opts);
        rows.push_back(measure("UNet2DConditionModel", "golden tiny 8x8 b2", *unet, a.repeat,
                               [&] { unet->forward(x, t, ctx); }));
    }
    {
        const auto cfg = golden_config(a.goldens, "transformer_temporal.safetensors");
        model::TransformerTemporalModel tt(model::transformer_temporal_options(cfg));
        tt->to(dev);
        const int64_t frames = cfg.at("num_frames").get<int64_t>();
        const auto x = torch::randn({2 * frames, cfg.at("in_channels").get<int64_t>(), 4, 4}, opts);
        rows.push_back(measure("TransformerTemporalModel", "golden tiny", *tt, a.repeat,
                               [&] { tt->forward(x, frames); }));
    }
    {
        model::Wav2Vec2Model w2v(
            model::Wav2Vec2Config::from_json(golden_config(a.goldens, "wav2vec2.safetensors")));
        w2v->to(dev);
        const auto wave = torch::randn({1, 16000}, opts);
        rows.push_back(measure("Wav2Vec2Model", "golden tiny, 1 s audio", *w2v, a.repeat,
                               [&] { w2v->forward(wave); }));
    }
    if (a.sd15) {
        model::Wav2Vec2Model w2v(model::Wav2Vec2Config::base());
        w2v->to(dev);
        const auto wave = torch::randn({1, 16000}, opts);
        rows.push_back(measure("Wav2Vec2Model", "wav2vec2-base, 1 s audio", *w2v,
                               std::min(a.repeat, 3), [&] { w2v->forward(wave); }));
    }
    if (a.sd15) {
        model::UNet2DConditionModel unet(model::UNet2DConditionConfig{});
        unet->to(dev);
        const auto x = torch::randn({1, 4, 64, 64}, opts);
        const auto t = torch::full({1}, 500, opts.dtype(torch::kLong));
        const auto ctx = torch::randn({1, 77, 768}, opts);
        rows.push_back(measure("UNet2DConditionModel", "SD 1.5, 64x64 latent, b1", *unet,
                               std::min(a.repeat, 3), [&] { unet->forward(x, t, ctx); }));
    }
    return rows;
}

void print(const std::vector<Row>& rows, double matmul_gflops) {
    std::cout << std::left << std::setw(30) << "network" << std::setw(28) << "config" << std::right
              << std::setw(14) << "parameters" << std::setw(12) << "ms/fwd" << std::setw(12)
              << "GFLOP/fwd" << std::setw(10) << "GFLOP/s"
              << "\n";
    for (const Row& r : rows)
        std::cout << std::left << std::setw(30) << r.network << std::setw(28) << r.config
                  << std::right << std::setw(14) << r.parameters << std::setw(12) << std::fixed
                  << std::setprecision(2) << r.seconds * 1e3 << std::setw(12)
                  << std::setprecision(4) << r.gflop << std::setw(10) << std::setprecision(1)
                  << r.gflop / r.seconds << "\n";
    std::cout << "matmul 2048^2 float32: " << std::setprecision(1) << matmul_gflops << " GFLOP/s ("
              << system_info().threads << " threads)\n";
}

void write_json(const std::string& path, const std::vector<Row>& rows, double matmul_gflops) {
    nlohmann::json j;
    j["machine"] = machine_json();
    j["matmul_gflops"] = matmul_gflops;
    for (const Row& r : rows)
        j["modules"].push_back({{"network", r.network},
                                {"config", r.config},
                                {"parameters", r.parameters},
                                {"seconds", r.seconds},
                                {"gflop", r.gflop},
                                {"gflops", r.gflop / r.seconds}});
    std::ofstream(path) << j.dump(2) << "\n";
}

}  // namespace

Runner add_bench_command(CLI::App& app) {
    auto args = std::make_shared<BenchArgs>();
    CLI::App* bench = app.add_subcommand("bench", "Benchmarks (print figures; never pass/fail)");
    bench->require_subcommand(1);
    CLI::App* modules = bench->add_subcommand("modules", "Time each building-block network");
    modules->add_option("--goldens", args->goldens, "Folder with the reference configs");
    modules->add_option("--device", args->device, "cpu or cuda")
        ->check(CLI::IsMember({"cpu", "cuda"}));
    modules->add_option("--repeat", args->repeat, "Timed runs per network (median)")
        ->check(CLI::PositiveNumber);
    modules->add_flag("!--no-sd15", args->sd15, "Skip the full-size SD 1.5 / wav2vec2-base rows");
    modules->add_option("--json", args->json_out, "Also write the figures as JSON");
    Runner render = add_bench_render_command(*bench);
#ifdef LOOPY_ENGINE_ONLY
    Runner live;
#else
    Runner live = add_bench_live_command(*bench);
#endif
    return [args, render, live, bench]() {
        if (bench->got_subcommand("render")) return render();
        if (bench->got_subcommand("live")) return live();
        if (args->device == "cuda" && !torch::cuda::is_available())
            throw Error("bench: --device cuda but this LibTorch has no CUDA device");
        const torch::Device dev(args->device == "cuda" ? torch::kCUDA : torch::kCPU);
        const auto rows = run_benchmarks(*args, dev);
        const double mm = measure_matmul_gflops();
        print(rows, mm);
        if (!args->json_out.empty()) write_json(args->json_out, rows, mm);
        return 0;
    };
}

}  // namespace loopy::cli
