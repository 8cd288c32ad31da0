// The audio decoder: every container/codec the app accepts, any channel count and sample rate,
// to mono 16 kHz float with the right duration and pitch; damaged and non-audio files give clear
// errors naming the file. Inputs are made here with FFmpeg's own encoders.
#include <QtTest>

#include <spdlog/sinks/stdout_sinks.h>

#include <fstream>
#include <random>

#include "audio/audio_decoder.h"
#include "audio/ffmpeg_log.h"
#include "audio/media_gen.h"
#include "core/error.h"
#include "core/log.h"
#include "render/video_writer.h"

using loopy::audio::decode_audio_file;
using loopy::test::Tone;

namespace {

struct LogCapture {
    std::vector<std::string> warnings;
    LogCapture() {
        loopy::set_log_sinks({loopy::make_callback_sink(
            [this](spdlog::level::level_enum level, const std::string& line) {
                if (level == spdlog::level::warn) warnings.push_back(line);
            })});
    }
    ~LogCapture() { loopy::set_log_sinks({std::make_shared<spdlog::sinks::stderr_sink_mt>()}); }
    bool contains(const std::string& text) const {
        for (const auto& w : warnings)
            if (w.find(text) != std::string::npos) return true;
        return false;
    }
};

// Runs `body` and returns the loopy::Error message it threw (empty if it threw nothing).
template <class F>
QString expect_error(F&& body) {
    try {
        body();
    } catch (const loopy::Error& e) {
        return QString::fromStdString(e.what());
    }
    return QString();
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

class AudioDecoderTest : public QObject {
    Q_OBJECT
    QTemporaryDir dir_;
    std::string path(const char* name) const { return dir_.filePath(name).toStdString(); }

  private Q_SLOTS:
    void initTestCase() { loopy::audio::route_ffmpeg_logs(); }

    void formats_data() {
        QTest::addColumn<QString>("file");
        QTest::addColumn<QString>("encoder");
        QTest::addColumn<int>("rate");
        QTest::addColumn<double>("tolerance");  // seconds of duration error allowed
        // Lossless: exact up to the resampler; lossy: within one codec frame of padding.
        QTest::newRow("wav") << "tone.wav"
                             << "pcm_s16le" << 44100 << 0.002;
        QTest::newRow("flac") << "tone.flac"
                              << "flac" << 48000 << 0.002;
        QTest::newRow("mp3") << "tone.mp3"
                             << "libmp3lame" << 44100 << 0.03;
        QTest::newRow("m4a-aac") << "tone.m4a"
                                 << "aac" << 44100 << 0.03;
        QTest::newRow("ogg-vorbis") << "tone.ogg"
                                    << "libvorbis" << 44100 << 0.03;
        QTest::newRow("opus") << "tone.opus"
                              << "libopus" << 48000 << 0.03;
    }
    void formats() {
        QFETCH(QString, file);
        QFETCH(QString, encoder);
        QFETCH(int, rate);
        QFETCH(double, tolerance);
        if (!loopy::test::has_encoder(encoder.toUtf8().constData()))
            QSKIP(qPrintable("this FFmpeg has no " + encoder + " encoder"));
        const std::string p = path(file.toUtf8().constData());
        Tone tone;
        tone.sample_rate = rate;
        tone.seconds = 1.5;
        loopy::test::write_tone(p, encoder.toUtf8().constData(), tone);

        const auto audio = decode_audio_file(p);
        QCOMPARE(audio.sample_rate, 16000);
        QCOMPARE(audio.source_sample_rate, rate);
        QCOMPARE(audio.source_channels, 1);
        QVERIFY(!audio.damaged);
        QVERIFY2(std::abs(audio.duration() - 1.5) <= tolerance,
                 qPrintable(QString::number(audio.duration(), 'f', 5)));
        const auto mid = loopy::test::middle(audio.samples, 0.8);
        QVERIFY(std::abs(loopy::test::zero_crossing_frequency(mid, 16000) - 440) < 1.0);
        const double amplitude = loopy::test::goertzel_amplitude(mid, 16000, 440);
        const double level_tolerance = tolerance < 0.01 ? 0.005 : 0.05;  // lossless : lossy
        QVERIFY2(std::abs(amplitude - 0.5) < level_tolerance,
                 qPrintable(QString::number(amplitude)));
    }

    void downmix_data() {
        QTest::addColumn<QString>("file");
        QTest::addColumn<QString>("encoder");
        QTest::addColumn<int>("channels");
        QTest::newRow("wav-1") << "c1.wav"
                               << "pcm_s16le" << 1;
        QTest::newRow("wav-2") << "c2.wav"
                               << "pcm_s16le" << 2;
        QTest::newRow("wav-5.1") << "c6.wav"
                                 << "pcm_s16le" << 6;
        QTest::newRow("wav-7.1") << "c8.wav"
                                 << "pcm_s16le" << 8;
        QTest::newRow("flac-5.1") << "c6.flac"
                                  << "flac" << 6;
        QTest::newRow("flac-7.1") << "c8.flac"
                                  << "flac" << 8;
        QTest::newRow("aac-5.1") << "c6.m4a"
                                 << "aac" << 6;
    }
    void downmix() {
        QFETCH(QString, file);
        QFETCH(QString, encoder);
        QFETCH(int, channels);
        const std::string p = path(file.toUtf8().constData());
        Tone tone;
        tone.channels = channels;
        tone.sample_rate = 48000;
        loopy::test::write_tone(p, encoder.toUtf8().constData(), tone);
        const auto audio = decode_audio_file(p);
        QCOMPARE(audio.source_channels, channels);
        QVERIFY(std::abs(audio.duration() - 1.0) < 0.03);
        // The same signal on every channel: a normalised downmix gives it back at its level
        // (LFE is not mixed in; the mix cannot clip).
        const auto mid = loopy::test::middle(audio.samples, 0.8);
        QVERIFY(std::abs(loopy::test::zero_crossing_frequency(mid, 16000) - 440) < 1.0);
        const double amplitude = loopy::test::goertzel_amplitude(mid, 16000, 440);
        QVERIFY2(std::abs(amplitude - 0.5) < 0.03, qPrintable(QString::number(amplitude)));
        if (encoder != "aac") QVERIFY(loopy::test::peak(audio.samples) <= 0.55);  // lossy rings
    }

    void stereoIsMixedNotJustTheLeftChannel() {
        const std::string p = path("left_only.wav");
        Tone tone;
        tone.channels = 2;
        tone.first_channel_only = true;
        loopy::test::write_tone(p, "pcm_s16le", tone);
        const auto mid = loopy::test::middle(decode_audio_file(p).samples, 0.8);
        const double amplitude = loopy::test::goertzel_amplitude(mid, 16000, 440);
        QVERIFY2(std::abs(amplitude - 0.25) < 0.01, qPrintable(QString::number(amplitude)));
    }

    // Pitch and duration survive any source rate; content above 8 kHz is filtered out, not
    // folded back (12 kHz at 44.1k and 20 kHz at 384k would alias to 4 kHz).
    void sampleRates_data() {
        QTest::addColumn<int>("rate");
        QTest::addColumn<double>("high");
        QTest::newRow("8k") << 8000 << 0.0;
        QTest::newRow("44.1k") << 44100 << 12000.0;
        QTest::newRow("384k") << 384000 << 20000.0;
    }
    void sampleRates() {
        QFETCH(int, rate);
        QFETCH(double, high);
        const std::string p = path("rate.wav");
        Tone tone;
        tone.sample_rate = rate;
        tone.seconds = 2.0;
        tone.amplitude = 0.4;
        tone.frequency2 = high;
        tone.amplitude2 = high > 0 ? 0.4 : 0.0;
        loopy::test::write_tone(p, "pcm_s16le", tone);
        const auto audio = decode_audio_file(p);
        QCOMPARE(audio.source_sample_rate, rate);
        // Within one 16 kHz sample of filter delay per end.
        QVERIFY2(std::abs(static_cast<long>(audio.samples.size()) - 32000) <= 2,
                 qPrintable(QString::number(audio.samples.size())));
        const auto mid = loopy::test::middle(audio.samples, 0.8);
        QVERIFY(std::abs(loopy::test::goertzel_amplitude(mid, 16000, 440) - 0.4) < 0.01);
        QVERIFY(loopy::test::goertzel_amplitude(mid, 16000, 4000) < 0.002);
        if (high == 0)
            QVERIFY(std::abs(loopy::test::zero_crossing_frequency(mid, 16000) - 440) < 0.5);
    }

    void otherTargetRate() {
        const std::string p = path("to48k.wav");
        Tone tone;
        tone.sample_rate = 16000;
        loopy::test::write_tone(p, "pcm_s16le", tone);
        const auto audio = decode_audio_file(p, 48000);
        QCOMPARE(audio.sample_rate, 48000);
        QVERIFY(std::abs(audio.duration() - 1.0) < 0.001);
    }

    void audioOfAVideoFile() {
        const std::string p = path("talk.mp4");
        std::vector<float> speech(16000 * 2);
        for (std::size_t i = 0; i < speech.size(); ++i)
            speech[i] = 0.5f * static_cast<float>(std::sin(2 * M_PI * 440 * i / 16000.0));
        {
            loopy::render::VideoWriter writer(p, {32, 32, 25, 23, "ultrafast"});
            writer.set_audio(speech, 16000);
            const std::vector<std::uint8_t> grey(32 * 32 * 3, 128);
            for (int i = 0; i < 50; ++i)
                writer.add_frame(grey.data());
            writer.finish();
        }
        const auto audio = decode_audio_file(p);
        QVERIFY2(std::abs(audio.duration() - 2.0) < 0.03,
                 qPrintable(QString::number(audio.duration())));
        const auto mid = loopy::test::middle(audio.samples, 0.8);
        QVERIFY(std::abs(loopy::test::zero_crossing_frequency(mid, 16000) - 440) < 1.0);
        // The track's last frame of audio is the input's, not padding.
        const std::vector<float> end(audio.samples.begin() + 31040, audio.samples.begin() + 31680);
        QVERIFY(loopy::test::peak(end) > 0.3);
    }

    void videoWithoutAudioIsAnError() {
        const std::string p = path("silent.mp4");
        {
            loopy::render::VideoWriter writer(p, {32, 32, 25, 23, "ultrafast"});
            const std::vector<std::uint8_t> grey(32 * 32 * 3, 128);
            for (int i = 0; i < 5; ++i)
                writer.add_frame(grey.data());
            writer.finish();
        }
        const QString message = expect_error([&] { decode_audio_file(p); });
        QVERIFY2(message.contains("has no audio stream"), qPrintable(message));
        QVERIFY(message.contains("silent.mp4"));
    }

    void emptyFileIsAnError() {
        const std::string p = path("empty.wav");
        write_bytes(p, "");
        const QString message = expect_error([&] { decode_audio_file(p); });
        QVERIFY2(message.contains("empty.wav") && message.contains("empty"), qPrintable(message));
    }

    void missingFileIsAnError() {
        const QString message = expect_error([&] { decode_audio_file(path("nowhere.mp3")); });
        QVERIFY2(message.contains("nowhere.mp3"), qPrintable(message));
    }

    void garbageIsAnError_data() {
        QTest::addColumn<QString>("file");
        QTest::newRow("no extension") << "noise.bin";
        QTest::newRow("named mp3") << "noise.mp3";
        QTest::newRow("named wav") << "noise.wav";
    }
    void garbageIsAnError() {
        QFETCH(QString, file);
        const std::string p = path(file.toUtf8().constData());
        std::mt19937 rng(7);
        std::string bytes(64 * 1024, '\0');
        for (auto& b : bytes)
            b = static_cast<char>(rng() & 0xff);
        write_bytes(p, bytes);
        const QString message = expect_error([&] { decode_audio_file(p); });
        QVERIFY2(message.contains(file), qPrintable(message));
    }

    // A container that opens, with audio that never decodes (an MP3 stream of noise in a WAV).
    void undecodableAudioIsAnError() {
        const std::string p = path("noise_mp3.wav");
        std::mt19937 rng(3);
        std::string data(20000, '\0');
        for (auto& b : data)
            b = static_cast<char>(rng() & 0xff);
        auto le = [](std::uint32_t v, int bytes) {
            std::string s;
            for (int i = 0; i < bytes; ++i)
                s += static_cast<char>((v >> (8 * i)) & 0xff);
            return s;
        };
        // fmt: tag 0x55 (MPEG layer 3), mono, 44.1 kHz, 16000 B/s, block 1, 0 bits.
        const std::string fmt =
            le(0x55, 2) + le(1, 2) + le(44100, 4) + le(16000, 4) + le(1, 2) + le(0, 2);
        write_bytes(p, "RIFF" + le(4 + 8 + 16 + 8 + 20000, 4) + "WAVEfmt " + le(16, 4) + fmt +
                           "data" + le(20000, 4) + data);
        const QString message = expect_error([&] { decode_audio_file(p); });
        QVERIFY2(message.contains("noise_mp3.wav") && message.contains("does not decode"),
                 qPrintable(message));
    }

    // Decision: a file cut short (an interrupted download) decodes up to the cut, with a warning
    // naming the file and `damaged` set; it is not an error. (FFmpeg's WAV reader trims the
    // declared length to the file, so a cut WAV just decodes shorter, without the warning.)
    void truncatedFileDecodesItsFirstPart_data() {
        QTest::addColumn<QString>("file");
        QTest::addColumn<QString>("encoder");
        QTest::addColumn<bool>("warns");
        QTest::newRow("mp3") << QString("cut.mp3") << QString("libmp3lame") << true;
        QTest::newRow("flac") << QString("cut.flac") << QString("flac") << true;
        QTest::newRow("wav") << QString("cut.wav") << QString("pcm_s16le") << false;
    }
    void truncatedFileDecodesItsFirstPart() {
        QFETCH(QString, file);
        QFETCH(QString, encoder);
        QFETCH(bool, warns);
        if (!loopy::test::has_encoder(encoder.toUtf8().constData()))
            QSKIP(qPrintable("this FFmpeg has no " + encoder + " encoder"));
        const std::string whole = path(("whole-" + file).toUtf8().constData());
        Tone tone;
        tone.seconds = 4.0;
        loopy::test::write_tone(whole, encoder.toUtf8().constData(), tone);
        const std::string bytes = read_bytes(whole);
        const std::string cut = path(file.toUtf8().constData());
        write_bytes(cut, bytes.substr(0, bytes.size() / 2));

        LogCapture log;
        const auto audio = decode_audio_file(cut);
        // Half the bytes: less than half the audio when headers take room (FLAC's padding).
        QVERIFY2(audio.duration() > 1.5 && audio.duration() < 2.15,
                 qPrintable(QString::number(audio.duration())));
        if (warns) {
            QVERIFY(audio.damaged);
            QVERIFY(std::abs(audio.source_duration - 4.0) < 0.1);
            QVERIFY(log.contains(file.toStdString()) && log.contains("ends early"));
        }
        const auto mid = loopy::test::middle(audio.samples, 0.8);
        QVERIFY(std::abs(loopy::test::zero_crossing_frequency(mid, 16000) - 440) < 1.0);
    }

    // Ten minutes stream through in fixed chunks; the reader never holds more than about one
    // chunk, whatever the length.
    void tenMinutesStreamInChunks() {
        const std::string p = path("long.wav");
        loopy::test::write_wav_s16(p, 22050, 600.0, 440);
        loopy::audio::AudioFileReader reader(p);
        QCOMPARE(reader.source_sample_rate(), 22050);
        QVERIFY(std::abs(reader.source_duration() - 600.0) < 0.001);
        std::vector<float> chunk;
        std::size_t total = 0, chunks = 0, short_chunks = 0;
        while (reader.read(chunk, 16000)) {
            QVERIFY(chunk.size() <= 16000);
            if (chunk.size() < 16000) ++short_chunks;
            if (chunks == 300)
                QVERIFY(std::abs(loopy::test::zero_crossing_frequency(chunk, 16000) - 440) < 1.0);
            total += chunk.size();
            ++chunks;
        }
        QVERIFY(short_chunks <= 1);  // only the last
        QVERIFY(chunk.empty());
        QVERIFY2(std::abs(static_cast<long>(total) - 600L * 16000) <= 2,
                 qPrintable(QString::number(total)));
        QVERIFY(chunks == 600 || chunks == 601);
        QVERIFY2(reader.peak_buffered_samples() < 16000 + 8192,
                 qPrintable(QString::number(reader.peak_buffered_samples())));
        QVERIFY(!reader.read(chunk));  // stays at the end
    }
};

QTEST_APPLESS_MAIN(AudioDecoderTest)
#include "test_audio_decoder.moc"
