#pragma once
// Test fixtures for the live audio path on a machine without a sound card (CI).
//
// VirtualMicrophone: a private PulseAudio daemon (own runtime dir and socket, so it never touches
// a desktop's daemon) with a null sink "vmic"; the sink's monitor is the default source. The test
// process reaches it the way the app would: PortAudio -> ALSA "default" -> ALSA's pulse plugin.
// Speech comes from espeak-ng and is played into the sink with paplay.
//
// NoAudioDevices: while it lives PortAudio sees no device at all.
#include <QByteArray>
#include <QProcess>
#include <QString>
#include <QTemporaryDir>

#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace loopy::test {

// Sets environment variables for its lifetime, then restores their previous values.
class ScopedEnv {
  public:
    ScopedEnv() = default;
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;
    ~ScopedEnv();
    void set(const char* name, const QByteArray& value);

  private:
    std::vector<std::pair<QByteArray, std::optional<QByteArray>>> saved_;
};

class VirtualMicrophone {
  public:
    static constexpr const char* kSink = "vmic";

    // The programs the fixture needs that are missing, e.g. "espeak-ng" ("" when all are there).
    static QString missing_programs();

    // Starts the daemon and routes this process's PortAudio to it. Throws std::runtime_error,
    // with the daemon's log, when it does not come up.
    VirtualMicrophone();
    ~VirtualMicrophone();  // stops the daemon (the one it started) and restores the environment
    VirtualMicrophone(const VirtualMicrophone&) = delete;
    VirtualMicrophone& operator=(const VirtualMicrophone&) = delete;

    // Writes `text` spoken by espeak-ng to <dir>/<name>.wav and returns the path.
    QString speak(const QString& text, const QString& name);
    // Plays a wav file into the sink (paplay -d vmic), without waiting for it to end.
    void play(const QString& wav);
    // Waits up to `timeout_ms` for that playback to end: true once paplay has exited. Throws
    // std::runtime_error if paplay failed.
    bool wait_played(int timeout_ms);
    QString log() const;  // the daemon's log, for failure messages

  private:
    QString run(const QString& program, const QStringList& args, int timeout_ms = 10000) const;
    void start_daemon();
    void stop_daemon();
    void route_alsa_to_pulse();

    QTemporaryDir dir_;
    QString socket_;
    qint64 pid_ = 0;  // the daemon this fixture started
    ScopedEnv env_;
    std::unique_ptr<QProcess> player_;
};

// PortAudio sees no device while this lives: ALSA gets a configuration whose only device cannot
// open (an empty one makes PortAudio 19.6 abort on an assertion), PulseAudio is unreachable and
// JACK is not started. Takes effect at the next PortAudio initialisation.
class NoAudioDevices {
  public:
    NoAudioDevices();

  private:
    QTemporaryDir dir_;
    ScopedEnv env_;
};

}  // namespace loopy::test

// For Qt Test functions: skips when the fixture's programs are missing, fails (with the daemon's
// log) when it breaks.
#define START_VIRTUAL_MIC(vm)                                                                   \
    std::unique_ptr<VirtualMicrophone> vm;                                                      \
    if (const QString missing = VirtualMicrophone::missing_programs(); !missing.isEmpty())      \
        QSKIP(qPrintable("no virtual microphone: " + missing +                                  \
                         " not installed (packages pulseaudio, pulseaudio-utils, espeak-ng)")); \
    try {                                                                                       \
        vm = std::make_unique<VirtualMicrophone>();                                             \
    } catch (const std::exception& e) {                                                         \
        QFAIL(e.what());                                                                        \
    }
