// The live loop shared by the GUI and `loopy bench live` (render/live_generator.h), driven by a
// file replayed at real-time pace. Assertions hold at any machine speed: slowness is forced
// where a test needs it, never measured.
#include <QtTest>

#include <thread>

#include "pipeline/tiny_model.h"
#include "render/live_generator.h"
#include "test_util.h"

using namespace loopy;

namespace {

constexpr double kRate = 16000;

struct Run {
    render::LiveCounters counters;
    std::vector<render::LiveFrameEvent> events;  // frame references are dangling: times only
    std::vector<int64_t> indices;
    std::vector<render::LiveClock::time_point> emitted;
};

std::shared_ptr<Session> micro_session() {
    static auto model = Model::from_network(test::random_network(test::micro_config()));
    const auto portrait = test::test_portrait(32);
    GenerationSettings settings;
    settings.steps = 1;
    return std::make_shared<Session>(model, portrait.data(), 32, 32, settings);
}

Run replay(double seconds, const std::function<void()>& per_frame = {},
           const std::function<bool(const Run&)>& stop = {}) {
    Run run;
    render::LiveGenerator live(render::replay_source(test::test_audio(seconds)), micro_session());
    render::LiveCallbacks callbacks;
    callbacks.on_frame = [&](const render::LiveFrameEvent& e) {
        run.events.push_back(e);
        run.indices.push_back(e.frame.index);
        run.emitted.push_back(render::LiveClock::now());
        if (per_frame) per_frame();
    };
    callbacks.stop_requested = [&] { return stop && stop(run); };
    live.run(callbacks);
    run.counters = live.counters();
    return run;
}

}  // namespace

class LiveGeneratorTest : public QObject {
    Q_OBJECT

  private Q_SLOTS:
    void everyCapturedSampleIsPushedOrCountedAsDropped() {
        const auto run = replay(1.5);
        const auto& c = run.counters;
        QVERIFY(std::abs(c.captured_seconds - 1.5) < 1.0 / kRate + 1e-9);
        QVERIFY2(std::abs(c.captured_seconds - c.pushed_seconds - c.discarded_seconds) < 1e-9,
                 qPrintable(QString("captured %1, pushed %2, dropped %3")
                                .arg(c.captured_seconds)
                                .arg(c.pushed_seconds)
                                .arg(c.discarded_seconds)));
        // Frames cover what was pushed (25 fps), numbered without gaps.
        QCOMPARE(c.frames, int64_t(std::ceil(c.pushed_seconds * 25 - 1e-9)));
        for (size_t i = 0; i < run.indices.size(); ++i)
            QCOMPARE(run.indices[i], int64_t(i));
    }

    void latencyStampsPrecedeTheFramesAndAdvance() {
        const auto run = replay(1.5);
        QVERIFY(!run.events.empty());
        for (size_t i = 0; i < run.events.size(); ++i) {
            QVERIFY(run.events[i].audio_captured <= run.emitted[i]);
            if (i > 0) QVERIFY(run.events[i].audio_captured >= run.events[i - 1].audio_captured);
        }
    }

    void slowGenerationDropsTheOldestAudioAndSaysSo() {
        // 60 ms per frame: 0.72 s per 0.48 s clip, so the replay outruns generation.
        const auto run =
            replay(4.0, [] { std::this_thread::sleep_for(std::chrono::milliseconds(60)); });
        const auto& c = run.counters;
        QVERIFY2(c.discarded_seconds > 0.3, qPrintable(QString::number(c.discarded_seconds)));
        QVERIFY(std::abs(c.captured_seconds - c.pushed_seconds - c.discarded_seconds) < 1e-9);
        QVERIFY(c.frames < 4.0 * 25);
        // What was generated is recent: the newest audio a frame needed is never older than the
        // pending bound plus one clip of generation (0.96 s + 12 * 60 ms + slack).
        for (size_t i = 0; i < run.events.size(); ++i) {
            if (run.events[i].after_stop) continue;
            const double age =
                std::chrono::duration<double>(run.emitted[i] - run.events[i].audio_captured)
                    .count();
            QVERIFY2(age < 0.96 + 0.72 + 1.0, qPrintable(QString::number(age)));
        }
    }

    void stopEndsCaptureAndFinishesWhatWasCaptured() {
        const auto run = replay(10.0, {}, [](const Run& r) { return r.indices.size() >= 12; });
        const auto& c = run.counters;
        QVERIFY2(c.captured_seconds < 5.0, qPrintable(QString::number(c.captured_seconds)));
        QVERIFY(std::abs(c.captured_seconds - c.pushed_seconds - c.discarded_seconds) < 1e-9);
        QCOMPARE(c.frames, int64_t(std::ceil(c.pushed_seconds * 25 - 1e-9)));
    }

    void emptyReplayIsRefused() {
        const auto message = test::error_of([] { render::replay_source({}); });
        QVERIFY2(test::contains(message, "no audio"), message.c_str());
    }
};

QTEST_GUILESS_MAIN(LiveGeneratorTest)
#include "test_live_generator.moc"
