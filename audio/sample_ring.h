#pragma once
// A preallocated single-producer / single-consumer lock-free ring of float samples, the hand-off
// between the real-time audio callback (producer) and the inference thread (consumer).
//
// Positions are absolute sample counters (uint64, never wrap in practice: 2^64 samples at 48 kHz
// is millions of years), so a reader always knows the index of each sample it gets.
//
// Drop policy, explicit on both sides:
//  - the producer never overwrites unread samples (that would race with the reader). When the
//    ring is full it stores what fits and drops the NEWEST samples, counted by dropped_samples().
//    Stored samples keep consecutive indices: a producer drop is a gap in the signal, reported by
//    the counter, not a gap in the indices.
//  - the consumer, when it falls behind, drops the OLDEST pending samples itself with
//    discard_oldest() / skip_to_latest(), counted by discarded_samples(). This is what the live
//    pipeline wants (fresh audio beats complete audio), and it keeps the producer from ever
//    reaching a full ring when the consumer is merely slow.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace loopy::audio {

class SampleRing {
  public:
    // Throws loopy::Error for a zero capacity.
    explicit SampleRing(std::size_t capacity);
    SampleRing(const SampleRing&) = delete;
    SampleRing& operator=(const SampleRing&) = delete;

    // --- producer (one thread; real-time safe: no lock, no allocation, no system call) ---
    // Stores as many of the `n` samples as fit and drops the rest. Returns the number stored.
    std::size_t write(const float* samples, std::size_t n) noexcept;

    // --- consumer (one thread) ---
    struct ReadResult {
        std::uint64_t first_index = 0;  // absolute index of out[0]
        std::size_t count = 0;
    };
    // Copies up to `max` of the oldest pending samples to `out`.
    ReadResult read(float* out, std::size_t max) noexcept;
    // Drops up to `n` of the oldest pending samples; returns how many were dropped.
    std::size_t discard_oldest(std::size_t n) noexcept;
    // Drops the oldest pending samples so that at most `keep` remain; returns how many.
    std::size_t skip_to_latest(std::size_t keep) noexcept;

    // --- any thread (snapshots; exact on the consumer thread) ---
    std::size_t capacity() const noexcept { return capacity_; }
    std::size_t available() const noexcept;
    std::uint64_t total_written() const noexcept;      // samples stored since construction
    std::uint64_t total_read() const noexcept;         // read position: samples read or discarded
    std::uint64_t dropped_samples() const noexcept;    // producer side, ring full
    std::uint64_t discarded_samples() const noexcept;  // consumer side, skipped

  private:
    std::unique_ptr<float[]> buffer_;
    std::size_t capacity_;
    // On separate cache lines: the producer writes one, the consumer the other.
    alignas(64) std::atomic<std::uint64_t> write_pos_{0};
    std::atomic<std::uint64_t> dropped_{0};
    alignas(64) std::atomic<std::uint64_t> read_pos_{0};
    std::atomic<std::uint64_t> discarded_{0};

    static_assert(std::atomic<std::uint64_t>::is_always_lock_free,
                  "the audio callback needs lock-free 64-bit atomics");
};

}  // namespace loopy::audio
