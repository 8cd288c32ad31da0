#pragma once
// Export: the generated frames (FrameStore) and the input audio into an MP4 with the CLI's writer
// (render::VideoWriter: H.264 CRF 18 "medium" + AAC), on a thread of its own so the window stays
// live. Every frame is written (export never drops). The writer works under a temporary name and
// renames at the end: an error or a cancel leaves no half-written file and an existing file
// untouched.
#include <QObject>
#include <QString>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

namespace loopy::ui {

class FrameStore;

struct ExportRequest {
    QString path;
    bool overwrite = false;  // replace an existing file (only after the user confirmed it)
    std::shared_ptr<const FrameStore> frames;
    std::shared_ptr<const std::vector<float>> audio;  // 16 kHz mono; may be null (no track)
    int fps = 25;
    int audio_rate = 16000;
};

class ExportJob : public QObject {
    Q_OBJECT
  public:
    explicit ExportJob(ExportRequest request, QObject* parent = nullptr);
    ~ExportJob() override;  // cancels and joins

    void start();
    void cancel() { cancel_.store(true); }
    const ExportRequest& request() const { return request_; }

  Q_SIGNALS:
    void progressed(qint64 frames_done, qint64 frames_total);
    // ok: the file is in place; else `error` says why ("cancelled" after cancel()).
    void finished(bool ok, const QString& error);

  private:
    void run();

    ExportRequest request_;
    std::atomic<bool> cancel_{false};
    std::thread thread_;
};

}  // namespace loopy::ui
