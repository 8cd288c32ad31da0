#pragma once
// The engine's public API, used by the GUI, the `loopy` CLI and the tests:
//
//   auto model = loopy::Model::load("loopy-tiny-demo.safetensors", {});
//   loopy::Session session(model, portrait_rgb, width, height, settings);
//   session.push_audio(samples, n);          // 16 kHz mono, any chunking
//   session.end_audio();                     // a file: no more audio
//   session.generate(on_frame, on_progress); // every clip whose audio is there
//
// A Model holds the weights (loaded once, shared by sessions); a Session is one portrait's
// generation: its reference features (computed once), its motion history and its audio stream.
// Frames come out clip by clip (12 frames) through a callback; a file and a stream fed in chunks
// give identical frames. See docs/architecture.md ("Generation").
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/audio_features.h"
#include "model/ddim.h"
#include "model/guidance.h"
#include "model/loopy_model.h"
#include "model/motion_features.h"
#include "model/preview_decoder.h"
#include "model/temporal_segment.h"

namespace loopy {

// What turns a clip's latents into pixels: the VAE decoder, or the fast preview decoder distilled
// from it (model/preview_decoder.h; only in checkpoints written by `loopy train-vae --preview`).
enum class Decoder { full, preview };
const char* decoder_name(Decoder decoder);       // "full" / "preview"
Decoder parse_decoder(const std::string& name);  // throws loopy::Error for other names

// What may change between clips (Session::set_settings), also in live mode.
struct GenerationSettings {
    int steps = 25;                // DDIM steps per clip
    double audio_ratio = 5.0;      // audio guidance: e(ref, audio) vs e(ref)
    double reference_ratio = 3.0;  // reference guidance: e(ref) vs e(none)
    std::uint64_t seed = 0;        // noise of clip c is drawn from (seed, c)
    bool batch_guidance = true;    // the guidance passes as one batch (false: one call each)
    int decode_batch = 4;          // frames per VAE decode call (memory vs speed)
    Decoder decoder = Decoder::full;

    void validate() const;  // throws loopy::Error
};

// Fixed for a Model's lifetime (reload to change them).
struct ModelOptions {
    std::string device = "cpu";     // "cpu", "cuda", "cuda:N"
    std::string dtype = "float32";  // "float16" / "bfloat16" on CUDA only
    int threads = 0;                // LibTorch intra-op threads; 0: all cores
    double audio_context_seconds = model::kDefaultAudioContextSeconds;  // wav2vec left context
    // Convolution weights in NHWC order, which the convolutions' outputs then follow: what cuDNN's
    // half-precision kernels want. Same results within rounding.
    bool channels_last = false;
    // Keep each generated frame's ReferenceNet motion features for the later clips that sample it
    // again (model/motion_features.h): ~40 % fewer ReferenceNet passes per clip for more memory
    // (SD 1.5 at 512 px on an H200: +7 % frames/s for +1.8 GB). Auto: on the CPU only.
    enum class MotionCache { Auto, On, Off };
    MotionCache motion_cache = MotionCache::Auto;
};

class Model {
  public:
    // Loads a Loopy checkpoint (docs/checkpoint-format.md); throws loopy::Error naming the file.
    static std::shared_ptr<Model> load(const std::string& path, const ModelOptions& options = {});
    // Wraps a network built in memory (tests, the trainer), with an optional preview decoder.
    static std::shared_ptr<Model> from_network(model::LoopyModel network,
                                               const ModelOptions& options = {},
                                               model::PreviewDecoder preview = nullptr);

    const model::LoopyConfig& config() const { return network_->config; }
    model::LoopyModelImpl& network() { return *network_; }
    bool has_preview_decoder() const { return !preview_.is_empty(); }
    model::PreviewDecoderImpl& preview_decoder() { return *preview_; }
    // Throws loopy::Error (saying how to get one) when `decoder` is the preview and there is none.
    void check_decoder(Decoder decoder) const;
    const ModelOptions& options() const { return options_; }
    torch::Device device() const { return device_; }
    torch::ScalarType dtype() const { return dtype_; }
    int resolution() const { return static_cast<int>(config().resolution); }
    const std::string& path() const { return path_; }
    // The guidance ratios the checkpoint recommends (metadata "loopy.guidance"), if any.
    const std::optional<model::GuidanceRatios>& recommended_guidance() const {
        return recommended_guidance_;
    }
    // The network's forward passes are not re-entrant: sessions take this while they run.
    std::mutex& run_mutex() { return run_mutex_; }

  private:
    Model(model::LoopyModel network, model::PreviewDecoder preview, const ModelOptions& options,
          std::string path);
    model::LoopyModel network_;
    model::PreviewDecoder preview_;  // empty when the checkpoint has none
    ModelOptions options_;
    torch::Device device_{torch::kCPU};
    torch::ScalarType dtype_ = torch::kFloat32;
    std::string path_;
    std::optional<model::GuidanceRatios> recommended_guidance_;
    std::mutex run_mutex_;
};

struct Frame {
    std::int64_t index = 0;  // from 0
    double timestamp = 0;    // seconds: index / 25
    int width = 0, height = 0;
    std::vector<std::uint8_t> rgb;  // RGB24, width * height * 3
};

struct Progress {
    std::int64_t clip = 0;         // 0-based clip being generated
    std::int64_t clips = 0;        // total, once the audio's end is known (0: open stream)
    int step = 0, steps = 0;       // DDIM steps done in this clip
    std::int64_t frames_done = 0;  // frames emitted so far
    double elapsed_seconds = 0;
    double eta_seconds = -1;  // -1: unknown
};

// Wall time per stage (seconds, summed) and how often each ran.
struct StageStats {
    double seconds = 0;
    std::int64_t calls = 0;
    std::vector<double> samples;  // seconds per call (per timed run), the last kMaxSamples
    static constexpr std::size_t kMaxSamples = 4096;

    double mean() const { return calls ? seconds / static_cast<double>(calls) : 0.0; }
    double median() const;  // of `samples`, per call; 0 if none
    void add(double seconds, std::int64_t calls);
};
struct SessionStats {
    StageStats reference_encode;  // VAE encode + ReferenceNet of the portrait: once per session
    StageStats audio_encoder;     // wav2vec + audio projection, per clip
    StageStats motion_encode;     // ReferenceNet over the motion frames, per clip
    StageStats denoise_step;      // one DDIM step (all guidance passes), per step
    StageStats vae_decode;        // per frame (the chosen decoder)
    std::int64_t clips = 0, frames = 0;
    double audio_seconds = 0;            // audio consumed by generated clips
    std::size_t peak_audio_samples = 0;  // most samples held at once
};

// Thrown by Session::generate when cancel() was called; nothing half-done is emitted.
struct Cancelled : Error {
    Cancelled() : Error("cancelled") {}
};

using FrameCallback = std::function<void(const Frame&)>;
using ProgressCallback = std::function<void(const Progress&)>;

// A clip whose denoising is done and whose frames are still to be decoded (Session::denoise_clip).
struct DenoisedClip {
    torch::Tensor latents;  // [1, F, C, h, w], float32, on the model's device
    std::int64_t first_frame = 0;
    std::int64_t frames = 0;  // to emit: F, or fewer for the last clip of a file
    Decoder decoder = Decoder::full;
    int decode_batch = 4;
};

class Session {
  public:
    // rgb: width x height RGB24; it must be the model's resolution square (the CLI and GUI crop
    // and resize with render/portrait.h). Encodes the reference once.
    Session(std::shared_ptr<Model> model, const std::uint8_t* rgb, int width, int height,
            GenerationSettings settings = {});
    ~Session();

    // Thread-safe; takes effect at the next clip.
    void set_settings(const GenerationSettings& settings);
    GenerationSettings settings() const;

    // 16 kHz mono float in [-1, 1]; any chunk size.
    void push_audio(const float* samples, std::size_t count);
    // No more audio: the last, partial clip can be generated (its missing audio is silence).
    void end_audio();
    // Frames the audio pushed so far will give: ceil(samples / 640) once the audio ended.
    std::int64_t total_frames() const;
    // Whether the next clip's audio (with its 80 ms lookahead) has arrived.
    bool clip_ready() const;
    bool finished() const;  // audio ended and every frame emitted

    // Generates every ready clip; returns the frames emitted. Throws Cancelled after cancel().
    std::int64_t generate(const FrameCallback& on_frame, const ProgressCallback& on_progress = {});
    // Generates the next clip only (if ready); returns its frames emitted.
    std::int64_t generate_clip(const FrameCallback& on_frame,
                               const ProgressCallback& on_progress = {});
    // generate_clip in two halves, for callers that decode clip n on another thread while clip
    // n+1 is denoised (core/decode_worker.h). denoise_clip advances the stream (motion history,
    // next frame) and returns nothing when the next clip is not ready. decode_clip reads only the
    // decoders' weights, so one decode_clip at a time may run beside denoise_clip; call it in clip
    // order. Not re-entrant otherwise.
    std::optional<DenoisedClip> denoise_clip(const ProgressCallback& on_progress = {});
    std::int64_t decode_clip(const DenoisedClip& clip, const FrameCallback& on_frame);

    void cancel() { cancel_.store(true); }  // from any thread
    void reset_cancel() { cancel_.store(false); }

    // A copy: decode_clip may be adding to it on another thread.
    SessionStats stats() const;
    std::int64_t next_frame() const { return next_frame_; }
    const model::MotionHistory& motion_history() const { return history_; }
    Model& model() { return *model_; }

  private:
    struct ClipConditions;
    ClipConditions encode_conditions(std::int64_t first_frame);
    torch::Tensor denoise(const ClipConditions& conditions, const GenerationSettings& settings,
                          std::int64_t clip, const ProgressCallback& on_progress);
    torch::Tensor predict(const torch::Tensor& latents, std::int64_t timestep,
                          const ClipConditions& conditions, const GenerationSettings& settings);
    void check_cancel() const;
    Progress progress(std::int64_t clip, int step, int steps) const;

    std::shared_ptr<Model> model_;
    mutable std::mutex settings_mutex_;
    GenerationSettings settings_;
    model::AudioFeatureOptions audio_options_;
    model::AudioSampleBuffer audio_;
    model::ReferenceBank reference_;
    model::MotionHistory history_;
    model::MotionFeatureCache motion_features_;  // with uniform TSM sampling
    model::DDIMScheduler scheduler_;
    std::atomic<bool> cancel_{false};
    std::int64_t next_frame_ = 0;
    SessionStats stats_;
    mutable std::mutex decode_stats_mutex_;  // stats_.vae_decode and stats_.frames
    std::chrono::steady_clock::time_point start_;
};

// Sets the ratios the user did not give to the checkpoint's recommendation, when it has one;
// returns whether it changed anything.
bool use_recommended_guidance(const Model& model, GenerationSettings& settings, bool audio_given,
                              bool reference_given);

// Converts "cpu" / "cuda" / "cuda:N" and "float32" / "float16" / "bfloat16"; throws loopy::Error
// for unknown names and CUDA requests when LibTorch has no CUDA.
torch::Device parse_device(const std::string& name);
torch::ScalarType parse_dtype(const std::string& name, const torch::Device& device);

}  // namespace loopy
