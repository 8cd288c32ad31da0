// The MP4 writer, checked by decoding its output back: frame count, size, codecs, colours, audio
// length equal to the video's; and its file handling: nothing half-written, ever.
#include <QtTest>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "audio/ffmpeg_log.h"
#include "core/error.h"
#include "render/video_probe.h"
#include "render/video_writer.h"

using loopy::render::PixelLayout;
using loopy::render::VideoWriter;
using loopy::render::VideoWriterOptions;
namespace fs = std::filesystem;

namespace {

VideoWriterOptions small(int width = 64, int height = 48) {
    VideoWriterOptions o;
    o.width = width;
    o.height = height;
    o.preset = "ultrafast";  // the tests check correctness, not compression
    return o;
}

std::vector<std::uint8_t> flat(int width, int height, int channels, std::uint8_t r, std::uint8_t g,
                               std::uint8_t b) {
    std::vector<std::uint8_t> pixels(static_cast<std::size_t>(width) * height * channels, 255);
    for (std::size_t i = 0; i < pixels.size(); i += channels) {
        pixels[i] = r;
        pixels[i + 1] = g;
        pixels[i + 2] = b;
    }
    return pixels;
}

std::vector<float> tone(int rate, double seconds) {
    std::vector<float> x(static_cast<std::size_t>(std::lround(rate * seconds)));
    for (std::size_t i = 0; i < x.size(); ++i)
        x[i] = 0.3f * static_cast<float>(std::sin(2 * M_PI * 440 * i / rate));
    return x;
}

double channel_mean(const std::vector<std::uint8_t>& rgb, int channel) {
    double sum = 0;
    for (std::size_t i = static_cast<std::size_t>(channel); i < rgb.size(); i += 3)
        sum += rgb[i];
    return sum / static_cast<double>(rgb.size() / 3);
}

template <class F>
QString expect_error(F&& body) {
    try {
        body();
    } catch (const loopy::Error& e) {
        return QString::fromStdString(e.what());
    }
    return QString();
}

std::size_t entries(const QString& dir) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.toStdString()))
        ++n;
    return n;
}

}  // namespace

class VideoWriterTest : public QObject {
    Q_OBJECT
    QTemporaryDir dir_;
    std::string path(const char* name) const { return dir_.filePath(name).toStdString(); }

  private Q_SLOTS:
    void initTestCase() {
        loopy::audio::route_ffmpeg_logs();
    }  // as the apps do: no encoder chatter

    // N frames and 16 kHz audio longer than the video: exactly N frames come back, and the AAC
    // track ends with the video.
    void framesAndAudioRoundTrip() {
        const std::string p = path("talk.mp4");
        const int n = 30;
        VideoWriter writer(p, small());
        QCOMPARE(QString::fromStdString(writer.video_encoder_name()), QString("libx264"));
        writer.set_audio(tone(16000, 1.7), 16000);  // 0.5 s more than the 1.2 s of video
        QCOMPARE(writer.audio_encoder_rate(), 48000);
        const auto colour = flat(64, 48, 3, 200, 100, 50);
        for (int i = 0; i < n; ++i)
            writer.add_frame(colour.data());
        writer.finish();

        const auto probe = loopy::render::probe_video(p);
        QCOMPARE(probe.frame_count, n);
        QCOMPARE(probe.width, 64);
        QCOMPARE(probe.height, 48);
        QCOMPARE(QString::fromStdString(probe.video_codec), QString("h264"));
        QCOMPARE(QString::fromStdString(probe.pixel_format), QString("yuv420p"));
        QVERIFY(std::abs(probe.fps - 25.0) < 1e-6);
        QVERIFY(std::abs(probe.video_duration - 1.2) < 1e-6);
        QCOMPARE(QString::fromStdString(probe.audio_codec), QString("aac"));
        QCOMPARE(probe.audio_channels, 1);
        QCOMPARE(probe.audio_sample_rate, 48000);
        QVERIFY2(std::abs(probe.audio_duration - 1.2) <= 0.04,
                 qPrintable(QString::number(probe.audio_duration)));
        QVERIFY2(std::abs(probe.decoded_audio_duration() - 1.2) <= 0.04,
                 qPrintable(QString::number(probe.decoded_audio_duration())));
        QVERIFY(probe.index_first);  // +faststart
        // yuv420p and CRF 18 keep a flat colour within a few levels.
        for (int c = 0; c < 3; ++c) {
            const double want = c == 0 ? 200 : c == 1 ? 100 : 50;
            QVERIFY2(std::abs(channel_mean(probe.first_frame_rgb, c) - want) < 3,
                     qPrintable(QString::number(channel_mean(probe.first_frame_rgb, c))));
            QVERIFY(std::abs(channel_mean(probe.last_frame_rgb, c) - want) < 3);
        }
    }

    // Audio shorter than the video is padded with silence to the video's length.
    void shortAudioIsPadded() {
        const std::string p = path("padded.mp4");
        VideoWriter writer(p, small());
        writer.set_audio(tone(16000, 0.3), 16000);
        const auto grey = flat(64, 48, 3, 128, 128, 128);
        for (int i = 0; i < 25; ++i)
            writer.add_frame(grey.data());
        writer.finish();
        const auto probe = loopy::render::probe_video(p);
        QCOMPARE(probe.frame_count, 25);
        QVERIFY(std::abs(probe.audio_duration - 1.0) <= 0.04);
        QVERIFY(std::abs(probe.decoded_audio_duration() - 1.0) <= 0.04);
    }

    // Streaming: audio declared up front arrives frame by frame (at 384 kHz, which AAC lacks),
    // and RGBA pictures have a row stride wider than the picture.
    void streamingAudioAndRgbaFrames() {
        const std::string p = path("live.mp4");
        auto options = small(32, 32);
        options.fps = 30;
        options.audio_sample_rate = 384000;
        VideoWriter writer(p, options);
        QCOMPARE(writer.audio_encoder_rate(), 48000);
        const auto audio = tone(384000, 1.0);
        const int stride = 40 * 4;
        std::vector<std::uint8_t> picture(static_cast<std::size_t>(stride) * 32, 0);
        for (int i = 0; i < 30; ++i) {
            const std::uint8_t level = i < 15 ? 20 : 230;
            for (int y = 0; y < 32; ++y)
                for (int x = 0; x < 32; ++x)
                    for (int c = 0; c < 4; ++c)
                        picture[y * stride + x * 4 + c] = level;
            writer.add_frame(picture.data(), stride, PixelLayout::RGBA);
            writer.add_audio(audio.data() + i * 12800, 12800, 384000);
        }
        writer.finish();
        const auto probe = loopy::render::probe_video(p);
        QCOMPARE(probe.frame_count, 30);
        QVERIFY(std::abs(probe.fps - 30.0) < 1e-6);
        QCOMPARE(probe.audio_sample_rate, 48000);
        QVERIFY(std::abs(probe.decoded_audio_duration() - 1.0) <= 1.0 / 30);
        QVERIFY(std::abs(channel_mean(probe.first_frame_rgb, 1) - 20) < 3);
        QVERIFY(std::abs(channel_mean(probe.last_frame_rgb, 1) - 230) < 3);
    }

    void videoWithoutAudio() {
        const std::string p = path("mute.mp4");
        VideoWriter writer(p, small());
        const auto grey = flat(64, 48, 3, 90, 90, 90);
        for (int i = 0; i < 7; ++i)
            writer.add_frame(grey.data());
        writer.finish();
        const auto probe = loopy::render::probe_video(p);
        QCOMPARE(probe.frame_count, 7);
        QVERIFY(probe.audio_codec.empty());
    }

    void audioAfterTheFirstFrameNeedsDeclaring() {
        VideoWriter writer(path("late.mp4"), small());
        const auto grey = flat(64, 48, 3, 90, 90, 90);
        writer.add_frame(grey.data());
        const auto audio = tone(16000, 0.1);
        const QString message = expect_error([&] { writer.set_audio(audio, 16000); });
        QVERIFY2(message.contains("audio_sample_rate"), qPrintable(message));
    }

    void oddSizeIsAnError() {
        const QString message = expect_error([&] { VideoWriter(path("odd.mp4"), small(63, 48)); });
        QVERIFY2(message.contains("odd.mp4") && message.contains("even"), qPrintable(message));
        QVERIFY(!fs::exists(path("odd.mp4")));
    }

    void existingFileIsKeptWithoutOverwrite() {
        const std::string p = path("existing.mp4");
        std::ofstream(p) << "precious";
        const QString message = expect_error([&] { VideoWriter(p, small()); });
        QVERIFY2(message.contains("existing.mp4") && message.contains("exists"),
                 qPrintable(message));
        std::ifstream in(p);
        std::string content;
        in >> content;
        QCOMPARE(QString::fromStdString(content), QString("precious"));

        auto options = small();
        options.overwrite = true;
        VideoWriter writer(p, options);
        const auto grey = flat(64, 48, 3, 90, 90, 90);
        writer.add_frame(grey.data());
        writer.finish();
        QCOMPARE(loopy::render::probe_video(p).frame_count, 1);
    }

    // A cancel: the writer dropped mid-way leaves neither the output nor its temporary file.
    void destroyedWithoutFinishLeavesNothing() {
        QTemporaryDir dir;
        const std::string p = dir.filePath("cancelled.mp4").toStdString();
        {
            VideoWriter writer(p, small());
            writer.set_audio(tone(16000, 1.0), 16000);
            const auto grey = flat(64, 48, 3, 90, 90, 90);
            for (int i = 0; i < 10; ++i)
                writer.add_frame(grey.data());
            QCOMPARE(entries(dir.path()), std::size_t{1});  // the temporary, beside the target
        }
        QCOMPARE(entries(dir.path()), std::size_t{0});
    }

    void finishWithoutFramesIsAnError() {
        QTemporaryDir dir;
        const std::string p = dir.filePath("empty.mp4").toStdString();
        {
            VideoWriter writer(p, small());
            const QString message = expect_error([&] { writer.finish(); });
            QVERIFY2(message.contains("no frames"), qPrintable(message));
        }
        QCOMPARE(entries(dir.path()), std::size_t{0});
    }

    void unwritablePlacesAreErrors_data() {
        QTest::addColumn<QString>("target");
        QTest::newRow("missing folder") << dir_.filePath("no/such/folder/out.mp4");
        QTest::newRow("/proc") << "/proc/loopy-out.mp4";  // refuses new files, even to root
    }
    void unwritablePlacesAreErrors() {
        QFETCH(QString, target);
        const QString message = expect_error([&] { VideoWriter(target.toStdString(), small()); });
        QVERIFY2(message.contains(target), qPrintable(message));
        QVERIFY(!fs::exists(target.toStdString()));
    }

    void readOnlyFolderIsAnError() {
        if (::geteuid() == 0) QSKIP("running as root: a read-only folder does not stop writes");
        QTemporaryDir dir;
        fs::permissions(dir.path().toStdString(), fs::perms::owner_read | fs::perms::owner_exec);
        const std::string p = dir.filePath("out.mp4").toStdString();
        const QString message = expect_error([&] { VideoWriter(p, small()); });
        fs::permissions(dir.path().toStdString(), fs::perms::owner_all);
        QVERIFY2(message.contains("out.mp4"), qPrintable(message));
        QCOMPARE(entries(dir.path()), std::size_t{0});
    }

    void unusableAfterFinish() {
        const std::string p = path("done.mp4");
        VideoWriter writer(p, small());
        const auto grey = flat(64, 48, 3, 90, 90, 90);
        writer.add_frame(grey.data());
        writer.finish();
        const QString message = expect_error([&] { writer.add_frame(grey.data()); });
        QVERIFY2(message.contains("already finished"), qPrintable(message));
    }
};

QTEST_APPLESS_MAIN(VideoWriterTest)
#include "test_video_writer.moc"
