#pragma once
// Plays a mono float buffer through PortAudio's default output, for the GUI to play a generated
// video's audio in sync with its frames. position() counts the frames the output callback has
// actually consumed, so the video follows the audio clock rather than a timer.
#include <memory>
#include <vector>

namespace loopy::audio {

class AudioPlayer {
  public:
    // Opens the default output (not started). `samples` is mono at `sample_rate`; when the device
    // does not take that rate the buffer is resampled once, here, to the device's rate. Throws
    // loopy::Error ("no audio output: ...") when there is no output device.
    AudioPlayer(std::vector<float> samples, int sample_rate);
    ~AudioPlayer();
    AudioPlayer(const AudioPlayer&) = delete;
    AudioPlayer& operator=(const AudioPlayer&) = delete;

    // Starts (or resumes) playback; from the start again once it has finished.
    void play();
    // Playback pauses at once: the callback outputs silence and the position stays (the stream
    // keeps running, so that resuming costs no device start-up).
    void pause();
    bool playing() const;
    bool finished() const;  // reached the end (and paused itself)

    void seek(double seconds);  // clamped to [0, duration()]
    double position() const;    // seconds of the buffer the output callback has consumed
    double duration() const;
    // Seconds between the callback consuming a frame and it being heard (PortAudio's estimate):
    // the frame on screen should be the one at position() - output_latency().
    double output_latency() const;
    int device_rate() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace loopy::audio
