#include "audio/sample_ring.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace loopy::audio {

namespace {
constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr auto kAcquire = std::memory_order_acquire;
constexpr auto kRelease = std::memory_order_release;
}  // namespace

SampleRing::SampleRing(std::size_t capacity) : capacity_(capacity) {
    if (capacity == 0) throw Error("sample ring: capacity must be positive");
    buffer_ = std::make_unique<float[]>(capacity);  // zeroed; no allocation after this
}

std::size_t SampleRing::write(const float* samples, std::size_t n) noexcept {
    // Only this thread moves write_pos_: a relaxed load of it is exact. The acquire on read_pos_
    // makes the consumer's reads of the slots it released happen before we overwrite them.
    const std::uint64_t w = write_pos_.load(kRelaxed);
    const std::uint64_t r = read_pos_.load(kAcquire);
    const std::size_t space = capacity_ - static_cast<std::size_t>(w - r);
    const std::size_t count = std::min(n, space);
    if (count < n) dropped_.fetch_add(n - count, kRelaxed);
    if (count == 0) return 0;

    const std::size_t start = static_cast<std::size_t>(w % capacity_);
    const std::size_t first = std::min(count, capacity_ - start);  // up to the end of the buffer
    std::memcpy(buffer_.get() + start, samples, first * sizeof(float));
    std::memcpy(buffer_.get(), samples + first, (count - first) * sizeof(float));
    write_pos_.store(w + count, kRelease);  // publishes the samples
    return count;
}

SampleRing::ReadResult SampleRing::read(float* out, std::size_t max) noexcept {
    const std::uint64_t r = read_pos_.load(kRelaxed);
    const std::uint64_t w = write_pos_.load(kAcquire);  // the samples up to w are visible
    const std::size_t count = std::min(max, static_cast<std::size_t>(w - r));
    if (count > 0) {
        const std::size_t start = static_cast<std::size_t>(r % capacity_);
        const std::size_t first = std::min(count, capacity_ - start);
        std::memcpy(out, buffer_.get() + start, first * sizeof(float));
        std::memcpy(out + first, buffer_.get(), (count - first) * sizeof(float));
        read_pos_.store(r + count, kRelease);  // hands the slots back to the producer
    }
    return {r, count};
}

std::size_t SampleRing::discard_oldest(std::size_t n) noexcept {
    const std::uint64_t r = read_pos_.load(kRelaxed);
    const std::uint64_t w = write_pos_.load(kAcquire);
    const std::size_t count = std::min(n, static_cast<std::size_t>(w - r));
    if (count > 0) {
        read_pos_.store(r + count, kRelease);
        discarded_.fetch_add(count, kRelaxed);
    }
    return count;
}

std::size_t SampleRing::skip_to_latest(std::size_t keep) noexcept {
    const std::size_t pending = available();
    return pending > keep ? discard_oldest(pending - keep) : 0;
}

std::size_t SampleRing::available() const noexcept {
    const std::uint64_t r = read_pos_.load(kAcquire);
    const std::uint64_t w = write_pos_.load(kAcquire);
    return w > r ? static_cast<std::size_t>(w - r) : 0;  // another thread's snapshot may lag
}

std::uint64_t SampleRing::total_written() const noexcept {
    return write_pos_.load(kAcquire);
}

std::uint64_t SampleRing::total_read() const noexcept {
    return read_pos_.load(kAcquire);
}

std::uint64_t SampleRing::dropped_samples() const noexcept {
    return dropped_.load(kRelaxed);
}

std::uint64_t SampleRing::discarded_samples() const noexcept {
    return discarded_.load(kRelaxed);
}

}  // namespace loopy::audio
