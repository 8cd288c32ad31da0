// The only file of ui/ that sees the engine (LibTorch): see engine_worker.h.
#include "ui/engine_worker.h"

#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "audio/microphone.h"
#include "core/engine.h"
#include "core/log.h"
#include "render/portrait.h"

namespace loopy::ui {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

GenerationSettings to_engine(const GuidanceSettings& g) {
    GenerationSettings s;
    s.steps = g.steps;
    s.audio_ratio = g.audio_ratio;
    s.reference_ratio = g.reference_ratio;
    s.seed = g.seed;
    return s;
}

GuidanceSettings from_engine(const GenerationSettings& s) {
    GuidanceSettings g;
    g.steps = s.steps;
    g.audio_ratio = s.audio_ratio;
    g.reference_ratio = s.reference_ratio;
    g.seed = s.seed;
    return g;
}

GenerationProgress to_ui(const Progress& p) {
    GenerationProgress g;
    g.clip = p.clip;
    g.clips = p.clips;
    g.step = p.step;
    g.steps = p.steps;
    g.frames_done = p.frames_done;
    g.elapsed_seconds = p.elapsed_seconds;
    g.eta_seconds = p.eta_seconds;
    return g;
}

QImage to_qimage(const Frame& frame) {
    return QImage(frame.rgb.data(), frame.width, frame.height, frame.width * 3,
                  QImage::Format_RGB888)
        .copy();
}

// The same crop as the preview, at the model's resolution (what `loopy render --crop` does).
render::Portrait load_portrait_for(const Model& model, const PortraitSource& source) {
    render::PortraitOptions options;
    options.size = model.resolution();
    if (source.crop.width() > 0 && source.crop.height() > 0)
        options.crop = render::CropRect{source.crop.x(), source.crop.y(), source.crop.width(),
                                        source.crop.height()};
    return render::load_portrait(source.path.toStdString(), options);
}

QString describe(const Model& model, const EngineConfig& config) {
    return QStringLiteral("%1, %2x%2, %3, %4 thread(s)")
        .arg(QString::fromStdString(model.config().name))
        .arg(model.resolution())
        .arg(QString::fromStdString(model.options().device))
        .arg(config.threads > 0 ? QString::number(config.threads) : QStringLiteral("all"));
}

// When each stretch of the audio pushed into the Session was captured, from the microphone's
// stamps (MicrophoneRead::newest_capture_time of each read).
class CaptureClock {
  public:
    void add(std::int64_t end, Clock::time_point newest) {
        marks_.push_back({end, newest});
        if (marks_.size() > kMaxMarks) marks_.pop_front();
    }
    // When sample `index` of the pushed stream was captured (16 kHz samples before the newest
    // sample of the read that brought it).
    Clock::time_point time_of(std::int64_t index) const {
        if (marks_.empty()) return Clock::now();
        const auto it = std::lower_bound(marks_.begin(), marks_.end(), index,
                                         [](const Mark& m, std::int64_t i) { return m.end <= i; });
        const Mark& mark = it == marks_.end() ? marks_.back() : *it;
        const double before =
            double(std::max<std::int64_t>(mark.end - 1 - index, 0)) / EngineWorker::kSampleRate;
        return mark.newest -
               std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(before));
    }

  private:
    struct Mark {
        std::int64_t end;  // one past the read's last sample
        Clock::time_point newest;
    };
    static constexpr std::size_t kMaxMarks = 4096;  // minutes of 20 ms reads
    std::deque<Mark> marks_;
};

}  // namespace

// --- LiveFrameQueue ---

bool LiveFrameQueue::push(LiveFrame frame) {
    std::lock_guard<std::mutex> lock(mutex_);
    const bool was_empty = frames_.empty();
    while (frames_.size() >= capacity_) {
        frames_.pop_front();
        dropped_.fetch_add(1);
    }
    frames_.push_back(std::move(frame));
    return was_empty;
}

std::optional<LiveFrame> LiveFrameQueue::pop() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (frames_.empty()) return std::nullopt;
    LiveFrame frame = std::move(frames_.front());
    frames_.pop_front();
    return frame;
}

void LiveFrameQueue::clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    frames_.clear();
    dropped_.store(0);
}

std::size_t LiveFrameQueue::size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return frames_.size();
}

// --- the model ---

struct EngineWorker::Engine {
    std::shared_ptr<Model> model;
    EngineConfig config;

    // Loads the checkpoint unless it is already loaded with this config; true if it loaded.
    bool ensure(const EngineConfig& wanted) {
        if (model && wanted == config) return false;
        if (wanted.checkpoint.isEmpty())
            throw Error("no checkpoint chosen: pick a Loopy .safetensors file under Model");
        model.reset();  // free the old weights first
        ModelOptions options;
        options.device = wanted.device.toStdString();
        options.threads = wanted.threads;
        model = Model::load(wanted.checkpoint.toStdString(), options);
        config = wanted;
        return true;
    }
};

// --- live mode ---

// One live run on the inference thread. Audio path: microphone ring -> read_16k() -> pending_
// (bounded: the oldest audio beyond max_pending_seconds is discarded and counted) -> the Session,
// which is given only what its next clip needs, so no backlog hides inside it.
class EngineWorker::LiveRun {
  public:
    LiveRun(EngineWorker& worker, std::shared_ptr<Model> model, const LiveRequest& request);
    void run();  // until stopLive() or cancel(); throws Cancelled after cancel()
    RunReport report() const;
    LiveStats stats() const;

  private:
    static audio::MicrophoneOptions microphone_options(const LiveRequest& request);
    void readMicrophone();
    void feedSession(bool everything);
    void discardPending(std::size_t count);
    std::int64_t clipEnd() const;
    void generateClip();
    void publishStats(bool force);
    bool cancelled() const { return worker_.cancel_.load(); }

    EngineWorker& worker_;
    std::shared_ptr<Model> model_;
    LiveRequest request_;
    audio::MicrophoneCapture mic_;  // opened first: "no microphone" fails fast
    std::shared_ptr<Session> session_;
    model::Wav2Vec2Config encoder_;
    model::AudioFeatureOptions audio_options_;
    std::vector<float> chunk_;
    std::vector<float> pending_;      // read from the microphone, not yet in the Session
    std::int64_t pending_start_ = 0;  // microphone-stream index (16 kHz) of pending_[0]
    std::int64_t read_total_ = 0;     // 16 kHz samples read from the microphone
    std::int64_t discarded_ = 0;      // 16 kHz samples dropped from pending_
    std::int64_t pushed_ = 0;         // 16 kHz samples given to the Session
    CaptureClock microphone_clock_;   // microphone-stream index -> capture time
    CaptureClock session_clock_;      // Session-stream index -> capture time
    bool draining_ = false;           // the microphone stopped: generating what it had captured
    float peak_ = 0;
    int clip_steps_ = 0;
    std::int64_t frames_ = 0;
    double generating_seconds_ = 0;  // time spent inside generate_clip
    Clock::time_point first_clip_{}, last_clip_{};
    Clock::time_point last_stats_{};
    double reported_discarded_ = 0;
    Clock::time_point last_discard_{};
    static constexpr double kBehindSeconds = 3;  // "behind" while audio was dropped this recently
};

audio::MicrophoneOptions EngineWorker::LiveRun::microphone_options(const LiveRequest& request) {
    audio::MicrophoneOptions options;
    options.device_name = request.microphone.toStdString();
    options.ring_seconds = 30;  // slack for a slow clip; the ring is also read during clips
    return options;
}

EngineWorker::LiveRun::LiveRun(EngineWorker& worker, std::shared_ptr<Model> model,
                               const LiveRequest& request)
    : worker_(worker),
      model_(std::move(model)),
      request_(request),
      mic_(microphone_options(request)),
      encoder_(model_->config().audio_encoder_config()) {
    audio_options_.window = model_->config().audio_projection.window;
    audio_options_.context_seconds = model_->options().audio_context_seconds;
    const auto portrait = load_portrait_for(*model_, request.portrait);
    session_ = std::make_shared<Session>(model_, portrait.rgb.data(), portrait.width,
                                         portrait.height, to_engine(worker_.guidance()));
    worker_.publishSession(session_);
    chunk_.reserve(EngineWorker::kSampleRate);
}

void EngineWorker::LiveRun::run() {
    mic_.start();
    Q_EMIT worker_.liveStarted(QString::fromStdString(mic_.device().name));
    while (!worker_.stop_live_.load() && !cancelled()) {
        readMicrophone();
        feedSession(false);
        if (session_->clip_ready())
            generateClip();
        else
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        publishStats(false);
    }
    mic_.stop();
    draining_ = true;
    // Stopped: what was captured (at most the pending bound) is still turned into frames.
    if (!cancelled()) {
        readMicrophone();
        feedSession(true);
        session_->end_audio();
        while (!cancelled() && session_->clip_ready())
            generateClip();
    }
    publishStats(true);
    if (cancelled()) throw Cancelled();
}

// Takes what the microphone captured into pending_, then applies the drop policy: pending audio
// beyond the bound is discarded, oldest first. (The ring is trimmed to the same bound first, so
// audio that would be discarded anyway is not resampled.)
void EngineWorker::LiveRun::readMicrophone() {
    // Stop ends the capture at once (also in the middle of a clip): no audio after the press.
    if (worker_.stop_live_.load() && mic_.running()) mic_.stop();
    mic_.skip_to_latest(request_.max_pending_seconds);
    chunk_.clear();
    const auto read = mic_.read_16k(chunk_);
    if (read.samples > 0) {
        pending_.insert(pending_.end(), chunk_.begin(), chunk_.end());
        read_total_ += static_cast<std::int64_t>(read.samples);
        if (read.has_time) microphone_clock_.add(read_total_, read.newest_capture_time);
    }
    const auto bound =
        static_cast<std::size_t>(request_.max_pending_seconds * EngineWorker::kSampleRate);
    if (pending_.size() > bound) discardPending(pending_.size() - bound);
}

void EngineWorker::LiveRun::discardPending(std::size_t count) {
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(count));
    pending_start_ += static_cast<std::int64_t>(count);
    discarded_ += static_cast<std::int64_t>(count);
}

// Gives the Session the audio its next clip needs (everything: at the end), oldest first.
void EngineWorker::LiveRun::feedSession(bool everything) {
    const std::int64_t want =
        everything ? static_cast<std::int64_t>(pending_.size()) : clipEnd() - pushed_;
    const auto count = static_cast<std::size_t>(
        std::clamp<std::int64_t>(want, 0, static_cast<std::int64_t>(pending_.size())));
    if (count == 0) return;
    session_->push_audio(pending_.data(), count);
    pushed_ += static_cast<std::int64_t>(count);
    for (std::size_t i = 0; i < count; ++i)
        peak_ = std::max(peak_, std::abs(pending_[i]));
    const std::int64_t newest = pending_start_ + static_cast<std::int64_t>(count) - 1;
    session_clock_.add(pushed_, microphone_clock_.time_of(newest));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(count));
    pending_start_ += static_cast<std::int64_t>(count);
}

// One past the newest sample the next clip needs (its lookahead included).
std::int64_t EngineWorker::LiveRun::clipEnd() const {
    return model::plan_audio_window(encoder_, audio_options_, session_->next_frame(),
                                    model_->config().num_frames)
        .end_sample();
}

void EngineWorker::LiveRun::generateClip() {
    const std::int64_t newest_needed = std::min(clipEnd(), pushed_) - 1;
    const auto audio_captured = session_clock_.time_of(newest_needed);
    const auto start = Clock::now();
    if (frames_ == 0) first_clip_ = start;
    // The callbacks also keep reading the microphone (same thread: the ring's one consumer), so
    // that a clip slower than the ring is long does not overflow it and lose the newest audio.
    frames_ += session_->generate_clip(
        [&](const Frame& frame) {
            if (worker_.live_frames_.push(
                    {to_qimage(frame), frame.index, audio_captured, draining_}))
                Q_EMIT worker_.liveFramesReady();
            readMicrophone();
        },
        [&](const Progress& progress) {
            if (cancelled()) session_->cancel();
            clip_steps_ = progress.steps;
            readMicrophone();
        });
    last_clip_ = Clock::now();
    generating_seconds_ += seconds_between(start, last_clip_);
    logger()->debug(
        "live clip at frame {}: its newest audio was {:.0f} ms old, generated in {:.0f} ms",
        frames_, seconds_between(audio_captured, start) * 1000,
        seconds_between(start, last_clip_) * 1000);
    publishStats(true);
}

LiveStats EngineWorker::LiveRun::stats() const {
    const auto mic = mic_.stats();
    const double rate = std::max(mic_.sample_rate(), 1);
    constexpr double kRate = EngineWorker::kSampleRate;
    LiveStats s;
    s.device = QString::fromStdString(mic_.device().name);
    s.captured_seconds = double(mic.captured_frames) / rate;
    s.discarded_seconds = double(mic.discarded_frames) / rate + double(discarded_) / kRate;
    s.overflow_seconds = double(mic.dropped_frames) / rate;
    s.pushed_seconds = double(pushed_) / kRate;
    s.frames = frames_;
    s.generated_fps = generating_seconds_ > 0 ? double(frames_) / generating_seconds_ : 0;
    s.real_time_factor = s.generated_fps / EngineWorker::kFps;
    s.peak = peak_;
    s.clip_steps = clip_steps_;
    return s;
}

void EngineWorker::LiveRun::publishStats(bool force) {
    const auto now = Clock::now();
    if (!force && seconds_between(last_stats_, now) < 0.25) return;
    last_stats_ = now;
    LiveStats s = stats();
    if (s.discarded_seconds > reported_discarded_) last_discard_ = now;
    reported_discarded_ = s.discarded_seconds;
    s.behind = frames_ > 0 && seconds_between(last_discard_, now) < kBehindSeconds;
    Q_EMIT worker_.liveStatsChanged(s);
}

RunReport EngineWorker::LiveRun::report() const {
    RunReport r;
    r.frames = frames_;
    r.video_seconds = double(frames_) / EngineWorker::kFps;
    r.wall_seconds = frames_ > 0 ? seconds_between(first_clip_, last_clip_) : 0;
    return r;
}

// --- the worker ---

EngineWorker::EngineWorker(QObject* parent) : QObject(parent), engine_(std::make_unique<Engine>()) {
    qRegisterMetaType<GenerationProgress>();
    qRegisterMetaType<RunReport>();
    qRegisterMetaType<LiveStats>();
    thread_.setObjectName(QStringLiteral("loopy-inference"));
    context_ = new QObject;
    context_->moveToThread(&thread_);
    connect(&thread_, &QThread::finished, context_, &QObject::deleteLater);
    thread_.start();
}

EngineWorker::~EngineWorker() {
    cancel();
    stop_live_.store(true);
    thread_.quit();
    thread_.wait();  // the running clip stops at its next DDIM step
}

bool EngineWorker::cudaAvailable() {
    return torch::cuda::is_available();
}

int EngineWorker::hardwareThreads() {
    return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

bool EngineWorker::submit(std::function<void()> job) {
    if (busy_.exchange(true)) return false;
    cancel_.store(false);
    stop_live_.store(false);
    live_frames_.clear();
    QMetaObject::invokeMethod(context_, std::move(job), Qt::QueuedConnection);
    return true;
}

bool EngineWorker::generate(const GenerationRequest& request) {
    return submit([this, request] { runGeneration(request); });
}

bool EngineWorker::startLive(const LiveRequest& request) {
    return submit([this, request] { runLive(request); });
}

void EngineWorker::setGuidance(const GuidanceSettings& settings) {
    std::lock_guard<std::mutex> lock(guidance_mutex_);
    guidance_ = settings;
    if (!session_) return;
    try {
        session_->set_settings(to_engine(settings));
    } catch (const std::exception& e) {
        logger()->warn("guidance settings refused: {}", e.what());
    }
    session_settings_ = from_engine(session_->settings());
}

GuidanceSettings EngineWorker::guidance() const {
    std::lock_guard<std::mutex> lock(guidance_mutex_);
    return guidance_;
}

std::optional<GuidanceSettings> EngineWorker::sessionSettings() const {
    std::lock_guard<std::mutex> lock(guidance_mutex_);
    return session_settings_;
}

void EngineWorker::cancel() {
    cancel_.store(true);
    std::lock_guard<std::mutex> lock(guidance_mutex_);
    if (session_) session_->cancel();
}

void EngineWorker::stopLive() {
    stop_live_.store(true);
}

// A new Session gets the newest settings under the lock, so no setGuidance() call is lost.
void EngineWorker::publishSession(const std::shared_ptr<Session>& session) {
    std::lock_guard<std::mutex> lock(guidance_mutex_);
    session->set_settings(to_engine(guidance_));
    session_ = session;
    session_settings_ = from_engine(session->settings());
    if (cancel_.load()) session->cancel();
}

void EngineWorker::unpublishSession() {
    std::lock_guard<std::mutex> lock(guidance_mutex_);
    session_.reset();
}

std::shared_ptr<Model> EngineWorker::loadModel(const EngineConfig& config) {
    try {
        if (engine_->ensure(config)) Q_EMIT modelLoaded(describe(*engine_->model, config));
    } catch (const std::exception& e) {
        engine_->model.reset();
        throw Error(std::string("cannot load the checkpoint: ") + e.what());
    }
    return engine_->model;
}

void EngineWorker::generateOffline(const GenerationRequest& request, RunReport& report) {
    if (!request.audio || request.audio->empty()) throw Error("no audio to generate from");
    const auto model = loadModel(request.engine);
    const auto portrait = load_portrait_for(*model, request.portrait);
    auto session = std::make_shared<Session>(model, portrait.rgb.data(), portrait.width,
                                             portrait.height, to_engine(guidance()));
    publishSession(session);
    session->push_audio(request.audio->data(), request.audio->size());
    session->end_audio();
    const auto start = Clock::now();
    session->generate(
        [&](const Frame& frame) {
            ++report.frames;
            Q_EMIT frameGenerated(to_qimage(frame), frame.index);
        },
        [&](const Progress& progress) {
            if (cancel_.load()) session->cancel();
            Q_EMIT progressed(to_ui(progress));
        });
    report.wall_seconds = seconds_between(start, Clock::now());
    report.video_seconds = double(report.frames) / kFps;
}

void EngineWorker::runGeneration(const GenerationRequest& request) {
    RunReport report;
    QString error;
    try {
        c10::InferenceMode inference;  // on the inference thread, for everything it runs
        generateOffline(request, report);
    } catch (const Cancelled&) {
        report.cancelled = true;
    } catch (const std::exception& e) {
        error = QString::fromStdString(e.what());
    }
    unpublishSession();
    busy_.store(false);  // before the signal: its receiver may start the next job
    if (error.isEmpty())
        Q_EMIT generationFinished(report);
    else
        Q_EMIT failed(error);
}

void EngineWorker::runLive(const LiveRequest& request) {
    RunReport report;
    LiveStats stats;
    QString error;
    try {
        c10::InferenceMode inference;
        LiveRun run(*this, loadModel(request.engine), request);
        try {
            run.run();
        } catch (const Cancelled&) {
            report.cancelled = true;
        }
        const bool cancelled = report.cancelled;
        report = run.report();
        report.cancelled = cancelled;
        stats = run.stats();
    } catch (const Cancelled&) {
        report.cancelled = true;
    } catch (const std::exception& e) {
        error = QString::fromStdString(e.what());
    }
    unpublishSession();
    busy_.store(false);
    if (error.isEmpty())
        Q_EMIT liveFinished(report, stats);
    else
        Q_EMIT failed(error);
}

}  // namespace loopy::ui
