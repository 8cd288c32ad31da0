#pragma once
// Reads an MP4 (or any video FFmpeg opens) back: what tests, and the app's tests, check about
// what the writer produced. Decodes every frame, so it is meant for short videos.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace loopy::render {

struct VideoProbe {
    int width = 0;
    int height = 0;
    std::string video_codec;    // e.g. "h264"
    std::string pixel_format;   // e.g. "yuv420p"
    double fps = 0;             // the stream's average frame rate
    int frame_count = 0;        // frames actually decoded
    double video_duration = 0;  // seconds, as the container declares it

    std::string audio_codec;  // "" when the file has no audio stream
    int audio_sample_rate = 0;
    int audio_channels = 0;
    double audio_duration = 0;       // seconds, as the container declares it
    std::int64_t audio_samples = 0;  // decoded, after the container's encoder-delay trim
    double decoded_audio_duration() const {
        return audio_sample_rate > 0 ? static_cast<double>(audio_samples) / audio_sample_rate : 0.0;
    }

    // Packed RGB24, width * height * 3 bytes, converted with the stream's colour tags.
    std::vector<std::uint8_t> first_frame_rgb;
    std::vector<std::uint8_t> last_frame_rgb;

    bool index_first = false;  // 'moov' before 'mdat' (+faststart); false for other containers
};

// Throws loopy::Error naming the file if it cannot be opened or has no video stream.
VideoProbe probe_video(const std::string& path);

// Decodes every frame of the first video stream, in order, to packed RGB24 (width * height * 3
// bytes). Returns the number of frames; throws like probe_video. For training data and
// evaluation: frames are handed over one at a time, never all held.
using RgbFrameCallback =
    std::function<void(const std::vector<std::uint8_t>& rgb, int width, int height)>;
int read_video_frames(const std::string& path, const RgbFrameCallback& on_frame);

}  // namespace loopy::render
