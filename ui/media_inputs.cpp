#include "ui/media_inputs.h"

#include <QFileInfo>

#include "audio/audio_decoder.h"
#include "core/error.h"
#include "render/portrait.h"

namespace loopy::ui {

QStringList portrait_extensions() {
    return {QStringLiteral("png"), QStringLiteral("jpg"), QStringLiteral("jpeg"),
            QStringLiteral("webp"), QStringLiteral("bmp")};
}

QStringList audio_extensions() {
    return {QStringLiteral("wav"), QStringLiteral("mp3"),  QStringLiteral("m4a"),
            QStringLiteral("aac"), QStringLiteral("flac"), QStringLiteral("ogg"),
            QStringLiteral("oga"), QStringLiteral("opus"), QStringLiteral("mp4"),
            QStringLiteral("mkv"), QStringLiteral("mov"),  QStringLiteral("webm")};
}

MediaKind classify_media(const QString& path) {
    const QString suffix = QFileInfo(path).suffix().toLower();
    if (portrait_extensions().contains(suffix)) return MediaKind::Portrait;
    if (audio_extensions().contains(suffix)) return MediaKind::Audio;
    if (suffix == QLatin1String("safetensors")) return MediaKind::Checkpoint;
    return MediaKind::Unsupported;
}

QString open_dialog_filter() {
    const auto patterns = [](const QStringList& extensions) {
        QStringList out;
        for (const QString& e : extensions)
            out << QStringLiteral("*.") + e;
        return out.join(QLatin1Char(' '));
    };
    const QString images = patterns(portrait_extensions());
    const QString sounds = patterns(audio_extensions());
    return QStringLiteral("Portraits and audio (%1 %2);;Portraits (%1);;Audio (%2)")
        .arg(images, sounds);
}

PortraitPreview load_portrait_preview(const QString& path, int preview_size) {
    render::PortraitOptions options;
    options.size = preview_size;
    const auto portrait = render::load_portrait(path.toStdString(), options);
    PortraitPreview preview;
    preview.image = QImage(portrait.rgb.data(), portrait.width, portrait.height, portrait.width * 3,
                           QImage::Format_RGB888)
                        .copy();
    preview.crop =
        QRect(portrait.crop.x, portrait.crop.y, portrait.crop.width, portrait.crop.height);
    preview.face_found = portrait.face_found;
    preview.source_size = QSize(portrait.source_width, portrait.source_height);
    return preview;
}

LoadedAudio load_audio(const QString& path) {
    auto decoded = audio::decode_audio_file(path.toStdString(), 16000);
    if (decoded.samples.empty())
        throw Error(path.toStdString() + ": the audio stream holds no samples");
    LoadedAudio audio;
    audio.seconds = decoded.duration();
    audio.damaged = decoded.damaged;
    audio.samples = std::make_shared<const std::vector<float>>(std::move(decoded.samples));
    return audio;
}

}  // namespace loopy::ui
