#pragma once
// Plays the generated frames with their audio. The clock is the audio: AudioPlayer::position()
// (what the output callback consumed) minus the output latency picks the frame on screen, so
// picture and sound stay together. Without an audio output the clock is a timer (silent
// playback, said in note()).
#include <QElapsedTimer>
#include <QObject>
#include <QString>
#include <QTimer>

#include <memory>
#include <vector>

namespace loopy::audio {
class AudioPlayer;
}

namespace loopy::ui {

class Playback : public QObject {
    Q_OBJECT
  public:
    explicit Playback(QObject* parent = nullptr);
    ~Playback() override;

    // New media: `frames` frames at `fps` and their 16 kHz audio (may be null). Stops playback.
    void setMedia(std::shared_ptr<const std::vector<float>> audio, qint64 frames, int fps = 25);
    void clear() { setMedia(nullptr, 0); }

    void play();
    void pause();
    void togglePlay() { playing() ? pause() : play(); }
    bool playing() const { return playing_; }
    void seekFrame(qint64 frame);
    qint64 currentFrame() const { return current_; }
    qint64 frameCount() const { return frames_; }
    QString note() const { return note_; }  // e.g. why playback is silent

  Q_SIGNALS:
    void frameChanged(qint64 frame);
    void playingChanged(bool playing);

  private:
    void tick();
    double clockSeconds() const;
    bool ensurePlayer();
    void setCurrent(qint64 frame);

    std::shared_ptr<const std::vector<float>> audio_;
    std::unique_ptr<audio::AudioPlayer> player_;
    bool player_failed_ = false;
    qint64 frames_ = 0;
    int fps_ = 25;
    qint64 current_ = 0;
    bool playing_ = false;
    QTimer timer_;
    QElapsedTimer silent_clock_;  // without an audio output
    double silent_start_ = 0;     // seconds at silent_clock_'s start
    QString note_;
};

}  // namespace loopy::ui
