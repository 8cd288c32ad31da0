// The only file of ui/ that sees the engine (LibTorch): see engine_worker.h.
#include "ui/engine_worker.h"

#include <torch/cuda.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "audio/microphone.h"
#include "core/engine.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "model/guidance.h"
#include "model/preview_decoder.h"
#include "render/live_generator.h"
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
    s.decoder = g.preview_decoder ? Decoder::preview : Decoder::full;
    return s;
}

GuidanceSettings from_engine(const GenerationSettings& s) {
    GuidanceSettings g;
    g.steps = s.steps;
    g.audio_ratio = s.audio_ratio;
    g.reference_ratio = s.reference_ratio;
    g.seed = s.seed;
    g.preview_decoder = s.decoder == Decoder::preview;
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

// One live run on the inference thread: render::LiveGenerator (the loop and its drop policy,
// shared with `loopy bench live`) fed by the microphone, its frames queued for the UI thread.
class EngineWorker::LiveRun {
  public:
    LiveRun(EngineWorker& worker, std::shared_ptr<Model> model, const LiveRequest& request);
    void run();  // until stopLive() or cancel(); throws Cancelled after cancel()
    RunReport report() const;
    LiveStats stats() const;

  private:
    static audio::MicrophoneOptions microphone_options(const LiveRequest& request);
    void publishStats(bool force);

    EngineWorker& worker_;
    QString device_;
    std::unique_ptr<render::LiveGenerator> generator_;
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
    : worker_(worker) {
    // The microphone is opened first: "no microphone" fails before the portrait is encoded.
    auto mic = render::open_microphone_source(microphone_options(request));
    device_ = QString::fromStdString(mic->name());
    const auto portrait = load_portrait_for(*model, request.portrait);
    auto session = std::make_shared<Session>(model, portrait.rgb.data(), portrait.width,
                                             portrait.height, to_engine(worker_.guidance()));
    worker_.publishSession(session);
    render::LiveOptions options;
    options.max_pending_seconds = request.max_pending_seconds;
    generator_ = std::make_unique<render::LiveGenerator>(std::move(mic), session, options);
}

void EngineWorker::LiveRun::run() {
    render::LiveCallbacks callbacks;
    callbacks.on_frame = [this](const render::LiveFrameEvent& e) {
        if (worker_.live_frames_.push(
                {to_qimage(e.frame), e.frame.index, e.audio_captured, e.after_stop}))
            Q_EMIT worker_.liveFramesReady();
    };
    callbacks.on_tick = [this] { publishStats(false); };
    callbacks.stop_requested = [this] { return worker_.stop_live_.load(); };
    callbacks.cancel_requested = [this] { return worker_.cancel_.load(); };
    Q_EMIT worker_.liveStarted(device_);
    try {
        generator_->run(callbacks);
    } catch (const Cancelled&) {
        publishStats(true);
        throw;
    }
    publishStats(true);
}

LiveStats EngineWorker::LiveRun::stats() const {
    const auto c = generator_->counters();
    LiveStats s;
    s.device = device_;
    s.captured_seconds = c.captured_seconds;
    s.discarded_seconds = c.discarded_seconds;
    s.overflow_seconds = c.overflow_seconds;
    s.pushed_seconds = c.pushed_seconds;
    s.frames = c.frames;
    s.generated_fps = c.generated_fps;
    s.real_time_factor = s.generated_fps / EngineWorker::kFps;
    s.peak = c.peak;
    s.clip_steps = c.clip_steps;
    return s;
}

void EngineWorker::LiveRun::publishStats(bool force) {
    const auto now = Clock::now();
    if (!force && seconds_between(last_stats_, now) < 0.25) return;
    last_stats_ = now;
    LiveStats s = stats();
    if (s.discarded_seconds > reported_discarded_) last_discard_ = now;
    reported_discarded_ = s.discarded_seconds;
    s.behind = s.frames > 0 && seconds_between(last_discard_, now) < kBehindSeconds;
    Q_EMIT worker_.liveStatsChanged(s);
}

RunReport EngineWorker::LiveRun::report() const {
    const auto c = generator_->counters();
    RunReport r;
    r.frames = c.frames;
    r.video_seconds = double(c.frames) / EngineWorker::kFps;
    r.wall_seconds = c.wall_seconds;
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

bool EngineWorker::hasPreviewDecoder(const QString& checkpoint) {
    if (checkpoint.isEmpty()) return false;
    try {
        return model::has_preview_decoder(checkpoint.toStdString());
    } catch (const std::exception&) {
        return false;  // the load reports what is wrong with the file
    }
}

std::optional<RecommendedGuidance> EngineWorker::recommendedGuidance(const QString& checkpoint) {
    if (checkpoint.isEmpty()) return std::nullopt;
    try {
        const auto path = checkpoint.toStdString();
        const auto r =
            model::recommended_guidance(safetensors::File::open(path).header.metadata, path);
        if (!r) return std::nullopt;
        return RecommendedGuidance{r->audio, r->reference};
    } catch (const std::exception&) {
        return std::nullopt;  // the load reports what is wrong with the file
    }
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
