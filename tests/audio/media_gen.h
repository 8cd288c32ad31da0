#pragma once
// Test inputs made with FFmpeg's own encoders: tones in any container, channel count and rate.
#include <string>
#include <vector>

namespace loopy::test {

struct Tone {
    double frequency = 440;
    double seconds = 1.0;
    int sample_rate = 44100;
    int channels = 1;
    double amplitude = 0.5;
    double frequency2 = 0;  // optional second tone, mixed in
    double amplitude2 = 0;
    bool first_channel_only = false;  // the other channels silent
};

bool has_encoder(const char* name);

// Encodes `tone` with the named encoder into the container the file name implies (.wav, .mp3,
// .flac, .ogg, .opus, .m4a, .mkv...). Throws std::runtime_error on failure.
void write_tone(const std::string& path, const char* encoder, const Tone& tone);

// Writes 16-bit PCM WAV by hand (fast, for long files), mono.
void write_wav_s16(const std::string& path, int sample_rate, double seconds, double frequency);

// Signal checks.
double zero_crossing_frequency(const std::vector<float>& x, int sample_rate);
double goertzel_amplitude(const std::vector<float>& x, int sample_rate, double frequency);
double peak(const std::vector<float>& x);
std::vector<float> middle(const std::vector<float>& x, double fraction);

}  // namespace loopy::test
