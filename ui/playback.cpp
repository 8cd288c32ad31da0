#include "ui/playback.h"

#include <algorithm>
#include <cmath>
#include <exception>

#include "audio/player.h"
#include "core/log.h"

namespace loopy::ui {

Playback::Playback(QObject* parent) : QObject(parent) {
    timer_.setInterval(10);  // the frame follows the audio clock within a display refresh
    connect(&timer_, &QTimer::timeout, this, &Playback::tick);
}

Playback::~Playback() = default;

void Playback::setMedia(std::shared_ptr<const std::vector<float>> audio, qint64 frames, int fps) {
    pause();
    player_.reset();
    player_failed_ = false;
    audio_ = std::move(audio);
    frames_ = frames;
    fps_ = fps;
    current_ = 0;
    note_.clear();
}

// The output device opens at the first play, not before: a failure there is only a note.
bool Playback::ensurePlayer() {
    if (player_) return true;
    if (player_failed_ || !audio_ || audio_->empty()) return false;
    try {
        player_ = std::make_unique<audio::AudioPlayer>(*audio_, 16000);
    } catch (const std::exception& e) {
        player_failed_ = true;
        note_ = QStringLiteral("playing without sound: %1").arg(QString::fromUtf8(e.what()));
        logger()->warn("{}", note_.toStdString());
        return false;
    }
    return true;
}

void Playback::play() {
    if (frames_ <= 0 || playing_) return;
    if (current_ >= frames_ - 1) setCurrent(0);  // from the start again
    const double at = double(current_) / fps_;
    if (ensurePlayer()) {
        player_->seek(at);
        player_->play();
    } else {
        silent_start_ = at;
        silent_clock_.start();
    }
    playing_ = true;
    timer_.start();
    Q_EMIT playingChanged(true);
}

void Playback::pause() {
    if (!playing_) return;
    if (player_) player_->pause();
    playing_ = false;
    timer_.stop();
    Q_EMIT playingChanged(false);
}

void Playback::seekFrame(qint64 frame) {
    frame = std::clamp<qint64>(frame, 0, std::max<qint64>(frames_ - 1, 0));
    if (playing_) {
        if (player_) {
            player_->seek(double(frame) / fps_);
        } else {
            silent_start_ = double(frame) / fps_;
            silent_clock_.restart();
        }
    }
    setCurrent(frame);
}

double Playback::clockSeconds() const {
    if (player_) return std::max(0.0, player_->position() - player_->output_latency());
    return silent_start_ + silent_clock_.elapsed() / 1000.0;
}

void Playback::tick() {
    const double seconds = clockSeconds();
    const qint64 frame = std::min<qint64>(qint64(std::floor(seconds * fps_)), frames_ - 1);
    if (frame != current_) setCurrent(frame);
    const bool ended = player_ ? player_->finished() : seconds >= double(frames_) / fps_;
    if (ended) {
        setCurrent(frames_ - 1);
        pause();
    }
}

void Playback::setCurrent(qint64 frame) {
    if (frame == current_) return;
    current_ = frame;
    Q_EMIT frameChanged(frame);
}

}  // namespace loopy::ui
