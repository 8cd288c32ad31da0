#pragma once
// MP4 output: H.264 (libx264, yuv420p, constant-quality CRF) plus an optional AAC audio track,
// muxed by libavformat with +faststart. Qt-free; part of loopy_video.
//
// The file is written under a temporary name beside the target and renamed into place by
// finish(): after an error, a cancel (the writer destroyed without finish()) or a crash, the
// target is the old file or nothing, never a half-written video.
//
// Audio is mono float at any rate, resampled to 48 kHz AAC-LC. The audio track always lasts
// exactly as long as the video (N frames / fps): audio past the end is dropped, missing audio is
// padded with silence.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace loopy::render {

enum class PixelLayout { RGB24, RGBA };

struct VideoWriterOptions {
    int width = 0;   // even, > 0
    int height = 0;  // even, > 0
    int fps = 25;
    int crf = 18;                   // libx264 quality: 0 lossless .. 51 worst; 18 looks lossless
    std::string preset = "medium";  // libx264 speed/size trade-off ("ultrafast" .. "veryslow")
    bool overwrite = false;         // replace an existing file at the path
    // Rate of the audio that add_audio() will stream, for callers that add audio only after the
    // first frame. 0: there is an audio track only if audio arrives before the first frame.
    int audio_sample_rate = 0;
    int audio_bitrate = 128000;
};

class VideoWriter {
  public:
    // Validates the options and opens the encoders; throws loopy::Error (naming the path) for odd
    // sizes, an existing file without overwrite, an unwritable folder, or a missing encoder.
    VideoWriter(std::string path, VideoWriterOptions options);
    ~VideoWriter();  // without finish(): the temporary file is removed, nothing is output
    VideoWriter(const VideoWriter&) = delete;
    VideoWriter& operator=(const VideoWriter&) = delete;

    // One frame of width x height pixels; `stride` is bytes per row (0: tightly packed).
    void add_frame(const std::uint8_t* pixels, int stride = 0,
                   PixelLayout layout = PixelLayout::RGB24);

    // Audio, appended in order. All of it must share one rate, and it must start before the
    // first frame unless options.audio_sample_rate declared the track up front.
    void add_audio(const float* samples, std::size_t count, int sample_rate);
    void set_audio(const std::vector<float>& samples, int sample_rate) {
        add_audio(samples.data(), samples.size(), sample_rate);
    }

    // Flushes the encoders, writes the index and renames the file into place. After an error
    // thrown by any call, the writer is unusable and its destructor cleans up.
    void finish();

    int frame_count() const;
    std::string video_encoder_name() const;  // "libx264", or FFmpeg's fallback H.264 encoder
    int audio_encoder_rate() const;          // 48000; 0 until an audio track exists
    const std::string& path() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    template <class F>
    void guarded(F&& body);
};

}  // namespace loopy::render
