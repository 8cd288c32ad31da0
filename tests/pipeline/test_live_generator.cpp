// The live loop shared by the GUI and `loopy bench live` (render/live_generator.h), driven by a
// file replayed against a clock the test advances itself: every loop turn and every generated
// frame move it by a fixed step, so what arrives when, what is dropped and how old a frame's
// audio is are the same on every machine. Nothing is measured on the wall clock.
#include <QtTest>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include <set>
#include <thread>

#include "pipeline/tiny_model.h"
#include "render/live_generator.h"
#include "test_util.h"

using namespace loopy;

namespace {

constexpr double kRate = 16000;
constexpr double kTickSeconds = 0.01;  // clock step per loop turn (the loop's idle wait)

// Virtual time, starting at the clock's epoch.
struct TestClock {
    render::LiveClock::time_point now{};
    void advance(double s) {
        now += std::chrono::duration_cast<render::LiveClock::duration>(
            std::chrono::duration<double>(s));
    }
    double seconds() const { return std::chrono::duration<double>(now.time_since_epoch()).count(); }
};

struct Run {
    render::LiveCounters counters;
    std::vector<render::LiveFrameEvent> events;  // frame references are dangling: times only
    std::vector<int64_t> indices;
    std::vector<render::LiveClock::time_point> emitted;
    std::vector<std::vector<uint8_t>> rgb;
    std::set<std::thread::id> frame_threads;
    double stop_seconds = -1;        // test clock when the stop was first requested
    int64_t most_counted_ahead = 0;  // counters().frames minus the frames on_frame had returned
};

struct Pace {
    double frame_seconds = 0;  // clock step per generated frame: the simulated inference time
    std::function<bool(const Run&)> stop;
    render::LiveOptions options;
    // The first frame's on_frame returns only after the loop has ticked (5 s at most): the
    // counters are read while a frame is still being handed over.
    bool hold_first_frame_for_a_tick = false;
};

std::shared_ptr<Session> micro_session() {
    static auto model = Model::from_network(test::random_network(test::micro_config()));
    const auto portrait = test::test_portrait(32);
    GenerationSettings settings;
    settings.steps = 1;
    return std::make_shared<Session>(model, portrait.data(), 32, 32, settings);
}

Run replay(double seconds, const Pace& pace = {}) {
    Run run;
    auto clock = std::make_shared<TestClock>();
    render::LiveGenerator live(
        render::replay_source(test::test_audio(seconds), 1, [clock] { return clock->now; }),
        micro_session(), pace.options);
    render::LiveCallbacks callbacks;
    std::atomic<int64_t> returned{0};  // on_frame calls finished (the decode worker's, maybe)
    std::mutex tick_mutex;
    std::condition_variable tick_seen;
    int64_t ticks = 0;
    callbacks.on_frame = [&](const render::LiveFrameEvent& e) {
        run.events.push_back(e);
        run.indices.push_back(e.frame.index);
        run.emitted.push_back(clock->now);
        run.rgb.push_back(e.frame.rgb);
        run.frame_threads.insert(std::this_thread::get_id());
        clock->advance(pace.frame_seconds);
        if (pace.hold_first_frame_for_a_tick && run.events.size() == 1) {
            std::unique_lock<std::mutex> lock(tick_mutex);
            const int64_t seen = ticks;
            tick_seen.wait_for(lock, std::chrono::seconds(5), [&] { return ticks > seen; });
        }
        returned.fetch_add(1);
    };
    callbacks.on_tick = [&] {
        clock->advance(kTickSeconds);
        {
            std::lock_guard<std::mutex> lock(tick_mutex);
            ++ticks;
            run.most_counted_ahead =
                std::max(run.most_counted_ahead, live.counters().frames - returned.load());
        }
        tick_seen.notify_all();
    };
    callbacks.stop_requested = [&] {
        if (run.stop_seconds < 0 && pace.stop && pace.stop(run))
            run.stop_seconds = clock->seconds();
        return run.stop_seconds >= 0;
    };
    live.run(callbacks);
    run.counters = live.counters();
    return run;
}

// The largest age of the newest audio a frame needed, over frames generated before the stop.
double oldest_live_frame(const Run& run) {
    double oldest = 0;
    for (size_t i = 0; i < run.events.size(); ++i)
        if (!run.events[i].after_stop)
            oldest = std::max(
                oldest, std::chrono::duration<double>(run.emitted[i] - run.events[i].audio_captured)
                            .count());
    return oldest;
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
        Pace slow;
        slow.frame_seconds = 0.06;
        slow.options.max_pending_seconds = 0.96;  // two clips (the default: below)
        const auto run = replay(8.0, slow);
        const auto& c = run.counters;
        QVERIFY2(c.discarded_seconds > 1.0, qPrintable(QString::number(c.discarded_seconds)));
        QVERIFY(std::abs(c.captured_seconds - c.pushed_seconds - c.discarded_seconds) < 1e-9);
        QVERIFY(c.frames < 8.0 * 25);
        // What was generated is recent: when a clip starts, the audio after its newest needed
        // sample is at most the pending bound plus one loop turn, and by its last frame the
        // clip's 12 frames of generation have passed.
        const double bound = slow.options.max_pending_seconds + kTickSeconds + 12 * 0.06 + 1e-6;
        QVERIFY2(oldest_live_frame(run) <= bound,
                 qPrintable(QString::number(oldest_live_frame(run))));

        // Without the bound nothing is dropped and the lag grows past it: the check above can
        // fail.
        slow.options.max_pending_seconds = 100;
        const auto lagging = replay(8.0, slow);
        QCOMPARE(lagging.counters.discarded_seconds, 0.0);
        QVERIFY2(oldest_live_frame(lagging) > bound + 0.5,
                 qPrintable(QString::number(oldest_live_frame(lagging))));
    }

    void defaultBoundStartsEachClipOnAudioAtMostTheSlackOld() {
        Pace slow;
        slow.frame_seconds = 0.06;
        const auto config = test::micro_config();  // micro_session()'s
        const double slack = render::kPendingSlackFrames / 25.0;
        const double clip = double(config.num_frames) / 25;
        QCOMPARE(render::default_max_pending_seconds(config), clip + slack);
        const auto run = replay(8.0, slow);
        QVERIFY(run.counters.discarded_seconds > 1.0);
        // The clip's audio is the oldest pending, so at most the slack (and one loop turn) of
        // newer audio waits behind it: then its generation.
        const double bound = slack + kTickSeconds + double(config.num_frames) * 0.06 + 1e-6;
        QVERIFY2(oldest_live_frame(run) <= bound,
                 qPrintable(QString("%1 > %2").arg(oldest_live_frame(run)).arg(bound)));

        // Two clips of pending audio start each clip on audio older by a clip less the slack
        // (0.78 against 1.14 s here), for no more frames: the bound above fails there. Both
        // generate the same frames per second of wall time, as inference never waits for audio.
        slow.options.max_pending_seconds = 2 * clip;
        const auto two_clips = replay(8.0, slow);
        QVERIFY2(oldest_live_frame(two_clips) > bound + clip / 2,
                 qPrintable(QString::number(oldest_live_frame(two_clips))));
        QVERIFY2(std::abs(run.counters.frames - two_clips.counters.frames) <= config.num_frames,
                 qPrintable(QString("%1 vs %2 frames")
                                .arg(run.counters.frames)
                                .arg(two_clips.counters.frames)));
    }

    void overlappedDecodeGivesTheSameFramesOnAnotherThread() {
        // The frames do not move the clock here, so both runs push the same audio when.
        Pace overlapped;
        overlapped.options.overlap_decode = true;
        overlapped.hold_first_frame_for_a_tick = true;
        const auto a = replay(1.5, overlapped);
        const auto b = replay(1.5);
        QCOMPARE(a.indices, b.indices);
        QCOMPARE(a.counters.frames, b.counters.frames);
        QCOMPARE(a.counters.pushed_seconds, b.counters.pushed_seconds);
        for (size_t i = 0; i < a.rgb.size(); ++i) {
            int worst = 0;
            for (size_t j = 0; j < a.rgb[i].size(); ++j)
                worst = std::max(worst, std::abs(int(a.rgb[i][j]) - int(b.rgb[i][j])));
            QVERIFY2(worst <= 1, qPrintable(QString("frame %1: %2").arg(i).arg(worst)));
        }
        for (size_t i = 0; i < a.events.size(); ++i) {
            QCOMPARE(a.events[i].audio_captured, b.events[i].audio_captured);
            QCOMPARE(a.events[i].after_stop, b.events[i].after_stop);
        }
        // The counters count frames once on_frame has had them, not when they go to the worker.
        QCOMPARE(a.most_counted_ahead, int64_t{0});
        // Frames came from one thread, not the loop's; in turn, from the loop's.
        QCOMPARE(int(a.frame_threads.size()), 1);
        QVERIFY(a.frame_threads.count(std::this_thread::get_id()) == 0);
        QVERIFY(b.frame_threads == std::set<std::thread::id>{std::this_thread::get_id()});
    }

    void negativeBoundIsRefused() {
        render::LiveOptions options;
        options.max_pending_seconds = -1;
        const auto message = test::error_of([&] {
            render::LiveGenerator(render::replay_source(test::test_audio(1.0)), micro_session(),
                                  options);
        });
        QVERIFY2(test::contains(message, "negative"), message.c_str());
    }

    void stopEndsCaptureAndFinishesWhatWasCaptured() {
        Pace pace;
        pace.frame_seconds = 0.02;
        pace.stop = [](const Run& r) { return r.indices.size() >= 12; };
        const auto run = replay(10.0, pace);
        const auto& c = run.counters;
        // Capture ended when the stop was requested (mid-clip: the check runs after each
        // frame), not when the clip or the replay ended.
        QVERIFY(run.stop_seconds > 0);
        QVERIFY2(std::abs(c.captured_seconds - run.stop_seconds) <= 1.0 / kRate,
                 qPrintable(QString("captured %1 s, stopped at %2 s")
                                .arg(c.captured_seconds)
                                .arg(run.stop_seconds)));
        // Everything captured became frames: nothing dropped, the tail after the first clip
        // generated after the stop.
        QCOMPARE(c.discarded_seconds, 0.0);
        QVERIFY(std::abs(c.captured_seconds - c.pushed_seconds) < 1e-9);
        QCOMPARE(c.frames, int64_t(std::ceil(c.pushed_seconds * 25 - 1e-9)));
        QVERIFY(c.frames > 12);
        QVERIFY(run.events.back().after_stop);
    }

    void emptyReplayIsRefused() {
        const auto message = test::error_of([] { render::replay_source({}); });
        QVERIFY2(test::contains(message, "no audio"), message.c_str());
    }
};

QTEST_GUILESS_MAIN(LiveGeneratorTest)
#include "test_live_generator.moc"
