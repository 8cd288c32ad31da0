// The capture ring: absolute indices, wrap-around, both drop policies, and two threads exchanging
// a counting sequence without loss or reordering.
#include <QtTest>

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "audio/sample_ring.h"
#include "test_util.h"

using loopy::audio::SampleRing;

namespace {
// The value of sample `i` of a counting sequence, exact in float (integers below 2^24).
float value_of(std::uint64_t i) {
    return static_cast<float>(i % (1u << 24));
}

std::vector<float> counting(std::uint64_t first, std::size_t n) {
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i)
        v[i] = value_of(first + i);
    return v;
}
}  // namespace

class SampleRingTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void zeroCapacityIsAnError() {
        QVERIFY(loopy::test::contains(loopy::test::error_of([] { SampleRing r(0); }), "capacity"));
    }

    void writeThenReadGivesIndices() {
        SampleRing ring(8);
        QCOMPARE(ring.capacity(), std::size_t(8));
        QCOMPARE(ring.available(), std::size_t(0));
        const auto in = counting(0, 5);
        QCOMPARE(ring.write(in.data(), 5), std::size_t(5));
        QCOMPARE(ring.available(), std::size_t(5));

        float out[8] = {};
        auto got = ring.read(out, 3);
        QCOMPARE(got.first_index, std::uint64_t(0));
        QCOMPARE(got.count, std::size_t(3));
        QCOMPARE(out[0], 0.0f);
        QCOMPARE(out[2], 2.0f);
        got = ring.read(out, 8);  // asks for more than there is
        QCOMPARE(got.first_index, std::uint64_t(3));
        QCOMPARE(got.count, std::size_t(2));
        QCOMPARE(out[1], 4.0f);
        got = ring.read(out, 8);
        QCOMPARE(got.count, std::size_t(0));
        QCOMPARE(got.first_index, std::uint64_t(5));
        QCOMPARE(ring.total_written(), std::uint64_t(5));
        QCOMPARE(ring.total_read(), std::uint64_t(5));
    }

    // Many laps of a small ring with odd block sizes: every sample comes back once, in order.
    void wrapsAround() {
        SampleRing ring(7);
        std::uint64_t written = 0, next = 0;
        float out[7];
        for (int lap = 0; lap < 200; ++lap) {
            const std::size_t n = 1 + lap % 7;
            const auto in = counting(written, n);
            QCOMPARE(ring.write(in.data(), n), n);
            written += n;
            const auto got = ring.read(out, 1 + (lap * 3) % 7);
            QCOMPARE(got.first_index, next);
            for (std::size_t i = 0; i < got.count; ++i)
                QCOMPARE(out[i], value_of(next + i));
            next += got.count;
            const auto rest = ring.read(out, 7);  // drain, so that the next write fits
            QCOMPARE(rest.first_index, next);
            for (std::size_t i = 0; i < rest.count; ++i)
                QCOMPARE(out[i], value_of(next + i));
            next += rest.count;
        }
        QCOMPARE(next, written);
        QCOMPARE(ring.dropped_samples(), std::uint64_t(0));
    }

    // A full ring keeps the oldest samples and drops (and counts) the newest.
    void producerDropsNewestWhenFull() {
        SampleRing ring(4);
        const auto in = counting(0, 6);
        QCOMPARE(ring.write(in.data(), 6), std::size_t(4));
        QCOMPARE(ring.dropped_samples(), std::uint64_t(2));
        QCOMPARE(ring.write(in.data(), 1), std::size_t(0));
        QCOMPARE(ring.dropped_samples(), std::uint64_t(3));
        float out[4];
        const auto got = ring.read(out, 4);
        QCOMPARE(got.count, std::size_t(4));
        for (int i = 0; i < 4; ++i)
            QCOMPARE(out[i], value_of(i));
        // Stored samples keep consecutive indices after a drop.
        const float more[] = {40, 41};
        QCOMPARE(ring.write(more, 2), std::size_t(2));
        const auto next = ring.read(out, 4);
        QCOMPARE(next.first_index, std::uint64_t(4));
        QCOMPARE(out[0], 40.0f);
    }

    // The consumer drops the oldest pending audio itself and learns the index it resumes at.
    void consumerDiscardsOldest() {
        SampleRing ring(16);
        const auto in = counting(0, 10);
        ring.write(in.data(), 10);
        QCOMPARE(ring.discard_oldest(3), std::size_t(3));
        QCOMPARE(ring.skip_to_latest(4), std::size_t(3));  // 7 pending -> keep 4
        QCOMPARE(ring.skip_to_latest(4), std::size_t(0));  // nothing more to skip
        QCOMPARE(ring.discarded_samples(), std::uint64_t(6));
        QCOMPARE(ring.discard_oldest(100), std::size_t(4));  // only 4 were pending
        QCOMPARE(ring.discarded_samples(), std::uint64_t(10));
        ring.write(in.data(), 2);
        float out[4];
        const auto got = ring.read(out, 4);
        QCOMPARE(got.first_index, std::uint64_t(10));
        QCOMPARE(got.count, std::size_t(2));
        QCOMPARE(ring.dropped_samples(), std::uint64_t(0));
    }

    // Two threads, a small ring, a producer that retries what did not fit: the consumer sees
    // every sample exactly once, with matching absolute indices.
    void twoThreadsNoLoss() { run_stress(1000, 10'000'000, /*retry=*/true); }

    // A ring that holds the whole stream: no retry needed, nothing dropped.
    void twoThreadsBigRingNeverDrops() { run_stress(600'000, 500'000, /*retry=*/false); }

    // A small ring and a producer that never waits: samples are dropped, but what arrives is in
    // order with consecutive indices, and read + dropped accounts for every sample.
    void twoThreadsDropsAreCounted() {
        SampleRing ring(256);
        constexpr std::uint64_t kTotal = 1'000'000;
        std::atomic<bool> done{false};
        std::thread producer([&] {
            std::vector<float> block(97);
            for (std::uint64_t i = 0; i < kTotal; i += block.size()) {
                const std::size_t n = std::min<std::uint64_t>(block.size(), kTotal - i);
                for (std::size_t k = 0; k < n; ++k)
                    block[k] = value_of(i + k);
                ring.write(block.data(), n);
            }
            done = true;
        });
        std::vector<float> out(64);
        std::uint64_t next = 0;
        float last = -1;
        bool ordered = true;
        for (;;) {
            const bool finished = done.load();
            const auto got = ring.read(out.data(), out.size());
            ordered = ordered && got.first_index == next;
            for (std::size_t k = 0; k < got.count; ++k) {
                ordered = ordered && out[k] > last;  // increasing: gaps allowed, no reordering
                last = out[k];
            }
            next += got.count;
            if (finished && got.count == 0) break;
        }
        producer.join();
        QVERIFY(ordered);
        QCOMPARE(next + ring.dropped_samples(), kTotal);
    }

  private:
    static void run_stress(std::size_t capacity, std::uint64_t total, bool retry) {
        SampleRing ring(capacity);
        std::atomic<bool> quit{false};  // a failing consumer stops reading: release the producer
        std::thread producer([&] {
            std::mt19937 rng(1);
            std::vector<float> block(512);
            for (std::uint64_t i = 0; i < total;) {
                const std::size_t n = std::min<std::uint64_t>(1 + rng() % 512, total - i);
                for (std::size_t k = 0; k < n; ++k)
                    block[k] = value_of(i + k);
                std::size_t put = ring.write(block.data(), n);
                while (retry && put < n && !quit) {
                    std::this_thread::yield();
                    put += ring.write(block.data() + put, n - put);
                }
                i += n;
            }
        });
        std::mt19937 rng(2);
        std::vector<float> out(700);
        std::uint64_t next = 0;
        bool ok = true;
        while (next < total && ok) {
            const auto got = ring.read(out.data(), 1 + rng() % out.size());
            ok = got.first_index == next;
            for (std::size_t k = 0; k < got.count && ok; ++k)
                ok = out[k] == value_of(next + k);
            next += got.count;
            if (got.count == 0) std::this_thread::yield();
        }
        quit = true;
        producer.join();
        QVERIFY2(ok, qPrintable(QString("discontinuity at sample %1").arg(next)));
        QCOMPARE(next, total);
        // A retried write counts what it refused as dropped: only the big ring must show none.
        if (!retry) QCOMPARE(ring.dropped_samples(), std::uint64_t(0));
        QCOMPARE(ring.total_written(), total);
    }
};

QTEST_APPLESS_MAIN(SampleRingTest)
#include "test_sample_ring.moc"
