// The streaming resampler for live input: blocks of any size give the same signal as one block,
// with pitch and length kept.
#include <QtTest>

#include <cmath>

#include "audio/media_gen.h"
#include "audio/resampler.h"
#include "core/error.h"

namespace {
std::vector<float> sine(int rate, double seconds, double frequency) {
    std::vector<float> x(static_cast<std::size_t>(rate * seconds));
    for (std::size_t i = 0; i < x.size(); ++i)
        x[i] = 0.5f * static_cast<float>(std::sin(2 * M_PI * frequency * i / rate));
    return x;
}
}  // namespace

class ResamplerTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void blocksEqualOneShot_data() {
        QTest::addColumn<int>("in_rate");
        QTest::addColumn<int>("out_rate");
        QTest::newRow("48k->16k") << 48000 << 16000;
        QTest::newRow("44.1k->16k") << 44100 << 16000;
        QTest::newRow("8k->16k") << 8000 << 16000;
        QTest::newRow("16k->16k") << 16000 << 16000;
    }
    void blocksEqualOneShot() {
        QFETCH(int, in_rate);
        QFETCH(int, out_rate);
        const auto input = sine(in_rate, 1.0, 440);

        loopy::audio::StreamResampler whole(in_rate, out_rate);
        auto expected = whole.push(input.data(), input.size());
        const auto tail = whole.flush();
        expected.insert(expected.end(), tail.begin(), tail.end());

        loopy::audio::StreamResampler blocks(in_rate, out_rate);
        std::vector<float> got;
        const std::size_t sizes[] = {480, 1, 7, 4096, 333, 1024};
        std::size_t pos = 0;
        for (int i = 0; pos < input.size(); ++i) {
            const std::size_t n = std::min(sizes[i % 6], input.size() - pos);
            blocks.push(input.data() + pos, n, got);
            pos += n;
        }
        const auto rest = blocks.flush();
        got.insert(got.end(), rest.begin(), rest.end());

        QCOMPARE(got.size(), expected.size());
        for (std::size_t i = 0; i < got.size(); ++i)
            QVERIFY(std::abs(got[i] - expected[i]) < 1e-5f);
        QVERIFY2(std::abs(static_cast<long>(got.size()) - out_rate) <= 2,
                 qPrintable(QString::number(got.size())));
        const auto mid = loopy::test::middle(got, 0.8);
        QVERIFY(std::abs(loopy::test::zero_crossing_frequency(mid, out_rate) - 440) < 0.5);
    }

    void reusableAfterFlush() {
        loopy::audio::StreamResampler r(48000, 16000);
        const auto input = sine(48000, 0.5, 440);
        auto a = r.push(input.data(), input.size());
        auto tail = r.flush();
        auto b = r.push(input.data(), input.size());
        auto tail2 = r.flush();
        QCOMPARE(a.size() + tail.size(), b.size() + tail2.size());
    }

    void invalidRatesAreErrors() {
        QVERIFY_THROWS_EXCEPTION(loopy::Error, loopy::audio::StreamResampler(0, 16000));
        QVERIFY_THROWS_EXCEPTION(loopy::Error, loopy::audio::StreamResampler(48000, -1));
    }
};

QTEST_APPLESS_MAIN(ResamplerTest)
#include "test_resampler.moc"
