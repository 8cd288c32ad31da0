// `loopy train`: the two diffusion stages (model/training.h), on the CPU or a CUDA device, in one
// process or several. This file parses options, loads the data, shows progress and writes the
// files; see docs/training.md. Engine-only builds (no FFmpeg) train from a data cache alone.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <tuple>

#include "app/commands.h"
#include "app/progress_bar.h"
#include "app/train_common.h"
#include "core/engine.h"
#include "core/error.h"
#include "core/log.h"
#include "core/system.h"
#include "model/distributed.h"
#include "model/loopy_model.h"
#include "model/training.h"
#ifdef LOOPY_ENGINE_ONLY
#include "render/train_dataset.h"
#else
#include "render/train_data.h"
#endif

namespace loopy::cli {
namespace {

namespace fs = std::filesystem;

// --- train ---

struct TrainArgs {
    std::string data, out, init, config, reuse_from;
    int stage = 2;
    int64_t steps = 1000, batch = 1, checkpoint_every = 500, warmup = 0;
    double lr = 1e-5, weight_decay = 1e-2, max_grad_norm = 1.0, ema = 0.0, mouth_weight = 1.0;
    model::MaskProbabilities drop;  // the method's condition-mask probabilities by default
    uint64_t seed = 0;
    bool resume = false, v_prediction = false, fast = false, freeze_audio_encoder = false;
    bool train_image_layers = false;
    int threads = 0;
    std::string backend = "gloo";
    double dist_timeout = 300;
    std::string device = "cpu", save_data;
    bool bf16 = false;
};

// A process group when torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) say this
// is one of several processes; null for a single process.
std::shared_ptr<model::ProcessGroup> join_process_group(const TrainArgs& a) {
    auto options = model::distributed_options_from_environment();
    if (!options.distributed()) return nullptr;
    options.backend = a.backend;
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(a.dist_timeout * 1000));
    return std::make_shared<model::ProcessGroup>(options);
}

model::TrainerOptions trainer_options(const TrainArgs& a) {
    model::TrainerOptions o;
    o.stage = model::parse_train_stage(a.stage);
    o.lr = a.lr;
    o.warmup_steps = a.warmup;
    o.adamw.weight_decay = a.weight_decay;
    o.max_grad_norm = a.max_grad_norm;
    o.ema_decay = a.ema;
    o.v_prediction = a.v_prediction;
    o.freeze_audio_encoder = a.freeze_audio_encoder;
    o.train_image_layers = a.train_image_layers;
    o.masks = a.drop;
    if (o.train_image_layers && o.stage != model::TrainStage::Video)
        throw Error("--train-image-layers is for stage 2 (stage 1 trains them anyway)");
    o.seed = a.seed;
    o.reproducible = !a.fast;
    o.device = parse_device(a.device);  // the engine's check, as `render --device` uses
    o.autocast_bf16 = a.bf16;
    return o;
}

// Other condition-mask probabilities than the method's are for experiments: say so in the log.
void warn_if_masks_differ(const model::MaskProbabilities& p) {
    const model::MaskProbabilities method;
    std::ostringstream changes;
    const auto add = [&](const char* name, double value, double method_value) {
        if (value == method_value) return;
        if (changes.tellp() > 0) changes << ", ";
        changes << name << ' ' << value << " (the method's " << method_value << ')';
    };
    add("audio", p.audio, method.audio);
    add("reference", p.reference, method.reference);
    add("motion", p.motion, method.motion);
    if (changes.tellp() > 0)
        logger()->warn("condition masks differ from the method's: drop {}", changes.str());
}

// --data as a cache file, or (full builds) a folder of clips read and encoded here, with
// progress on the main rank.
render::TrainDataset load_training_data(const TrainArgs& a, model::LoopyModelImpl& net,
                                        const render::TrainDataOptions& options, bool main_rank) {
    if (!fs::is_directory(a.data))
        return render::TrainDataset::load_cache(a.data, net.config, *net.vae, options);
#ifdef LOOPY_ENGINE_ONLY
    (void)main_rank;
    throw Error("--data " + a.data +
                ": this build (engine only, no FFmpeg) reads training data from a cache file "
                "alone; write one with a full build's `loopy train --save-data FILE`");
#else
    std::optional<ProgressBar> load_bar;
    if (main_rank) load_bar.emplace("data");
    render::TrainDataset data(
        a.data, net.config, *net.vae, options, [&](int64_t done, int64_t total) {
            if (load_bar) load_bar->update(static_cast<double>(done) / total, "encoding clips");
        });
    if (load_bar) load_bar->finish();
    return data;
#endif
}

// Distributed: every rank runs this with its own --batch items of each step's global batch;
// rank 0 alone checks and writes --out and shows progress.
int run_train(const TrainArgs& a) {
    if (a.threads > 0) set_num_threads(a.threads);
    if (!a.reuse_from.empty() && a.config.empty())
        throw Error(
            "--reuse-from goes with --config (a fresh network); --init already starts "
            "from a whole checkpoint");
    if (a.steps == 0 && a.save_data.empty())
        throw Error("--steps 0 trains nothing: it only writes the data cache of --save-data");
    const auto model_path = (fs::path(a.out) / model::kTrainModelFile).string();
    const auto state_path = (fs::path(a.out) / model::kTrainStateFile).string();
    auto group = join_process_group(a);
    const bool main_rank = !group || group->is_main();
    if (main_rank && !a.resume && fs::exists(state_path))
        throw Error(a.out + " already holds a training run: pass --resume to continue it");
    if (main_rank && a.resume && !fs::exists(state_path)) throw Error("--resume: no " + state_path);
    // Every rank builds the network (a resumed run's config is read from --out); the trainer
    // then gives all of them rank 0's weights.
    auto net = a.resume ? model::LoopyModel(model::read_loopy_config(model_path))
                        : initial_model(a.init, a.config, a.seed);
    if (!a.resume && !a.reuse_from.empty()) model::reuse_pretrained_parts(*net, a.reuse_from);
    // The demo model predicts v: a fine-tune without --v-prediction would retrain it to the noise.
    const std::string target = a.v_prediction ? "v_prediction" : "epsilon";
    if (main_rank && !a.resume && !a.init.empty() && net->prediction_type != target)
        logger()->warn("{} predicts {}; this run retrains it to predict {} ({} to keep {})", a.init,
                       net->prediction_type, target,
                       a.v_prediction ? "drop --v-prediction" : "add --v-prediction",
                       net->prediction_type);
    auto options = trainer_options(a);
    options.distributed = group;
    // Several processes on one machine: `--device cuda` gives each its own GPU (LOCAL_RANK).
    if (group && options.device.is_cuda() && !options.device.has_index())
        options.device = torch::Device(torch::kCUDA, group->options().local_rank);
    model::Trainer trainer(net, options);
    if (main_rank) warn_if_masks_differ(trainer.options().masks);
    // A resumed run's own model holds what its --init (or --reuse-from) had.
    const std::string unchanged_source =
        a.resume ? model_path : (a.init.empty() ? a.reuse_from : a.init);
    if (main_rank && !unchanged_source.empty()) trainer.keep_unchanged_parts(unchanged_source);
    const int64_t global_batch = a.batch * trainer.world_size();
    int64_t samples = a.resume ? trainer.resume(a.out) : 0;
    if (samples != trainer.steps_done() * global_batch)
        throw Error("--resume: the run used another --batch or number of processes");

    render::TrainDataOptions data_options;
    data_options.frames = a.stage == 1 ? 1 : net->config.num_frames;
    data_options.seed = a.seed;
    data_options.mouth_loss_weight = a.mouth_weight;
    data_options.audio =
        model::audio_feature_options(net->config, trainer.options().audio_context_seconds);
    const auto data = load_training_data(a, *net, data_options, main_rank);
    if (!a.save_data.empty() && main_rank) {
        data.save_cache(a.save_data, *net->vae);
        std::cout << "wrote the training data cache " << a.save_data << " (" << data.clip_count()
                  << " clips)\n";
        if (a.steps == 0) return 0;
    }

    std::optional<model::LossLog> log;
    std::optional<ProgressBar> bar;
    if (main_rank) {
        fs::create_directories(a.out);
        log.emplace((fs::path(a.out) / model::kTrainLossFile).string(), trainer.steps_done());
        bar.emplace("train stage " + std::to_string(a.stage));
    }
    const int64_t first_step = trainer.steps_done();
    const auto start = Clock::now();
    model::StepStats stats;
    while (trainer.steps_done() < a.steps) {
        const auto step_start = Clock::now();
        // Sample n of step s and rank r is n = s * world * B + r * B + i, as one process with
        // the global batch would take them.
        stats = trainer.step(data.batch(samples + trainer.rank() * a.batch, a.batch));
        samples += global_batch;
        if (log) log->append(stats, seconds_since(step_start));
        if (stats.step % a.checkpoint_every == 0 || stats.step == a.steps)
            trainer.save(a.out, samples);  // rank 0 only
        const double per_step = seconds_since(start) / static_cast<double>(stats.step - first_step);
        if (bar)
            bar->update(static_cast<double>(stats.step) / a.steps,
                        "step " + std::to_string(stats.step) + "/" + std::to_string(a.steps),
                        progress_detail(stats, per_step, a.steps - stats.step));
    }
    if (!main_rank) return 0;
    bar->finish();
    const int64_t done = trainer.steps_done() - first_step;
    char line[160];
    std::snprintf(line, sizeof line, "%lld steps in %.1f s (%.3f s/step), last loss %.5g",
                  static_cast<long long>(done), seconds_since(start),
                  done > 0 ? seconds_since(start) / done : 0.0, stats.loss);
    std::cout << "trained stage " << a.stage << " on " << data.clip_count() << " clips";
    if (group) std::cout << " with " << group->world_size() << " processes";
    std::cout << ": " << line << "; wrote " << model_path << "\n";
    return 0;
}

}  // namespace

Runner add_train_command(CLI::App& app) {
    auto a = std::make_shared<TrainArgs>();
    CLI::App* cmd = app.add_subcommand("train", "Train Loopy (stage 1: images, stage 2: video)");
    add_common(cmd, a->data, a->init, a->config, a->seed, a->threads, a->fast, true);
    cmd->add_option("-o,--out", a->out, "Run folder (model, training state, loss.csv)")->required();
    cmd->add_option("--reuse-from", a->reuse_from,
                    "With --config: start with this checkpoint's VAE (and preview decoder) and "
                    "audio encoder, trained beforehand, so a network of another U-Net size trains "
                    "only its denoiser")
        ->check(CLI::ExistingFile);
    cmd->add_option("--stage", a->stage, "1: image level, 2: video and audio")
        ->check(CLI::IsMember({1, 2}))
        ->capture_default_str();
    cmd->add_option("--steps", a->steps,
                    "Total optimiser steps (0 with --save-data: only write the data cache)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--batch", a->batch,
                    "Clips per step and process (distributed: the global batch is --batch times "
                    "WORLD_SIZE)")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_option("--lr", a->lr, "AdamW learning rate")->capture_default_str();
    cmd->add_option("--warmup", a->warmup, "Linear learning-rate warm-up steps")
        ->capture_default_str();
    cmd->add_option("--weight-decay", a->weight_decay, "AdamW weight decay")->capture_default_str();
    cmd->add_option("--max-grad-norm", a->max_grad_norm, "Gradient clipping (0: none)")
        ->capture_default_str();
    cmd->add_option("--ema", a->ema, "EMA decay, e.g. 0.999 (0: no EMA)")
        ->check(CLI::Range(0.0, 0.999999))
        ->capture_default_str();
    cmd->add_option("--checkpoint-every", a->checkpoint_every, "Save every N steps")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_flag("--resume", a->resume, "Continue the run in --out bit for bit");
    cmd->add_flag("--v-prediction", a->v_prediction, "Predict v instead of the noise");
    cmd->add_flag("--freeze-audio-encoder", a->freeze_audio_encoder,
                  "Stage 2: keep the audio encoder of --init as it is (e.g. pretrained with "
                  "loopy train-audio)");
    cmd->add_flag("--train-image-layers", a->train_image_layers,
                  "Stage 2: also fine-tune the denoising U-Net's image layers (the reference net "
                  "stays as it is)");
    cmd->add_option("--mouth-weight", a->mouth_weight,
                    "Weigh the loss on each frame's mouth box (from truth.json) this many times "
                    "more (1: plain mean)")
        ->check(CLI::Range(1.0, 1000.0))
        ->capture_default_str();
    // Condition-mask probabilities: the method's by default; other values are for experiments.
    for (auto [name, p, what] :
         {std::tuple{"--drop-audio", &a->drop.audio, "the audio (and the motion latent)"},
          std::tuple{"--drop-reference", &a->drop.reference,
                     "the reference, and with it the motion frames"},
          std::tuple{"--drop-motion", &a->drop.motion,
                     "the motion frames (independently of the reference)"}})
        cmd->add_option(name, *p, std::string("Per item, the probability of dropping ") + what)
            ->check(CLI::Range(0.0, 1.0))
            ->capture_default_str();
    cmd->add_option("--device", a->device,
                    "Where to train: cpu, cuda or cuda:N (random draws stay on the CPU, so a run "
                    "draws the same on any device)")
        ->capture_default_str();
    cmd->add_flag("--bf16", a->bf16,
                  "CUDA: the forward pass under bfloat16 autocast (weights and optimiser stay "
                  "float32)");
    cmd->add_option("--save-data", a->save_data,
                    "Also write the encoded training data to this cache file (safetensors), which "
                    "--data accepts instead of the folder: no re-encoding, and no FFmpeg needed");
    cmd->add_option("--backend", a->backend,
                    "Distributed training (with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set "
                    "as torchrun sets them): gloo (CPU) or nccl (CUDA builds with NCCL)")
        ->check(CLI::IsMember({"gloo", "nccl"}))
        ->capture_default_str();
    cmd->add_option("--dist-timeout", a->dist_timeout,
                    "Distributed: seconds to wait for the other processes before giving up")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    return [a]() { return run_train(*a); };
}

}  // namespace loopy::cli
