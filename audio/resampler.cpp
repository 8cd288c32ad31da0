#include "audio/resampler.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libswresample/swresample.h>
}

#include <algorithm>
#include <string>

#include "audio/ffmpeg_raii.h"
#include "core/error.h"

namespace loopy::audio {

void StreamResampler::SwrFree::operator()(SwrContext* s) const {
    swr_free(&s);
}

StreamResampler::StreamResampler(int in_rate, int out_rate)
    : in_rate_(in_rate), out_rate_(out_rate) {
    if (in_rate <= 0 || out_rate <= 0)
        throw Error("resampler: invalid rates " + std::to_string(in_rate) + " -> " +
                    std::to_string(out_rate));
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;  // not const: FFmpeg 5.1 swr_alloc_set_opts2()
    SwrContext* raw = nullptr;
    int err = swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_FLT, out_rate, &mono,
                                  AV_SAMPLE_FMT_FLT, in_rate, 0, nullptr);
    swr_.reset(raw);
    if (err >= 0) err = swr_init(raw);
    if (err < 0) throw Error("resampler: cannot start (" + ffmpeg::error_string(err) + ")");
}

StreamResampler::~StreamResampler() = default;
StreamResampler::StreamResampler(StreamResampler&&) noexcept = default;
StreamResampler& StreamResampler::operator=(StreamResampler&&) noexcept = default;

void StreamResampler::push(const float* samples, std::size_t n, std::vector<float>& out) {
    // swr takes int counts: feed very long inputs in slices.
    constexpr std::size_t kSlice = 1 << 20;
    do {
        const int count = static_cast<int>(std::min(n, kSlice));
        int capacity = swr_get_out_samples(swr_.get(), count);
        if (capacity < 0) throw Error("resampler: " + ffmpeg::error_string(capacity));
        if (!samples) capacity = std::max(capacity, 4096);  // room for the filter's tail
        const std::size_t old = out.size();
        out.resize(old + static_cast<std::size_t>(capacity));
        auto* dst = reinterpret_cast<uint8_t*>(out.data() + old);
        const auto* src = reinterpret_cast<const uint8_t*>(samples);
        const int got = swr_convert(swr_.get(), &dst, capacity, samples ? &src : nullptr, count);
        if (got < 0) {
            out.resize(old);
            throw Error("resampler: " + ffmpeg::error_string(got));
        }
        out.resize(old + static_cast<std::size_t>(got));
        if (!samples) return;  // a flush call
        samples += count;
        n -= static_cast<std::size_t>(count);
    } while (n > 0);
}

std::vector<float> StreamResampler::push(const float* samples, std::size_t n) {
    std::vector<float> out;
    if (n > 0) push(samples, n, out);
    return out;
}

std::vector<float> StreamResampler::flush() {
    std::vector<float> out;
    for (;;) {
        const std::size_t before = out.size();
        push(nullptr, 0, out);
        if (out.size() == before) break;
    }
    return out;
}

}  // namespace loopy::audio
