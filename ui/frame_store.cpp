#include "ui/frame_store.h"

#include <QDir>

namespace loopy::ui {

FrameStore::FrameStore()
    : file_(QDir::temp().filePath(QStringLiteral("loopy-frames-XXXXXX.rgb"))) {}

bool FrameStore::append(const QImage& frame) {
    const QImage rgb = frame.convertToFormat(QImage::Format_RGB888);
    std::lock_guard<std::mutex> lock(mutex_);
    if (count_ == 0) {
        if (!file_.isOpen() && !file_.open()) {
            error_ = QStringLiteral("cannot create a temporary file for the frames: %1")
                         .arg(file_.errorString());
            return false;
        }
        size_ = rgb.size();
    }
    if (rgb.size() != size_) {
        error_ = QStringLiteral("frame size changed");
        return false;
    }
    file_.seek(count_ * frameBytes());
    for (int y = 0; y < rgb.height(); ++y) {
        const auto row = reinterpret_cast<const char*>(rgb.constScanLine(y));
        if (file_.write(row, rgb.width() * 3) != rgb.width() * 3) {
            error_ = QStringLiteral("cannot store a frame: %1").arg(file_.errorString());
            return false;
        }
    }
    ++count_;
    return true;
}

QImage FrameStore::frame(qint64 index) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (index < 0 || index >= count_) return {};
    QImage image(size_, QImage::Format_RGB888);
    if (!file_.seek(index * frameBytes())) return {};
    for (int y = 0; y < image.height(); ++y) {
        const qint64 want = image.width() * 3;
        if (file_.read(reinterpret_cast<char*>(image.scanLine(y)), want) != want) return {};
    }
    return image;
}

qint64 FrameStore::count() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return count_;
}

QSize FrameStore::size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return size_;
}

QString FrameStore::error() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
}

}  // namespace loopy::ui
