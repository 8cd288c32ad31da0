// `loopy train-vae` (the VAE and its preview decoder, trained first) and `loopy train-audio` (the
// audio encoder's pretraining). The logic lives in model/vae_training.h,
// model/audio_pretraining.h and render/train_data.h; this file parses options, shows progress and
// writes the files. See docs/training.md.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "app/commands.h"
#include "app/progress_bar.h"
#include "app/train_common.h"
#include "core/error.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "core/system.h"
#include "model/audio_pretraining.h"
#include "model/guidance.h"
#include "model/loopy_model.h"
#include "model/pixels.h"
#include "model/preview_decoder.h"
#include "model/vae_training.h"
#include "render/train_data.h"

namespace loopy::cli {
namespace {

namespace fs = std::filesystem;

// The loop of the single-process trainers (train-vae, its --preview, train-audio): `step()`
// until `steps` are done, `save(step)` every `checkpoint_every` steps and after the last one, a
// progress bar with ETA. Returns the last step's figures.
template <typename Step, typename Save>
model::StepStats run_steps(const std::string& name, int64_t steps, int64_t checkpoint_every,
                           Step&& step, Save&& save) {
    ProgressBar bar(name);
    const auto start = Clock::now();
    model::StepStats stats;
    while (stats.step < steps) {
        stats = step();
        if (stats.step % checkpoint_every == 0 || stats.step == steps) save(stats.step);
        const double per_step = seconds_since(start) / static_cast<double>(stats.step);
        bar.update(static_cast<double>(stats.step) / steps,
                   "step " + std::to_string(stats.step) + "/" + std::to_string(steps),
                   progress_detail(stats, per_step, steps - stats.step));
    }
    bar.finish();
    return stats;
}

// --- train-vae ---

struct TrainVaeArgs {
    std::string data, out, init, config, eval_data;
    int64_t steps = 2000, batch = 8, checkpoint_every = 500, pool = 1024;
    double lr = 0, kl_weight = 1e-6, mouth_weight = 1.0;  // lr 0: the mode's default
    uint64_t seed = 0;
    bool force = false, fast = false, preview = false, decoder_only = false;
    int threads = 0;
};

uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Images [n, 3, S, S] in [-1, 1]: frame picks are a function of (seed, sample index).
struct VaeBatch {
    torch::Tensor images;   // [N, 3, S, S] in [-1, 1]
    torch::Tensor weights;  // [N, 1, S, S] mouth-weighted; undefined for a weight of 1
};

// N frames of `clips` picked by (seed, first + i).
VaeBatch vae_batch(const std::vector<render::TrainClip>& clips, uint64_t seed, int64_t first,
                   int64_t n, double mouth_weight = 1.0) {
    std::vector<torch::Tensor> images, weights;
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t r = mix(seed ^ mix(static_cast<uint64_t>(first + i) + 1));
        const auto& clip = clips[r % clips.size()];
        const auto frame = static_cast<int64_t>(mix(r) % static_cast<uint64_t>(clip.frame_count()));
        images.push_back(clip.frames[frame]);
        if (mouth_weight != 1.0)
            weights.push_back(
                render::mouth_weight_map(clip, frame, 1, clip.frames.size(3), mouth_weight));
    }
    VaeBatch batch;
    batch.images = model::from_rgb8(torch::stack(images));
    if (!weights.empty()) batch.weights = torch::cat(weights);
    return batch;
}

// Sets the VAE's scaling factor (config and module) so that the diffusion stages see
// unit-variance latents, from 256 frames of the training clips.
void calibrate_latent_scale(model::LoopyModelImpl& net, const std::vector<render::TrainClip>& clips,
                            uint64_t seed) {
    const auto images = vae_batch(clips, seed ^ 0x5CA1Eull, 0, 256).images;
    const double factor = model::latent_scaling_factor(*net.vae, images);
    logger()->info("VAE latent scale: std {:.4g}, scaling_factor {:.6g} (was {:.6g})", 1.0 / factor,
                   factor, net.vae->config.scaling_factor);
    net.vae->config.scaling_factor = factor;
    net.config.vae["scaling_factor"] = factor;
}

std::vector<render::TrainClip> read_clips(const std::string& dir, int64_t resolution) {
    std::vector<render::TrainClip> clips;
    ProgressBar load_bar("data");
    const auto folders = render::find_train_clips(dir);
    for (const auto& folder : folders) {
        clips.push_back(render::read_train_clip(folder, resolution));
        load_bar.update(static_cast<double>(clips.size()) / folders.size(), "reading clips");
    }
    load_bar.finish();
    return clips;
}

int run_distill_preview(const TrainVaeArgs& a);

// What train-vae writes beside the tensors. --decoder-only leaves the encoder, so the latents and
// the denoiser trained on them, as they were: the guidance ratios chosen for that denoiser
// (loopy.guidance) still hold, so they are kept.
Metadata vae_metadata(const TrainVaeArgs& a) {
    Metadata meta = {{"loopy.train.vae_steps", std::to_string(a.steps)}};
    if (!a.decoder_only || a.init.empty()) return meta;
    const auto guidance =
        model::recommended_guidance(safetensors::File::open(a.init).header.metadata, a.init);
    if (guidance) meta.merge(model::guidance_metadata(*guidance));
    return meta;
}

int run_train_vae(const TrainVaeArgs& a) {
    if (!(a.mouth_weight >= 1.0)) throw Error("--mouth-weight must be >= 1");
    if (a.preview) return run_distill_preview(a);
    if (a.threads > 0) set_num_threads(a.threads);
    if (fs::exists(a.out) && !a.force) throw Error(a.out + " exists (pass --force to replace it)");
    auto net = initial_model(a.init, a.config, a.seed);
    const auto clips = read_clips(a.data, net->config.resolution);

    model::VaeTrainerOptions o;
    o.lr = a.lr > 0 ? a.lr : 1e-4;
    o.loss.kl_weight = a.kl_weight;
    o.seed = a.seed;
    o.reproducible = !a.fast;
    o.decoder_only = a.decoder_only;
    model::VaeTrainer trainer(net->vae, o);
    const auto start = Clock::now();
    const Metadata meta = vae_metadata(a);
    const auto stats = run_steps(
        "train-vae", a.steps, a.checkpoint_every,
        [&] {
            const auto batch =
                vae_batch(clips, a.seed, trainer.steps_done() * a.batch, a.batch, a.mouth_weight);
            return trainer.step(batch.images, batch.weights);
        },
        [&](int64_t) { model::save_loopy_checkpoint(a.out, *net, meta); });
    // The encoder, so the latents' spread, is unchanged by --decoder-only: recalibrating would
    // only re-estimate it from other frames and shift the scale the diffusion stages learned.
    if (!a.decoder_only) calibrate_latent_scale(*net, clips, a.seed);
    model::save_loopy_checkpoint(a.out, *net, meta);
    const double seconds = seconds_since(start);
    const double train_psnr =
        model::reconstruction_psnr(*net->vae, vae_batch(clips, a.seed ^ 0x5CA1Eull, 0, 256).images);
    const double held_out_psnr =
        a.eval_data.empty()
            ? 0.0
            : model::reconstruction_psnr(*net->vae,
                                         vae_batch(read_clips(a.eval_data, net->config.resolution),
                                                   a.seed ^ 0xE7A1ull, 0, 256)
                                             .images);
    std::printf(
        "trained the VAE %lld steps in %.1f s, last loss %.5g; reconstruction PSNR %.2f dB "
        "(256 training frames)",
        static_cast<long long>(a.steps), seconds, stats.loss, train_psnr);
    if (!a.eval_data.empty()) std::printf(", %.2f dB (256 held-out frames)", held_out_psnr);
    std::printf("; wrote %s\n", a.out.c_str());
    return 0;
}

// --- train-vae --preview ---

// The full decoder's output for `n` frames of `clips` (picked by seed), in chunks with progress,
// with each frame's mouth box weighted `mouth_weight` times.
model::PreviewTargets teacher_targets(model::AutoencoderKLImpl& vae,
                                      const std::vector<render::TrainClip>& clips, uint64_t seed,
                                      int64_t n, const std::string& what,
                                      double mouth_weight = 1.0) {
    ProgressBar bar(what);
    std::vector<torch::Tensor> latents, images, weights;
    constexpr int64_t kChunk = 64;
    for (int64_t i = 0; i < n; i += kChunk) {
        const auto frames = vae_batch(clips, seed, i, std::min(kChunk, n - i), mouth_weight);
        const auto t = model::preview_targets(vae, frames.images);
        latents.push_back(t.latents);
        images.push_back(t.images);
        if (frames.weights.defined()) weights.push_back(frames.weights);
        bar.update(static_cast<double>(std::min(i + kChunk, n)) / n, "full VAE decoder");
    }
    bar.finish();
    model::PreviewTargets targets{torch::cat(latents), torch::cat(images), {}};
    if (!weights.empty()) targets.weights = torch::cat(weights);
    return targets;
}

// Samples first .. first + n - 1 of the pool, picked by (seed, sample).
model::PreviewTargets pool_batch(const model::PreviewTargets& pool, uint64_t seed, int64_t first,
                                 int64_t n) {
    std::vector<int64_t> picks;
    for (int64_t i = 0; i < n; ++i)
        picks.push_back(static_cast<int64_t>(mix(seed ^ mix(static_cast<uint64_t>(first + i) + 1)) %
                                             static_cast<uint64_t>(pool.latents.size(0))));
    const auto index = torch::tensor(picks, torch::kLong);
    return {pool.latents.index_select(0, index), pool.images.index_select(0, index),
            pool.weights.defined() ? pool.weights.index_select(0, index) : torch::Tensor()};
}

// The init checkpoint's metadata (its training record) plus the preview decoder's.
void save_with_preview(const TrainVaeArgs& a, model::LoopyModelImpl& net,
                       model::PreviewDecoderImpl& preview, int64_t steps) {
    auto meta = model::preview_decoder_metadata(preview);
    meta["loopy.train.preview_steps"] = std::to_string(steps);
    for (const auto& [key, value] : safetensors::File::open(a.init).header.metadata)
        meta.insert({key, value});
    model::save_loopy_checkpoint(a.out, net, meta, model::preview_decoder_tensors(preview));
}

// Freezes the VAE of --init and distils the preview decoder from its decoder (docs/training.md).
int run_distill_preview(const TrainVaeArgs& a) {
    if (a.threads > 0) set_num_threads(a.threads);
    if (a.init.empty() || !a.config.empty())
        throw Error("--preview distils the decoder of a trained VAE: give --init <checkpoint>");
    if (fs::exists(a.out) && !a.force) throw Error(a.out + " exists (pass --force to replace it)");
    auto net = model::load_loopy_checkpoint(a.init);
    auto& vae = *net->vae;
    const auto pool = teacher_targets(vae, read_clips(a.data, net->config.resolution), a.seed,
                                      a.pool, "teacher", a.mouth_weight);
    model::PreviewTargets held_out;
    if (!a.eval_data.empty())
        held_out = teacher_targets(vae, read_clips(a.eval_data, net->config.resolution),
                                   a.seed ^ 0xE7A1ull, 256, "held-out");

    torch::manual_seed(a.seed);
    model::PreviewDecoder preview(model::preview_decoder_options(net->config));
    model::PreviewDistillerOptions o;
    if (a.lr > 0) o.lr = a.lr;
    o.total_steps = a.steps;
    o.reproducible = !a.fast;
    model::PreviewDistiller distiller(preview, o);
    const auto start = Clock::now();
    const auto stats = run_steps(
        "train-vae --preview", a.steps, a.checkpoint_every,
        [&] {
            return distiller.step(
                pool_batch(pool, a.seed, distiller.steps_done() * a.batch, a.batch));
        },
        [&](int64_t step) { save_with_preview(a, *net, *preview, step); });
    if (a.steps == 0) save_with_preview(a, *net, *preview, 0);
    std::printf(
        "distilled the preview decoder %lld steps in %.1f s, last loss %.5g; PSNR vs the "
        "full decoder %.2f dB (training frames)",
        static_cast<long long>(a.steps), seconds_since(start), stats.loss,
        model::preview_psnr(*preview, pool));
    if (held_out.latents.defined())
        std::printf(", %.2f dB (%lld held-out frames)", model::preview_psnr(*preview, held_out),
                    static_cast<long long>(held_out.latents.size(0)));
    std::printf("; wrote %s\n", a.out.c_str());
    return 0;
}

// --- train-audio ---

struct TrainAudioArgs {
    std::string data, out, init, config, eval_data;
    int64_t steps = 1000, batch = 8, checkpoint_every = 500;
    double lr = model::AudioPretrainerOptions{}.lr;
    uint64_t seed = 0;
    bool force = false, fast = false;
    int threads = 0;
};

// Correlation of the predicted and true mouth opening over every whole 12-frame window of
// `clips` (at most 16 clips).
double mouth_correlation(model::AudioPretrainer& trainer,
                         const std::vector<render::TrainClip>& clips,
                         const model::LoopyConfig& config) {
    const int64_t f = config.num_frames;
    const auto audio = model::audio_feature_options(config);
    std::vector<torch::Tensor> predicted, truth;
    for (size_t c = 0; c < std::min<size_t>(clips.size(), 16); ++c) {
        const auto track = render::mouth_opening_track(clips[c]);
        for (int64_t first = 0; first + f <= clips[c].frame_count(); first += f) {
            const auto plan =
                model::plan_audio_window(config.audio_encoder_config(), audio, first, f);
            predicted.push_back(trainer.predict({render::clip_window_samples(clips[c], plan)}, f));
            truth.push_back(track.narrow(0, first, f));
        }
    }
    return model::pearson_correlation(torch::cat(predicted, 1), torch::cat(truth));
}

int run_train_audio(const TrainAudioArgs& a) {
    if (a.threads > 0) set_num_threads(a.threads);
    if (fs::exists(a.out) && !a.force) throw Error(a.out + " exists (pass --force to replace it)");
    auto net = initial_model(a.init, a.config, a.seed);
    const auto clips = read_clips(a.data, net->config.resolution);
    std::vector<render::TrainClip> held_out;
    if (!a.eval_data.empty()) held_out = read_clips(a.eval_data, net->config.resolution);

    model::AudioPretrainerOptions o;
    o.lr = a.lr;
    o.seed = a.seed;
    o.audio = model::audio_feature_options(net->config);
    o.reproducible = !a.fast;
    model::AudioPretrainer trainer(net, o);
    const auto start = Clock::now();
    const Metadata meta = {{"loopy.train.audio_pretrain_steps", std::to_string(a.steps)}};
    const auto stats = run_steps(
        "train-audio", a.steps, a.checkpoint_every,
        [&] {
            return trainer.step(
                render::audio_pretrain_batch(clips, net->config, o.audio, net->config.num_frames,
                                             a.seed, trainer.steps_done() * a.batch, a.batch));
        },
        [&](int64_t) { model::save_loopy_checkpoint(a.out, *net, meta); });
    if (a.steps == 0) model::save_loopy_checkpoint(a.out, *net, meta);
    std::printf(
        "trained the audio encoder %lld steps in %.1f s, last loss %.5g; mouth-opening r "
        "%.3f (training clips)",
        static_cast<long long>(a.steps), seconds_since(start), stats.loss,
        mouth_correlation(trainer, clips, net->config));
    if (!held_out.empty())
        std::printf(", %.3f (held-out clips)", mouth_correlation(trainer, held_out, net->config));
    std::printf("; wrote %s\n", a.out.c_str());
    return 0;
}

}  // namespace

Runner add_train_audio_command(CLI::App& app) {
    auto a = std::make_shared<TrainAudioArgs>();
    CLI::App* cmd = app.add_subcommand(
        "train-audio",
        "Pretrain the audio encoder to predict each frame's mouth opening (before stage 2)");
    add_common(cmd, a->data, a->init, a->config, a->seed, a->threads, a->fast);
    cmd->add_option("-o,--out", a->out, "Loopy checkpoint to write (--init with the new encoder)")
        ->required();
    cmd->add_option("--steps", a->steps, "Optimiser steps")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--batch", a->batch, "Windows of 12 frames per step")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_option("--lr", a->lr, "AdamW learning rate")->capture_default_str();
    cmd->add_option("--eval-data", a->eval_data,
                    "Clips (not trained on) to report the mouth-opening correlation on")
        ->check(CLI::ExistingDirectory);
    cmd->add_option("--checkpoint-every", a->checkpoint_every, "Save every N steps")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_flag("-f,--force", a->force, "Replace an existing --out");
    return [a]() { return run_train_audio(*a); };
}

Runner add_train_vae_command(CLI::App& app) {
    auto a = std::make_shared<TrainVaeArgs>();
    CLI::App* cmd = app.add_subcommand(
        "train-vae", "Train the VAE of a small config and write a Loopy checkpoint");
    add_common(cmd, a->data, a->init, a->config, a->seed, a->threads, a->fast);
    cmd->add_option("-o,--out", a->out, "Loopy checkpoint to write")->required();
    cmd->add_option("--steps", a->steps,
                    "Optimiser steps (0: only calibrate the latent scaling factor of --init)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--batch", a->batch, "Frames per step")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_option("--lr", a->lr, "AdamW learning rate (default 1e-4; with --preview 2e-3)");
    cmd->add_option("--kl", a->kl_weight, "KL weight")->capture_default_str();
    cmd->add_flag("--decoder-only", a->decoder_only,
                  "Fine-tune only the decoder on the posterior mode: the latents, and diffusion "
                  "models trained on them, stay valid");
    cmd->add_option("--mouth-weight", a->mouth_weight,
                    "Reconstruction weight inside each frame's mouth box (1: none)")
        ->capture_default_str();
    cmd->add_flag("--preview", a->preview,
                  "Distil the fast preview decoder from the VAE decoder of --init (kept frozen) "
                  "and write --init plus the preview decoder");
    cmd->add_option("--pool", a->pool,
                    "--preview: training frames decoded once by the full decoder and sampled "
                    "from")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_option("--eval-data", a->eval_data,
                    "Clips (not trained on) to report the PSNR on: the reconstruction's, or with "
                    "--preview the preview decoder's against the full decoder")
        ->check(CLI::ExistingDirectory);
    cmd->add_option("--checkpoint-every", a->checkpoint_every, "Save every N steps")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    cmd->add_flag("-f,--force", a->force, "Replace an existing --out");
    return [a]() { return run_train_vae(*a); };
}

}  // namespace loopy::cli
