#include "ui/live_view.h"

#include <algorithm>
#include <vector>

#include "render/frame_viewport.h"

namespace loopy::ui {
namespace {
constexpr std::size_t kLatencyWindow = 50;
constexpr int kFrameMs = 1000 / EngineWorker::kFps;
constexpr std::size_t kBacklogFrames = 12;  // one clip
}  // namespace

LiveView::LiveView(EngineWorker* worker, render::FrameViewport* viewport, QObject* parent)
    : QObject(parent), worker_(worker), viewport_(viewport) {
    pace_.setInterval(kFrameMs);
    pace_.setTimerType(Qt::PreciseTimer);
    connect(&pace_, &QTimer::timeout, this, &LiveView::showNext);
    connect(worker_, &EngineWorker::liveFramesReady, this, [this] {
        if (active_ && !pace_.isActive()) pace_.start();
    });
    connect(viewport_, &render::FrameViewport::frameDisplayed, this, &LiveView::onDisplayed);
}

void LiveView::start() {
    active_ = true;
    finished_ = false;
    stats_ = LiveStats();
    on_screen_.clear();
    latencies_.clear();
    last_latency_ = -1;
    frames_shown_ = 0;
    pace_.start();
    publish();
}

void LiveView::setStats(const LiveStats& stats) {
    stats_ = stats;
    publish();
}

void LiveView::finish(const LiveStats& stats) {
    stats_ = stats;
    finished_ = true;
    pace_.start();  // plays out what is queued; the first empty tick ends the run
    publish();
}

quint64 LiveView::framesDropped() const {
    return worker_->liveFrames().dropped();  // reset when a run starts
}

// Frames tagged index + 1 (0 means "untagged" to the viewport).
void LiveView::showNext() {
    auto frame = worker_->liveFrames().pop();
    if (!frame) {
        pace_.stop();  // liveFramesReady() restarts it
        if (finished_) active_ = false;
        return;
    }
    const quint64 tag = quint64(frame->index) + 1;
    if (!frame->after_stop) on_screen_[tag] = frame->audio_captured;
    while (on_screen_.size() > 64)
        on_screen_.erase(on_screen_.begin());
    viewport_->showFrame(frame->image, tag);
    ++frames_shown_;
    // Audio arrives at exactly 25 fps, so a backlog (a burst at the start, a slow paint) would
    // never drain at 25 fps: play it out twice as fast instead of keeping the extra latency.
    const bool backlog = worker_->liveFrames().size() > kBacklogFrames;
    pace_.setInterval(backlog ? kFrameMs / 2 : kFrameMs);
}

void LiveView::onDisplayed(quint64 tag) {
    const auto it = on_screen_.find(tag);
    if (it == on_screen_.end()) return;
    last_latency_ =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - it->second).count();
    on_screen_.erase(on_screen_.begin(), std::next(it));
    latencies_.push_back(last_latency_);
    if (latencies_.size() > kLatencyWindow) latencies_.pop_front();
    publish();
}

double LiveView::medianLatency() const {
    if (latencies_.empty()) return -1;
    std::vector<double> sorted(latencies_.begin(), latencies_.end());
    std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
    return sorted[sorted.size() / 2];
}

QString LiveView::statusText() const {
    QStringList parts;
    parts << (stats_.device.isEmpty() ? tr("Live") : tr("Live: %1").arg(stats_.device));
    parts << tr("%1 fps generated (%2x real time)")
                 .arg(stats_.generated_fps, 0, 'f', 1)
                 .arg(stats_.real_time_factor, 0, 'f', 2);
    if (last_latency_ >= 0)
        parts << tr("mic-to-display %1 ms (median %2 ms)")
                     .arg(qRound(last_latency_ * 1000))
                     .arg(qRound(medianLatency() * 1000));
    const double lost = stats_.discarded_seconds + stats_.overflow_seconds;
    QString audio = tr("audio dropped %1 s").arg(lost, 0, 'f', 1);
    if (stats_.behind) audio += tr(" (slower than real time: skipping to the newest audio)");
    parts << audio;
    parts << tr("frames dropped %1").arg(framesDropped());
    return parts.join(QStringLiteral(" · "));
}

void LiveView::publish() {
    Q_EMIT statusChanged(statusText());
}

}  // namespace loopy::ui
