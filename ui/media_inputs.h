#pragma once
// Loading what the user drops or opens: a portrait (decoded and face-cropped with the engine's own
// render/portrait.h, so the preview is the crop the model gets) or an audio file (decoded to 16 kHz
// mono with audio/audio_decoder.h). Qt and plain C++ only.
#include <QImage>
#include <QRect>
#include <QString>
#include <QStringList>

#include <memory>
#include <vector>

namespace loopy::ui {

enum class MediaKind { Portrait, Audio, Checkpoint, Unsupported };

// By file name extension (.safetensors: a Loopy checkpoint).
MediaKind classify_media(const QString& path);
QStringList portrait_extensions();  // "png", "jpg", ...
QStringList audio_extensions();     // "wav", "mp3", ...
QString open_dialog_filter();       // for QFileDialog: both kinds, then each

struct PortraitPreview {
    QImage image;  // the square crop, preview_size x preview_size
    QRect crop;    // the square in source pixels
    bool face_found = false;
    QSize source_size;
};

struct LoadedAudio {
    std::shared_ptr<const std::vector<float>> samples;  // 16 kHz mono
    double seconds = 0;
    bool damaged = false;  // only the readable part was decoded
};

// Both throw loopy::Error naming the file (missing, not an image / no audio stream, corrupt...).
PortraitPreview load_portrait_preview(const QString& path, int preview_size = 512);
LoadedAudio load_audio(const QString& path);

}  // namespace loopy::ui
