#include "ui/export_job.h"

#include <exception>

#include "render/video_writer.h"
#include "ui/frame_store.h"

namespace loopy::ui {

ExportJob::ExportJob(ExportRequest request, QObject* parent)
    : QObject(parent), request_(std::move(request)) {}

ExportJob::~ExportJob() {
    cancel();
    if (thread_.joinable()) thread_.join();
}

void ExportJob::start() {
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void ExportJob::run() {
    const FrameStore& frames = *request_.frames;
    const qint64 total = frames.count();
    try {
        if (total == 0) throw std::runtime_error("nothing to export: no frames were generated");
        render::VideoWriterOptions options;
        options.width = frames.size().width();
        options.height = frames.size().height();
        options.fps = request_.fps;
        options.overwrite = request_.overwrite;
        if (request_.audio) options.audio_sample_rate = request_.audio_rate;
        // The writer's destructor, without finish(), removes its temporary file.
        render::VideoWriter writer(request_.path.toStdString(), options);
        if (request_.audio)
            writer.add_audio(request_.audio->data(), request_.audio->size(), request_.audio_rate);
        for (qint64 i = 0; i < total; ++i) {
            if (cancel_.load()) {
                Q_EMIT finished(false, QStringLiteral("cancelled"));
                return;
            }
            const QImage frame = frames.frame(i);
            if (frame.isNull()) throw std::runtime_error("cannot read back a generated frame");
            writer.add_frame(frame.constBits(), static_cast<int>(frame.bytesPerLine()));
            Q_EMIT progressed(i + 1, total);
        }
        writer.finish();
    } catch (const std::exception& e) {
        Q_EMIT finished(false, QString::fromStdString(e.what()));
        return;
    }
    Q_EMIT finished(true, QString());
}

}  // namespace loopy::ui
