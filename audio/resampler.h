#pragma once
// Streaming mono float resampler (libswresample) for live input: a microphone delivers e.g. 48 kHz
// blocks of any size; the audio encoder wants 16 kHz. Keeps filter state between blocks, so the
// output of many pushes equals the output of one push of the whole signal.
#include <cstddef>
#include <memory>
#include <vector>

struct SwrContext;

namespace loopy::audio {

class StreamResampler {
  public:
    // Throws loopy::Error for a non-positive rate.
    StreamResampler(int in_rate, int out_rate);
    ~StreamResampler();
    StreamResampler(const StreamResampler&) = delete;
    StreamResampler& operator=(const StreamResampler&) = delete;
    StreamResampler(StreamResampler&&) noexcept;
    StreamResampler& operator=(StreamResampler&&) noexcept;

    // The output samples that `n` more input samples complete (a few stay in the filter).
    std::vector<float> push(const float* samples, std::size_t n);
    void push(const float* samples, std::size_t n, std::vector<float>& out);  // appends to `out`
    // The samples still in the filter, at the end of a stream; the resampler can then be reused.
    std::vector<float> flush();

    int in_rate() const { return in_rate_; }
    int out_rate() const { return out_rate_; }

  private:
    struct SwrFree {
        void operator()(SwrContext* s) const;
    };
    std::unique_ptr<SwrContext, SwrFree> swr_;
    int in_rate_;
    int out_rate_;
};

}  // namespace loopy::audio
