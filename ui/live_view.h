#pragma once
// The display side of live mode, on the UI thread: takes frames from the engine's bounded queue
// at 25 fps (a clip arrives as a burst of 12 frames; shown at once they would flash by and
// freeze), at 50 fps while more than a clip waits, measures microphone-to-display latency and
// writes the status line.
//
// Latency: each live frame carries the capture time of the newest audio sample its clip needed;
// when the viewport reports that frame on screen (after the buffer swap), latency = that moment
// minus the capture time. It includes the wait for audio, inference and the display queue. Frames
// generated after Stop (from audio captured before it) are shown but not timed.
#include <QObject>
#include <QString>
#include <QTimer>

#include <chrono>
#include <deque>
#include <map>

#include "ui/engine_worker.h"

namespace loopy::render {
class FrameViewport;
}

namespace loopy::ui {

class LiveView : public QObject {
    Q_OBJECT
  public:
    LiveView(EngineWorker* worker, render::FrameViewport* viewport, QObject* parent = nullptr);

    void start();  // a live run begins: counters reset, pacing on
    void setStats(const LiveStats& stats);
    void finish(const LiveStats& stats);  // the run ended: the queued frames still play out
    bool active() const { return active_; }

    qint64 framesShown() const { return frames_shown_; }
    quint64 framesDropped() const;  // by the preview queue (drop-oldest), this run
    double lastLatency() const { return last_latency_; }  // seconds; < 0: none measured yet
    double medianLatency() const;
    const LiveStats& stats() const { return stats_; }
    QString statusText() const;

  Q_SIGNALS:
    void statusChanged(const QString& text);

  private:
    void showNext();
    void onDisplayed(quint64 tag);
    void publish();

    EngineWorker* worker_;
    render::FrameViewport* viewport_;
    QTimer pace_;
    bool active_ = false;
    bool finished_ = false;
    LiveStats stats_;
    std::map<quint64, std::chrono::steady_clock::time_point> on_screen_;  // tag -> audio capture
    std::deque<double> latencies_;  // the recent ones, seconds
    double last_latency_ = -1;
    qint64 frames_shown_ = 0;
};

}  // namespace loopy::ui
