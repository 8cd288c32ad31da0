#pragma once
// Live microphone capture through PortAudio. The PortAudio callback (the capture thread) only
// downmixes into a preallocated buffer and writes to a SampleRing: no lock, no allocation. The
// consumer (the inference thread) calls read_16k(), which resamples to 16 kHz mono for the audio
// encoder. See docs/live-audio.md.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "audio/devices.h"

namespace loopy::audio {

struct MicrophoneOptions {
    int device_index = -1;     // >= 0: this PortAudio device index
    std::string device_name;   // else, if set: the input whose name matches (exact, then substring,
                               // case-insensitive); neither: the default input
    int sample_rate = 0;       // 0: the device's default rate, else 48 kHz, else 16 kHz
    int channels = 0;          // 0: mono if the device offers it, else all its channels, downmixed
    double ring_seconds = 10;  // capture ring capacity: how far the consumer may fall behind
    double latency = 0;        // seconds; 0: the device's default high input latency (robust)
};

struct MicrophoneStats {
    std::uint64_t captured_frames = 0;   // frames the device delivered
    std::uint64_t dropped_frames = 0;    // lost because the ring was full (the newest)
    std::uint64_t discarded_frames = 0;  // skipped by the consumer (skip_to_latest, the oldest)
    std::uint64_t overflows = 0;         // callbacks PortAudio flagged paInputOverflow
    std::uint64_t read_frames = 0;       // frames the consumer took out of the ring
};

struct MicrophoneRead {
    std::size_t samples = 0;        // 16 kHz samples appended to `out`
    std::uint64_t first_index = 0;  // 16 kHz output index of the first appended sample
    bool has_time = false;          // false when nothing was read
    // When the newest device sample this read consumed was captured (estimated from the callback's
    // ADC timestamp): the start of the microphone-to-display latency.
    std::chrono::steady_clock::time_point newest_capture_time{};
};

// Chooses the input device for `options` among `devices` (pure; PortAudio's list in practice).
// Throws loopy::Error: "no microphone: ..." when there is no input at all; when the named or
// numbered device is missing, a message listing the available inputs.
DeviceInfo select_input_device(const std::vector<DeviceInfo>& devices,
                               const MicrophoneOptions& options);

class MicrophoneCapture {
  public:
    // Opens (but does not start) the stream. Throws loopy::Error (see select_input_device; also
    // when the device accepts none of the rates / channel counts tried).
    explicit MicrophoneCapture(const MicrophoneOptions& options = {});
    ~MicrophoneCapture();  // stops and closes the stream
    MicrophoneCapture(const MicrophoneCapture&) = delete;
    MicrophoneCapture& operator=(const MicrophoneCapture&) = delete;

    void start();
    void stop();  // returns once the callback has stopped; pending samples stay readable
    bool running() const;

    // --- consumer thread ---
    // Appends the newly captured audio, resampled to 16 kHz mono, to `out`.
    MicrophoneRead read_16k(std::vector<float>& out);
    // When inference falls behind: drops the oldest pending audio, keeping the newest
    // `keep_seconds`; returns the number of device frames dropped (also counted in stats()).
    std::size_t skip_to_latest(double keep_seconds);

    // --- any thread ---
    MicrophoneStats stats() const;
    const DeviceInfo& device() const;
    int sample_rate() const;       // the device stream's rate
    int channels() const;          // the device stream's channels (downmixed to mono)
    double input_latency() const;  // seconds, as PortAudio reports for the open stream
    // When the newest captured sample was recorded (steady clock); epoch if none yet.
    std::chrono::steady_clock::time_point newest_sample_time() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace loopy::audio
