// The live audio path end to end without a sound card: espeak-ng speech played into a PulseAudio
// null sink, captured from its monitor by MicrophoneCapture through PortAudio -> ALSA -> pulse;
// AudioPlayer playing into the same sink; and a machine with no audio device at all.
#include <QThread>
#include <QtTest>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>

#include "audio/audio_decoder.h"
#include "audio/devices.h"
#include "audio/microphone.h"
#include "audio/player.h"
#include "audio/virtual_mic.h"
#include "test_util.h"

using loopy::audio::AudioPlayer;
using loopy::audio::DeviceInfo;
using loopy::audio::MicrophoneCapture;
using loopy::audio::MicrophoneOptions;
using loopy::test::contains;
using loopy::test::error_of;
using loopy::test::VirtualMicrophone;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kRate = 16000;
constexpr std::size_t kFrame = 160;  // 10 ms envelope frames

double seconds_since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

double rms(const std::vector<float>& x, std::size_t begin, std::size_t end) {
    end = std::min(end, x.size());
    if (begin >= end) return 0;
    double sum = 0;
    for (std::size_t i = begin; i < end; ++i)
        sum += double(x[i]) * x[i];
    return std::sqrt(sum / double(end - begin));
}

std::vector<double> envelope(const std::vector<float>& x) {
    std::vector<double> env(x.size() / kFrame);
    for (std::size_t f = 0; f < env.size(); ++f)
        env[f] = rms(x, f * kFrame, (f + 1) * kFrame);
    return env;
}

// Pearson correlation of `ref` with the same length of `x` starting at `offset`.
template <class T>
double correlation(const std::vector<T>& x, std::size_t offset, const std::vector<T>& ref) {
    const std::size_t n = std::min(ref.size(), x.size() - std::min(offset, x.size()));
    if (n < 2) return 0;
    double ma = 0, mb = 0;
    for (std::size_t i = 0; i < n; ++i)
        ma += x[offset + i], mb += ref[i];
    ma /= double(n), mb /= double(n);
    double ab = 0, aa = 0, bb = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double a = x[offset + i] - ma, b = ref[i] - mb;
        ab += a * b, aa += a * a, bb += b * b;
    }
    return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0;
}

struct Alignment {
    std::size_t offset = 0;  // where the reference starts in the capture, in samples
    double envelope_corr = 0;
    double waveform_corr = 0;
};

// Finds the reference in the capture: coarse search on the 10 ms envelopes (robust to the two
// resamplers on the way), then the best waveform lag within one frame of it.
Alignment align(const std::vector<float>& captured, const std::vector<float>& ref) {
    const auto cap_env = envelope(captured), ref_env = envelope(ref);
    Alignment best;
    for (std::size_t f = 0; f + ref_env.size() <= cap_env.size(); ++f) {
        const double c = correlation(cap_env, f, ref_env);
        if (c > best.envelope_corr) best.envelope_corr = c, best.offset = f * kFrame;
    }
    const std::size_t coarse = best.offset;
    for (std::size_t o = coarse > kFrame ? coarse - kFrame : 0; o <= coarse + kFrame; ++o) {
        const double c = correlation(captured, o, ref);
        if (c > best.waveform_corr) best.waveform_corr = c, best.offset = o;
    }
    return best;
}

double tone_amplitude(const std::vector<float>& x, std::size_t begin, std::size_t end,
                      double frequency) {
    double re = 0, im = 0;
    end = std::min(end, x.size());
    for (std::size_t i = begin; i < end; ++i) {
        const double phase = 2 * M_PI * frequency * double(i) / kRate;
        re += x[i] * std::cos(phase), im += x[i] * std::sin(phase);
    }
    return end > begin ? 2 * std::hypot(re, im) / double(end - begin) : 0;
}

// Reads the microphone every 20 ms until `done` says so; false if that took over `timeout` s (a
// hang guard, not a speed check).
bool read_until(MicrophoneCapture& mic, std::vector<float>& out, const std::function<bool()>& done,
                double timeout = 30) {
    const auto t = Clock::now();
    bool ok = true;
    do {
        mic.read_16k(out);
        QThread::msleep(20);
        ok = seconds_since(t) < timeout;
    } while (ok && !done());
    mic.read_16k(out);
    return ok;
}

void read_for(MicrophoneCapture& mic, std::vector<float>& out, double seconds) {
    const auto t = Clock::now();
    read_until(mic, out, [&] { return seconds_since(t) >= seconds; });
}

DeviceInfo device(int index, const char* name, int in, int out, bool def_in = false) {
    DeviceInfo d;
    d.index = index, d.name = name, d.host_api = "ALSA";
    d.max_input_channels = in, d.max_output_channels = out, d.is_default_input = def_in;
    return d;
}

}  // namespace

#define OPEN_OR_FAIL(ptr, ...)                                               \
    do {                                                                     \
        const std::string open_error = error_of([&] { ptr = __VA_ARGS__; }); \
        QVERIFY2(open_error.empty(), open_error.c_str());                    \
    } while (0)

class LiveCaptureTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    // Device choice, without PortAudio.
    void selectsInputDevices() {
        MicrophoneOptions o;
        QVERIFY(
            contains(error_of([&] { loopy::audio::select_input_device({}, o); }), "no microphone"));
        const std::vector<DeviceInfo> outputs_only = {device(0, "speakers", 0, 2)};
        QVERIFY(contains(error_of([&] { loopy::audio::select_input_device(outputs_only, o); }),
                         "no microphone"));

        const std::vector<DeviceInfo> devs = {
            device(0, "USB Headset Mic", 1, 0), device(1, "speakers", 0, 2),
            device(2, "pulse", 32, 32, true), device(3, "Pulse Echo", 2, 0)};
        QCOMPARE(loopy::audio::select_input_device(devs, o).index, 2);  // the default input
        o.device_name = "PULSE";  // exact (case-insensitive) beats the substring "Pulse Echo"
        QCOMPARE(loopy::audio::select_input_device(devs, o).index, 2);
        o.device_name = "headset";
        QCOMPARE(loopy::audio::select_input_device(devs, o).index, 0);
        o.device_name = "no-such-mic";
        const std::string missing = error_of([&] { loopy::audio::select_input_device(devs, o); });
        QVERIFY2(contains(missing, "not found") && contains(missing, "[0] USB Headset Mic") &&
                     contains(missing, "[2] pulse") && !contains(missing, "speakers"),
                 missing.c_str());
        o.device_name.clear();
        o.device_index = 1;  // an output
        QVERIFY(contains(error_of([&] { loopy::audio::select_input_device(devs, o); }),
                         "not an audio input"));
        o.device_index = 3;
        QCOMPARE(loopy::audio::select_input_device(devs, o).name, std::string("Pulse Echo"));
    }

    // The real path: speech into the virtual microphone comes out of read_16k() intact, in time.
    void capturesSpeech() {
        START_VIRTUAL_MIC(vm);
        QString wav;
        try {
            wav = vm->speak("Hello from the virtual microphone. One, two, three.", "speech");
        } catch (const std::exception& e) {
            QFAIL(e.what());
        }
        const auto ref = loopy::audio::decode_audio_file(wav.toStdString(), kRate).samples;
        QVERIFY(ref.size() > std::size_t(kRate));

        std::unique_ptr<MicrophoneCapture> mic;
        OPEN_OR_FAIL(mic, std::make_unique<MicrophoneCapture>());  // the default input
        qInfo("capturing \"%s\" at %d Hz, %d channel(s), input latency %.1f ms",
              mic->device().name.c_str(), mic->sample_rate(), mic->channels(),
              mic->input_latency() * 1000);
        Recording rec;
        record_speech(*vm, *mic, wav, rec);
        if (QTest::currentTestFailed()) return;
        check_timing(rec);
        if (QTest::currentTestFailed()) return;
        check_speech(rec, ref);
    }

    // A named device: found by substring; a missing one lists what there is.
    void namedDevices() {
        START_VIRTUAL_MIC(vm);
        MicrophoneOptions o;
        o.device_name = "no-such-microphone";
        const std::string err = error_of([&] { MicrophoneCapture mic(o); });
        QVERIFY2(contains(err, "not found") && contains(err, "available inputs") &&
                     contains(err, "pulse"),
                 err.c_str());
        o.device_name = "puls";
        std::unique_ptr<MicrophoneCapture> mic;
        OPEN_OR_FAIL(mic, std::make_unique<MicrophoneCapture>(o));
        QCOMPARE(mic->device().name, std::string("pulse"));
    }

    // A consumer that stops reading: the full ring drops the newest audio and says so; the
    // consumer catching up drops the oldest pending audio and says so.
    void slowConsumerDropsAreCounted() {
        START_VIRTUAL_MIC(vm);
        MicrophoneOptions o;
        o.ring_seconds = 0.25;
        std::unique_ptr<MicrophoneCapture> mic;
        OPEN_OR_FAIL(mic, std::make_unique<MicrophoneCapture>(o));
        mic->start();
        std::vector<float> got;
        QVERIFY(read_until(
            *mic, got, [&] { return !got.empty(); }, 10));
        QThread::msleep(600);  // not reading: the 0.25 s ring overflows
        mic->stop();           // from here on the numbers are exact
        const auto full = mic->stats();
        QVERIFY2(full.dropped_frames > 0, "a full ring dropped nothing");

        const auto keep = std::size_t(0.05 * mic->sample_rate());
        const std::size_t skipped = mic->skip_to_latest(0.05);
        QCOMPARE(mic->stats().discarded_frames, std::uint64_t(skipped));
        mic->read_16k(got);
        const auto end = mic->stats();
        QCOMPARE(end.read_frames - full.read_frames, std::uint64_t(keep));
        // Every captured frame was read, dropped by the producer or discarded by the consumer.
        QCOMPARE(end.read_frames + end.dropped_frames + end.discarded_frames, end.captured_frames);
    }

    // AudioPlayer into the null sink, recorded back from its monitor with a stereo stream (so the
    // callback's downmix is used): position advances, pause holds it, seek moves it, the tone
    // arrives.
    void playerPlaysIntoTheSink() {
        START_VIRTUAL_MIC(vm);
        constexpr int kToneRate = 22050;  // not the device's rate: the player resamples
        std::vector<float> tone(kToneRate);
        for (std::size_t i = 0; i < tone.size(); ++i)
            tone[i] = 0.5f * float(std::sin(2 * M_PI * 440 * double(i) / kToneRate));
        std::unique_ptr<AudioPlayer> player;
        OPEN_OR_FAIL(player, std::make_unique<AudioPlayer>(tone, kToneRate));
        QCOMPARE(player->position(), 0.0);
        QVERIFY(std::abs(player->duration() - 1.0) < 0.01);

        MicrophoneOptions o;
        o.channels = 2;
        std::unique_ptr<MicrophoneCapture> mic;
        OPEN_OR_FAIL(mic, std::make_unique<MicrophoneCapture>(o));
        QCOMPARE(mic->channels(), 2);
        mic->start();
        std::vector<float> got;

        player->play();
        QVERIFY(player->playing());
        QVERIFY(read_until(*mic, got, [&] { return player->position() > 0.3; }));
        player->pause();
        QVERIFY(!player->playing());
        read_for(*mic, got, 0.1);  // a callback already running may finish its block
        const double held = player->position();
        read_for(*mic, got, 0.3);
        QCOMPARE(player->position(), held);
        QVERIFY(held < player->duration());

        player->seek(0.5);
        QCOMPARE(player->position(), 0.5);
        player->play();
        QVERIFY(read_until(*mic, got, [&] { return player->finished(); }));
        QCOMPARE(player->position(), player->duration());
        QVERIFY(!player->playing());
        read_for(*mic, got, 0.3);  // the end of the tone still on its way
        mic->stop();

        // The 100 ms window with the most 440 Hz (windows, not the whole capture: the pause
        // and the seek break the tone's phase, and a single sum over both parts could cancel).
        double amp = 0, window_rms = 0;
        for (std::size_t i = 0; i + kRate / 10 <= got.size(); i += kRate / 20) {
            const double a = tone_amplitude(got, i, i + kRate / 10, 440);
            if (a > amp) amp = a, window_rms = rms(got, i, i + kRate / 10);
        }
        qInfo("recorded back: 440 Hz amplitude %.3f, RMS %.3f (played: 0.5, 0.354)", amp,
              window_rms);
        QVERIFY2(amp > 0.4 && amp < 0.6, qPrintable(QString::number(amp)));
        QVERIFY2(window_rms > 0.3 && window_rms < 0.4, qPrintable(QString::number(window_rms)));
    }

    // A machine without any audio device: clear errors, no crash.
    void noAudioDevice() {
        loopy::test::NoAudioDevices none;
        QVERIFY(loopy::audio::list_devices().empty());
        const std::string mic = error_of([] { MicrophoneCapture m; });
        QVERIFY2(contains(mic, "no microphone"), mic.c_str());
        const std::string out = error_of([] { AudioPlayer p(std::vector<float>(100), 16000); });
        QVERIFY2(contains(out, "no audio output"), out.c_str());
    }

  private:
    struct Recording {
        std::vector<float> got;       // 16 kHz
        std::size_t first_count = 0;  // samples in the first read that had any
        std::size_t play_index = 0;   // samples read when paplay started
        double wall = 0;              // seconds from the first read with samples to the last read
        std::vector<double> ages;     // capture-to-read age of the newest sample of each read
        loopy::audio::MicrophoneStats stats;
    };

    // 0.6 s of silence, the speech, 0.5 s of tail.
    static void record_speech(VirtualMicrophone& vm, MicrophoneCapture& mic, const QString& wav,
                              Recording& rec) {
        // PulseAudio's idle null sink renders in 2 s blocks: its monitor starts delivering at the
        // sink's next wake-up, up to 2 s after start() (a real microphone starts at once). So
        // the clock starts at the first sample.
        mic.start();
        QVERIFY2(read_until(
                     mic, rec.got, [&] { return !rec.got.empty(); }, 10),
                 "no audio from the virtual microphone in 10 s");
        const auto first = Clock::now();
        rec.first_count = rec.got.size();
        read_for(mic, rec.got, 0.6);  // silence before the speech
        rec.play_index = rec.got.size();
        try {
            vm.play(wav);
            QVERIFY2(read_until(mic, rec.got, [&] { return vm.wait_played(0); }),
                     "paplay did not finish in 30 s");
        } catch (const std::exception& e) {
            QFAIL(e.what());
        }
        for (const auto tail = Clock::now(); seconds_since(tail) < 0.5;) {
            QThread::msleep(20);
            const auto r = mic.read_16k(rec.got);
            const auto now = Clock::now();
            if (r.has_time)
                rec.ages.push_back(
                    std::chrono::duration<double>(now - r.newest_capture_time).count());
        }
        mic.read_16k(rec.got);
        rec.wall = seconds_since(first);
        mic.stop();
        std::vector<float> after_stop;  // what arrived after the last read: not timed
        mic.read_16k(after_stop);
        rec.stats = mic.stats();
        QVERIFY(mic.newest_sample_time() <= Clock::now());
    }

    static void check_timing(Recording& rec) {
        const double captured = double(rec.got.size() - rec.first_count) / kRate;
        qInfo(
            "captured %.3f s in %.3f s of wall clock; %llu frames, %llu dropped, %llu "
            "overflow(s)",
            captured, rec.wall, static_cast<unsigned long long>(rec.stats.captured_frames),
            static_cast<unsigned long long>(rec.stats.dropped_frames),
            static_cast<unsigned long long>(rec.stats.overflows));
        // Length: what came out is what the wall clock says went by, give or take what is in
        // flight at either end (one callback block, the 20 ms read period, the resampler's
        // filter). 0.15 s + 2% leaves room for a loaded CI machine; a wrong rate would be off by
        // 8% (44.1 vs 48 kHz) or far more.
        QVERIFY2(std::abs(captured - rec.wall) < 0.15 + 0.02 * rec.wall,
                 qPrintable(QString("captured %1 s vs %2 s").arg(captured).arg(rec.wall)));
        QCOMPARE(rec.stats.dropped_frames, std::uint64_t(0));
        QCOMPARE(rec.stats.read_frames, rec.stats.captured_frames);  // all captured was read

        // The timestamps the pipeline's latency display uses: the newest sample of a read was
        // captured before the read, and not long before (at most the path's buffering; 2 s is a
        // bound for a stalled CI machine, not a speed check).
        QVERIFY(!rec.ages.empty());
        std::sort(rec.ages.begin(), rec.ages.end());
        qInfo("capture-to-read age: median %.1f ms, max %.1f ms",
              rec.ages[rec.ages.size() / 2] * 1000, rec.ages.back() * 1000);
        QVERIFY2(rec.ages.front() > -0.005 && rec.ages.back() < 2.0,
                 "implausible capture timestamps");
    }

    static void check_speech(const Recording& rec, const std::vector<float>& ref) {
        // Before the speech: the null sink's monitor is digital silence.
        const double before = rms(rec.got, 0, rec.play_index);
        QVERIFY2(before < 1e-3, qPrintable(QString("RMS before the speech %1").arg(before)));

        // The speech: found after it was played, at the level it was played, and the same
        // signal. Tolerances: envelope (10 ms RMS) correlation > 0.9 and waveform correlation
        // > 0.8; measured 0.95-1.0 and 0.99-1.0 (the envelope is compared on the 10 ms grid,
        // off by up to half a frame; the waveform passes PulseAudio's and swresample's
        // resamplers).
        const Alignment a = align(rec.got, ref);
        const double speech = rms(rec.got, a.offset, a.offset + ref.size());
        const double ref_rms = rms(ref, 0, ref.size());
        qInfo(
            "speech found %.3f s after paplay started; envelope corr %.3f, waveform corr %.3f, "
            "RMS %.4f (reference %.4f)",
            (double(a.offset) - double(rec.play_index)) / kRate, a.envelope_corr, a.waveform_corr,
            speech, ref_rms);
        // Not before paplay started, give or take 50 ms: the reference's first sample was found up
        // to a few ms early in 1 of ~6 runs (PulseAudio rewinds the sink when a stream starts and
        // re-renders what its monitor had not yet delivered; the alignment is on a 10 ms grid).
        // Speech really in the silence before fails the RMS check above.
        QVERIFY2(a.offset + std::size_t(0.05 * kRate) >= rec.play_index,
                 qPrintable(QString("the speech appears %1 s before it was played")
                                .arg(double(rec.play_index - std::min(a.offset, rec.play_index)) /
                                     kRate)));
        QVERIFY2(speech > 0.02, qPrintable(QString("speech RMS %1").arg(speech)));
        QVERIFY2(speech > 0.5 * ref_rms && speech < 2 * ref_rms, "speech level changed");
        QVERIFY2(a.envelope_corr > 0.9, qPrintable(QString::number(a.envelope_corr)));
        QVERIFY2(a.waveform_corr > 0.8, qPrintable(QString::number(a.waveform_corr)));
    }
};

QTEST_GUILESS_MAIN(LiveCaptureTest)
#include "test_live_capture.moc"
