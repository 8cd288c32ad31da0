#pragma once
// The bridge between the widgets and the engine. This header exposes only Qt and plain types:
// engine_worker.cpp is the one file of ui/ that includes core/engine.h (LibTorch), and it is built
// into its own library, loopy_studio_engine. The widgets' library (loopy_ui) is compiled without
// LibTorch's include path, so a LibTorch header included there fails to build.
//
// Threads (docs/gui.md): the worker owns one inference thread (a QThread) that owns the Model and
// the Session and runs offline generation and live mode. The UI thread queues jobs to it, gets its
// signals queued, and calls the thread-safe setGuidance(), cancel() and stopLive(); it never waits
// on the model (only ~EngineWorker does, after cancelling the job).
#include <QImage>
#include <QMetaType>
#include <QObject>
#include <QRect>
#include <QString>
#include <QThread>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace loopy {
class Session;  // core/engine.h, included by engine_worker.cpp only
class Model;
}  // namespace loopy

namespace loopy::ui {

// The guidance ratios a checkpoint recommends (model/guidance.h), without the engine's types.
struct RecommendedGuidance {
    double audio_ratio = 0;
    double reference_ratio = 0;
};

// What Session::set_settings takes, without the engine's types.
struct GuidanceSettings {
    int steps = 25;
    double audio_ratio = 5.0;
    double reference_ratio = 3.0;
    quint64 seed = 0;
    bool preview_decoder = false;  // the fast preview decoder instead of the full VAE decoder

    bool operator==(const GuidanceSettings& o) const {
        return steps == o.steps && audio_ratio == o.audio_ratio &&
               reference_ratio == o.reference_ratio && seed == o.seed &&
               preview_decoder == o.preview_decoder;
    }
    bool operator!=(const GuidanceSettings& o) const { return !(*this == o); }
};

// What Model::load takes; the worker reloads the model when it changes.
struct EngineConfig {
    QString checkpoint;
    QString device = QStringLiteral("cpu");
    int threads = 0;  // LibTorch intra-op threads; 0: all cores

    bool operator==(const EngineConfig& o) const {
        return checkpoint == o.checkpoint && device == o.device && threads == o.threads;
    }
    bool operator!=(const EngineConfig& o) const { return !(*this == o); }
};

// The portrait file and the square the preview cropped from it: the engine crops the same square
// at the model's resolution (the path `loopy render --crop` takes).
struct PortraitSource {
    QString path;
    QRect crop;
};

struct GenerationRequest {
    EngineConfig engine;
    PortraitSource portrait;
    std::shared_ptr<const std::vector<float>> audio;  // 16 kHz mono
};

struct LiveRequest {
    EngineConfig engine;
    PortraitSource portrait;
    QString microphone;  // PortAudio input name; "": the default input
    // Captured audio waiting for the Session beyond this is dropped, oldest first, and counted:
    // when inference is slower than real time the preview skips ahead to the newest audio
    // instead of lagging ever more. The Session itself only ever holds its next clip's audio.
    double max_pending_seconds = 0;  // 0: one clip and three frames (render::LiveOptions)
};

struct GenerationProgress {
    qint64 clip = 0;
    qint64 clips = 0;  // 0: unknown (live)
    int step = 0;
    int steps = 0;
    qint64 frames_done = 0;
    double elapsed_seconds = 0;
    double eta_seconds = -1;  // -1: unknown
};

struct RunReport {
    qint64 frames = 0;
    double video_seconds = 0;
    double wall_seconds = 0;  // from the first clip to the last
    bool cancelled = false;
    double realTimeFactor() const { return wall_seconds > 0 ? video_seconds / wall_seconds : 0; }
};

// Live-mode counters, published by the inference thread.
struct LiveStats {
    QString device;
    double captured_seconds = 0;   // audio the device delivered
    double pushed_seconds = 0;     // 16 kHz audio given to the Session
    double discarded_seconds = 0;  // dropped by the pending-audio bound (the oldest audio)
    double overflow_seconds = 0;   // lost because the capture ring was full (the newest audio)
    qint64 frames = 0;             // generated
    double generated_fps = 0;      // frames per second of generation time (recent clips)
    double real_time_factor = 0;   // generated_fps / 25
    float peak = 0;                // loudest sample given to the Session: did sound reach it
    int clip_steps = 0;            // DDIM steps the last clip ran with
    bool behind = false;           // audio was discarded in the last few seconds
};

// A generated live frame, stamped with when the newest audio sample its clip needed was captured:
// the start of the microphone-to-display latency.
struct LiveFrame {
    QImage image;
    qint64 index = 0;
    std::chrono::steady_clock::time_point audio_captured{};
    // Generated after Stop, from audio captured before it: not live, so not timed for latency.
    bool after_stop = false;
};

// The bounded hand-off of live frames to the UI thread: when the UI falls behind, the oldest
// frames are dropped and counted (a preview wants the newest frame). Offline frames never pass
// through it (they are all kept, for export).
class LiveFrameQueue {
  public:
    explicit LiveFrameQueue(std::size_t capacity) : capacity_(capacity) {}
    // Returns true when the queue was empty before (the consumer needs a nudge).
    bool push(LiveFrame frame);
    std::optional<LiveFrame> pop();
    void clear();
    std::size_t size() const;
    std::size_t capacity() const { return capacity_; }
    quint64 dropped() const { return dropped_.load(); }

  private:
    mutable std::mutex mutex_;
    std::deque<LiveFrame> frames_;
    std::size_t capacity_;
    std::atomic<quint64> dropped_{0};
};

class EngineWorker : public QObject {
    Q_OBJECT
  public:
    explicit EngineWorker(QObject* parent = nullptr);
    ~EngineWorker() override;  // cancels the job and joins the inference thread

    static bool cudaAvailable();
    static int hardwareThreads();
    // Whether the checkpoint file holds a fast preview decoder (reads its header only; false
    // for a missing or unreadable file).
    static bool hasPreviewDecoder(const QString& checkpoint);
    // The guidance ratios the checkpoint recommends (its metadata; nothing for an unreadable file).
    static std::optional<RecommendedGuidance> recommendedGuidance(const QString& checkpoint);
    static constexpr int kFps = 25;
    static constexpr int kSampleRate = 16000;

    // --- UI thread: jobs run one at a time on the inference thread; false if one is running ---
    bool generate(const GenerationRequest& request);
    bool startLive(const LiveRequest& request);
    bool busy() const { return busy_.load(); }

    // --- any thread ---
    // The running Session gets these from its next clip; the next Session starts with them.
    void setGuidance(const GuidanceSettings& settings);
    GuidanceSettings guidance() const;
    // The settings the current (or last) Session holds, read back from it: what the engine got.
    std::optional<GuidanceSettings> sessionSettings() const;
    void cancel();    // the job ends at its next DDIM step; nothing half-done is emitted
    void stopLive();  // live: stop capturing, generate what was captured, finish
    LiveFrameQueue& liveFrames() { return live_frames_; }

  Q_SIGNALS:
    void modelLoaded(const QString& summary);
    void frameGenerated(const QImage& frame, qint64 index);  // offline: every frame
    void progressed(const loopy::ui::GenerationProgress& progress);
    void generationFinished(const loopy::ui::RunReport& report);
    void liveStarted(const QString& device);
    void liveFramesReady();  // frames wait in liveFrames()
    void liveStatsChanged(const loopy::ui::LiveStats& stats);
    void liveFinished(const loopy::ui::RunReport& report, const loopy::ui::LiveStats& stats);
    void failed(const QString& message);

  private:
    struct Engine;  // the loaded Model: inference thread only
    class LiveRun;

    bool submit(std::function<void()> job);
    void runGeneration(const GenerationRequest& request);
    void generateOffline(const GenerationRequest& request, RunReport& report);
    void runLive(const LiveRequest& request);
    std::shared_ptr<Model> loadModel(const EngineConfig& config);
    void publishSession(const std::shared_ptr<Session>& session);
    void unpublishSession();

    QThread thread_;
    QObject* context_ = nullptr;  // lives on thread_: queued jobs run there
    std::unique_ptr<Engine> engine_;
    std::atomic<bool> busy_{false};
    std::atomic<bool> cancel_{false};
    std::atomic<bool> stop_live_{false};
    LiveFrameQueue live_frames_{24};  // one second of video

    mutable std::mutex guidance_mutex_;  // guards the three below
    GuidanceSettings guidance_;
    std::optional<GuidanceSettings> session_settings_;
    std::shared_ptr<Session> session_;  // the running Session, for setGuidance() and cancel()
};

}  // namespace loopy::ui

Q_DECLARE_METATYPE(loopy::ui::GenerationProgress)
Q_DECLARE_METATYPE(loopy::ui::RunReport)
Q_DECLARE_METATYPE(loopy::ui::LiveStats)
