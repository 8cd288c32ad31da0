// The clip loop of generation (core/engine.h): audio -> per-clip conditions -> DDIM with
// classifier-free guidance -> VAE decode -> frames, with the motion history carried across clips.
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "core/engine.h"
#include "core/error.h"
#include "core/log.h"
#include "model/guidance.h"
#include "model/pixels.h"

namespace loopy {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

// Adds the wall time of a scope to a stage. CUDA runs asynchronously: the timer waits for the
// GPU at both ends, or a stage would be charged for the work queued before it.
class StageTimer {
  public:
    StageTimer(StageStats& stage, const torch::Device& device, std::int64_t calls = 1)
        : stage_(stage), calls_(calls), device_(device) {
        wait_for_device();
        start_ = Clock::now();
    }
    ~StageTimer() {
        wait_for_device();
        stage_.add(seconds_since(start_), calls_);
    }

  private:
    void wait_for_device() const {
        if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
    }
    StageStats& stage_;
    std::int64_t calls_;
    torch::Device device_;
    Clock::time_point start_;
};

model::MotionHistory make_history(const Model& model) {
    const auto& config = model.config();
    const int64_t size = config.latent_size();
    return model::MotionHistory(config.temporal_segment, 1,
                                {config.vae_config().latent_channels, size, size},
                                torch::TensorOptions().device(model.device()));
}

// SD 1.5's schedule; the network says whether it predicts the noise or v.
model::DDIMScheduler make_scheduler(Model& model) {
    model::DDIMConfig config;
    config.prediction_type = model.network().prediction_type;
    return model::DDIMScheduler(config);
}

// Noise of clip c depends only on (seed, c), so a seed change applies from the next clip and a
// resumed stream draws the same noise.
std::uint64_t clip_seed(std::uint64_t seed, std::int64_t clip) {
    return seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(clip) + 1;
}

}  // namespace

void StageStats::add(double elapsed, std::int64_t n) {
    seconds += elapsed;
    calls += n;
    if (samples.size() == kMaxSamples) samples.erase(samples.begin());
    samples.push_back(n > 0 ? elapsed / static_cast<double>(n) : elapsed);
}

double StageStats::median() const {
    if (samples.empty()) return 0.0;
    auto sorted = samples;
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
    return sorted[sorted.size() / 2];
}

struct Session::ClipConditions {
    torch::Tensor audio_tokens;  // [1, F, N, D]
    model::MotionBank motion;
};

Session::Session(std::shared_ptr<Model> model, const std::uint8_t* rgb, int width, int height,
                 GenerationSettings settings)
    : model_(std::move(model)),
      settings_(settings),
      history_(make_history(*model_)),
      scheduler_(make_scheduler(*model_)),
      start_(Clock::now()) {
    settings_.validate();
    model_->check_decoder(settings_.decoder);
    const int size = model_->resolution();
    if (!rgb || width != size || height != size)
        throw Error("portrait: the model needs a " + std::to_string(size) + "x" +
                    std::to_string(size) + " image, got " + std::to_string(width) + "x" +
                    std::to_string(height));
    audio_options_ =
        model::audio_feature_options(model_->config(), model_->options().audio_context_seconds);

    std::lock_guard<std::mutex> lock(model_->run_mutex());
    c10::InferenceMode inference;
    StageTimer timer(stats_.reference_encode, model_->device());
    auto& net = model_->network();
    const auto pixels =
        torch::from_blob(const_cast<std::uint8_t*>(rgb), {1, size, size, 3}, torch::kUInt8);
    auto image =
        model::from_rgb8(pixels.permute({0, 3, 1, 2}).to(model_->device())).to(model_->dtype());
    auto latent = net.vae->encode(image).mode() * net.vae->config.scaling_factor;
    reference_ = net.reference_unet->encode_reference(latent);
}

Session::~Session() = default;

void Session::set_settings(const GenerationSettings& settings) {
    settings.validate();
    model_->check_decoder(settings.decoder);
    std::lock_guard<std::mutex> lock(settings_mutex_);
    settings_ = settings;
}

GenerationSettings Session::settings() const {
    std::lock_guard<std::mutex> lock(settings_mutex_);
    return settings_;
}

void Session::push_audio(const float* samples, std::size_t count) {
    audio_.push(samples, count);
    stats_.peak_audio_samples = audio_.peak_held_samples();
}

void Session::end_audio() {
    audio_.end();
}

std::int64_t Session::total_frames() const {
    return (audio_.total_samples() + model::kSamplesPerFrame - 1) / model::kSamplesPerFrame;
}

bool Session::clip_ready() const {
    if (audio_.ended()) return next_frame_ < total_frames();
    const auto plan =
        model::plan_audio_window(model_->config().audio_encoder_config(), audio_options_,
                                 next_frame_, model_->config().num_frames);
    return audio_.available(plan.end_sample());
}

bool Session::finished() const {
    return audio_.ended() && next_frame_ >= total_frames();
}

void Session::check_cancel() const {
    if (cancel_.load()) throw Cancelled();
}

std::int64_t Session::generate(const FrameCallback& on_frame, const ProgressCallback& on_progress) {
    std::int64_t frames = 0;
    while (clip_ready())
        frames += generate_clip(on_frame, on_progress);
    return frames;
}

Progress Session::progress(std::int64_t clip, int step, int steps) const {
    Progress p;
    const int64_t f = model_->config().num_frames;
    p.clip = clip;
    p.clips = audio_.ended() ? (total_frames() + f - 1) / f : 0;
    p.step = step;
    p.steps = steps;
    p.frames_done = next_frame_;
    p.elapsed_seconds = seconds_since(start_);
    const double done = static_cast<double>(clip) + static_cast<double>(step) / steps;
    if (p.clips > 0 && done > 0)
        p.eta_seconds = p.elapsed_seconds / done * (static_cast<double>(p.clips) - done);
    return p;
}

std::int64_t Session::generate_clip(const FrameCallback& on_frame,
                                    const ProgressCallback& on_progress) {
    const auto clip = denoise_clip(on_progress);
    return clip ? decode_clip(*clip, on_frame) : 0;
}

std::optional<DenoisedClip> Session::denoise_clip(const ProgressCallback& on_progress) {
    if (!clip_ready()) return std::nullopt;
    const auto settings = this->settings();
    const int64_t f = model_->config().num_frames;
    const int64_t first_frame = next_frame_;
    const int64_t clip = first_frame / f;
    if (stats_.clips == 0) start_ = Clock::now();

    DenoisedClip out;
    {
        std::lock_guard<std::mutex> lock(model_->run_mutex());
        c10::InferenceMode inference;
        check_cancel();
        const auto conditions = encode_conditions(first_frame);
        out.latents = denoise(conditions, settings, clip, on_progress);
        history_.push(out.latents);
        motion_features_.forget_unneeded(model_->config().temporal_segment, first_frame + f, f);
    }
    out.first_frame = first_frame;
    const int64_t last =
        audio_.ended() ? std::min(first_frame + f, total_frames()) : first_frame + f;
    out.frames = std::max<int64_t>(0, last - first_frame);
    out.decoder = settings.decoder;
    out.decode_batch = settings.decode_batch;

    next_frame_ = first_frame + f;
    const auto plan = model::plan_audio_window(model_->config().audio_encoder_config(),
                                               audio_options_, next_frame_, f);
    audio_.forget_before(plan.first_sample);
    stats_.clips += 1;
    stats_.audio_seconds =
        static_cast<double>(std::min(next_frame_, total_frames())) / model::kVideoFps;
    if (on_progress) on_progress(progress(clip + 1, 0, settings.steps));
    return out;
}

SessionStats Session::stats() const {
    std::lock_guard<std::mutex> lock(decode_stats_mutex_);
    return stats_;
}

Session::ClipConditions Session::encode_conditions(std::int64_t first_frame) {
    auto& net = model_->network();
    const auto& config = model_->config();
    ClipConditions out;
    {
        StageTimer timer(stats_.audio_encoder, model_->device());
        const auto plan = model::plan_audio_window(config.audio_encoder_config(), audio_options_,
                                                   first_frame, config.num_frames);
        const auto samples = audio_.range(plan.first_sample, plan.end_sample());
        auto windows = model::clip_audio_windows(*net.audio_encoder, plan, audio_options_, samples,
                                                 config.num_frames);
        out.audio_tokens = net.audio_proj(windows.unsqueeze(0).to(model_->dtype()));
    }
    {
        StageTimer timer(stats_.motion_encode, model_->device());
        const auto motion = history_.abstract();
        const auto frames = motion.frames.to(model_->dtype());
        // Auto: on the CPU only. On an H200 SD 1.5's kept frames took 1.8 GB next to the
        // ~10.4 GB a GPU session holds, for 7 % more frames/s (bench/results/README.md).
        const auto cache = model_->options().motion_cache;
        const bool cached = cache == ModelOptions::MotionCache::On ||
                            (cache == ModelOptions::MotionCache::Auto && model_->device().is_cpu());
        const auto ids = cached ? model::motion_frame_ids(config.temporal_segment, first_frame)
                                : std::vector<std::int64_t>{};
        // Each generated frame through the ReferenceNet once; the motion frames' keys and
        // values once per clip rather than per step and pass.
        out.motion = net.denoising_unet->prepare_motion(
            ids.empty() ? net.reference_unet->encode_motion(frames, motion.mask)
                        : motion_features_.encode(*net.reference_unet, frames, motion.mask, ids));
    }
    return out;
}

torch::Tensor Session::denoise(const ClipConditions& conditions, const GenerationSettings& settings,
                               std::int64_t clip, const ProgressCallback& on_progress) {
    const auto& config = model_->config();
    const int64_t size = config.latent_size();
    scheduler_.set_timesteps(settings.steps);
    auto generator = at::detail::createCPUGenerator(clip_seed(settings.seed, clip));
    auto latents =
        torch::randn({1, config.num_frames, config.vae_config().latent_channels, size, size},
                     generator, torch::kFloat32)
            .to(model_->device());
    const auto timesteps = scheduler_.timesteps();
    for (int64_t i = 0; i < timesteps.size(0); ++i) {
        check_cancel();
        if (on_progress) on_progress(progress(clip, static_cast<int>(i), settings.steps));
        StageTimer timer(stats_.denoise_step, model_->device());
        const int64_t t = timesteps[i].item<int64_t>();
        const auto noise = predict(latents, t, conditions, settings);
        latents = scheduler_.step(noise, t, latents);
    }
    return latents;
}

torch::Tensor Session::predict(const torch::Tensor& latents, std::int64_t timestep,
                               const ClipConditions& conditions,
                               const GenerationSettings& settings) {
    const model::GuidanceWeights weights(settings.reference_ratio, settings.audio_ratio);
    const auto passes = weights.passes();
    auto run = [&](const std::vector<model::GuidancePass>& batch) {
        model::LoopyInputs in;
        const auto n = static_cast<int64_t>(batch.size());
        in.latents = latents.to(model_->dtype()).expand({n, -1, -1, -1, -1}).contiguous();
        in.timestep =
            torch::full({1}, timestep, torch::TensorOptions(torch::kLong).device(model_->device()));
        in.reference = reference_;
        in.motion = conditions.motion;
        in.audio_tokens = conditions.audio_tokens;
        in.drop = model::guidance_drop_flags(batch, model_->device());
        return model_->network().predict_noise(in).to(torch::kFloat32);
    };
    torch::Tensor predictions;
    if (settings.batch_guidance) {
        predictions = run(passes);
    } else {
        std::vector<torch::Tensor> each;
        for (auto pass : passes)
            each.push_back(run({pass}));
        predictions = torch::cat(each, 0);
    }
    return model::combine_guidance(predictions, passes, weights);
}

// The decoders are not the network's forward passes that run_mutex guards: decoding may run on
// another thread while the next clip is denoised.
std::int64_t Session::decode_clip(const DenoisedClip& clip, const FrameCallback& on_frame) {
    c10::InferenceMode inference;
    auto& vae = model_->network().vae;
    std::int64_t emitted = 0;
    for (int64_t i = 0; i < clip.frames; i += clip.decode_batch) {
        const int64_t n = std::min<int64_t>(clip.decode_batch, clip.frames - i);
        torch::Tensor pixels;
        StageStats timed;
        {
            StageTimer timer(timed, model_->device(), n);
            // The preview decoder takes the latents as diffusion makes them, the VAE unscaled.
            const auto z = clip.latents[0].narrow(0, i, n);
            const auto image =
                clip.decoder == Decoder::preview
                    ? model_->preview_decoder().forward(z.to(model_->dtype()))
                    : vae->decode(z.div(vae->config.scaling_factor).to(model_->dtype()));
            pixels = model::to_rgb8(image);
        }
        {
            std::lock_guard<std::mutex> lock(decode_stats_mutex_);
            stats_.vae_decode.add(timed.seconds, n);
            stats_.frames += n;
        }
        for (int64_t j = 0; j < n; ++j) {
            Frame frame;
            frame.index = clip.first_frame + i + j;
            frame.timestamp = static_cast<double>(frame.index) / model::kVideoFps;
            frame.height = static_cast<int>(pixels.size(1));
            frame.width = static_cast<int>(pixels.size(2));
            const auto* data = pixels[j].data_ptr<std::uint8_t>();
            frame.rgb.assign(data, data + pixels[j].numel());
            if (on_frame) on_frame(frame);
            ++emitted;
        }
    }
    return emitted;
}

}  // namespace loopy
