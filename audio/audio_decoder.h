#pragma once
// Decodes the audio of any file FFmpeg reads (wav, mp3, m4a/aac, flac, ogg/opus/vorbis, the audio
// stream of a video) to mono float32 at a chosen rate: what the audio encoder of the pipeline eats.
// Channels are downmixed with FFmpeg's standard matrix, normalised so that the mix cannot clip.
//
// Damaged files: a file that decodes at first and then breaks (a truncated download) yields the
// valid part and a logged warning; a file whose audio never decodes is an error.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace loopy::audio {

struct DecodedAudio {
    std::vector<float> samples;  // mono, in [-1, 1] for a non-clipping source
    int sample_rate = 0;         // of `samples`
    int source_sample_rate = 0;
    int source_channels = 0;
    double source_duration = 0;  // seconds, as the container declares it (0 if it does not)
    bool damaged = false;        // undecodable packets were skipped or the file ended early

    double duration() const {
        return sample_rate > 0 ? static_cast<double>(samples.size()) / sample_rate : 0.0;
    }
};

// Streams a file in chunks, so a long recording is never held whole. Throws loopy::Error (naming
// the file) when it cannot be opened, has no audio stream or its audio does not decode.
class AudioFileReader {
  public:
    explicit AudioFileReader(const std::string& path, int sample_rate = 16000);
    ~AudioFileReader();
    AudioFileReader(const AudioFileReader&) = delete;
    AudioFileReader& operator=(const AudioFileReader&) = delete;

    // Replaces `chunk` with the next samples, at most `max_samples` of them (fewer only at the
    // end). Returns false, with `chunk` empty, once the file is exhausted.
    bool read(std::vector<float>& chunk, std::size_t max_samples = 16000);

    int sample_rate() const;
    int source_sample_rate() const;
    int source_channels() const;
    double source_duration() const;
    bool damaged() const;
    const std::string& path() const;
    // The most resampled samples held inside the reader at once: bounded by the chunk size plus
    // one decoded packet, whatever the file's length (tests check this).
    std::size_t peak_buffered_samples() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The whole file at once (10 minutes at 16 kHz is 38 MB).
DecodedAudio decode_audio_file(const std::string& path, int sample_rate = 16000);

}  // namespace loopy::audio
