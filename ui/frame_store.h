#pragma once
// The frames of the last generation, kept in a temporary file (RGB24, one after another) so that
// playback, scrubbing and export can read any of them while a long video needs no more memory
// than a short one. Thread-safe: the UI thread appends and scrubs, the export thread reads.
#include <QImage>
#include <QSize>
#include <QTemporaryFile>

#include <mutex>

namespace loopy::ui {

class FrameStore {
  public:
    FrameStore();
    FrameStore(const FrameStore&) = delete;
    FrameStore& operator=(const FrameStore&) = delete;

    // Appends a frame (converted to RGB24); every frame must have the first one's size. False,
    // with error() set, when the file cannot be written (disk full) or the size differs.
    bool append(const QImage& frame);
    // Frame `index` (RGB888); a null image when out of range or unreadable.
    QImage frame(qint64 index) const;
    qint64 count() const;
    QSize size() const;
    QString error() const;

  private:
    qint64 frameBytes() const { return qint64(size_.width()) * size_.height() * 3; }

    mutable std::mutex mutex_;
    mutable QTemporaryFile file_;
    QSize size_;
    qint64 count_ = 0;
    QString error_;
};

}  // namespace loopy::ui
