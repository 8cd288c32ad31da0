// Offline rendering end to end (render/render_job.h and `loopy render`) with a random-weight tiny
// checkpoint: the MP4's frames and audio, determinism, the CLI, and every kind of bad input.
#include <QProcess>
#include <QTemporaryDir>
#include <QtTest>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>

#include "audio/media_gen.h"
#include "pipeline/tiny_model.h"
#include "render/png.h"
#include "render/render_job.h"
#include "render/video_probe.h"
#include "render/video_writer.h"
#include "test_util.h"

using namespace loopy;
namespace fs = std::filesystem;

namespace {

constexpr int kSize = 64;
// LOOPY_LONG_AUDIO_SECONDS shortens the 10-minute case when profiling it.
const double kLongAudioSeconds = std::getenv("LOOPY_LONG_AUDIO_SECONDS")
                                     ? std::atof(std::getenv("LOOPY_LONG_AUDIO_SECONDS"))
                                     : 600.0;

std::size_t entries(const std::string& dir) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir))
        ++n;
    return n;
}

void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream(path, std::ios::binary) << bytes;
}

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// Sets FS_IMMUTABLE_FL on a folder: nobody, root included, can create files in it.
bool set_immutable(const std::string& dir, bool on) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd < 0) return false;
    int flags = 0;
    bool ok = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0;
    flags = on ? (flags | FS_IMMUTABLE_FL) : (flags & ~FS_IMMUTABLE_FL);
    ok = ok && ::ioctl(fd, FS_IOC_SETFLAGS, &flags) == 0;
    ::close(fd);
    return ok;
}

}  // namespace

class RenderTest : public QObject {
    Q_OBJECT
    QTemporaryDir dir_;
    std::shared_ptr<Model> model_;
    std::string checkpoint_, portrait_, speech_;

    std::string path(const std::string& name) const {
        return dir_.filePath(name.c_str()).toStdString();
    }

    render::RenderJob job(const std::string& audio, const std::string& out) const {
        render::RenderJob j;
        j.portrait = portrait_;
        j.audio = audio;
        j.out = out;
        j.settings.steps = 2;
        j.settings.seed = 3;
        j.x264_preset = "ultrafast";
        return j;
    }

    // Runs a render expected to fail; returns its message and checks that `out`'s folder holds
    // nothing new.
    std::string expect_failure(const render::RenderJob& j) {
        const auto folder = fs::path(j.out).parent_path().string();
        const auto before = entries(folder);
        const auto message = test::error_of([&] { render::render_video(model_, j); });
        if (entries(folder) != before) return "left a file behind: " + message;
        return message;
    }

  private Q_SLOTS:
    void initTestCase() {
        QVERIFY(dir_.isValid());
        checkpoint_ = path("tiny.safetensors");
        test::save_random_checkpoint(checkpoint_, kSize);
        model_ = Model::load(checkpoint_);
        portrait_ = std::string(LOOPY_TEST_DATA) + "/faces/astronaut.png";
        speech_ = path("speech.wav");
        test::write_tone(speech_, "pcm_s16le", {220, 1.3, 16000, 1, 0.5, 660, 0.2});
    }

    void mp4HasEveryFrameAndTheAudio() {
        const auto out = path("out.mp4");
        const auto result = render::render_video(model_, job(speech_, out));
        QCOMPARE(result.frames, int64_t(33));  // ceil(1.3 * 25)
        QVERIFY(result.face_found);
        const auto probe = render::probe_video(out);
        QCOMPARE(probe.frame_count, 33);
        QCOMPARE(probe.width, kSize);
        QCOMPARE(probe.height, kSize);
        QCOMPARE(probe.video_codec, std::string("h264"));
        QCOMPARE(probe.pixel_format, std::string("yuv420p"));
        QCOMPARE(probe.fps, 25.0);
        QCOMPARE(probe.audio_codec, std::string("aac"));
        QVERIFY(std::abs(probe.decoded_audio_duration() - 33 / 25.0) <= 1 / 25.0);
        QVERIFY(probe.index_first);                                    // +faststart
        QCOMPARE(entries(dir_.path().toStdString()), std::size_t{3});  // no temporary left
    }

    void sameSeedGivesIdenticalFrames() {
        std::vector<std::vector<uint8_t>> a, b;
        auto j = job(speech_, path("a.mp4"));
        j.frames_dir = path("frames_a");
        render::render_video(model_, j, {{}, [&](const Frame& f) { a.push_back(f.rgb); }});
        j.out = path("b.mp4");
        j.frames_dir = path("frames_b");
        render::render_video(model_, j, {{}, [&](const Frame& f) { b.push_back(f.rgb); }});
        QCOMPARE(a.size(), std::size_t{33});
        QVERIFY(a == b);
        QCOMPARE(entries(path("frames_a")), std::size_t{33});
        QCOMPARE(read_bytes(path("frames_a/frame_000032.png")),
                 read_bytes(path("frames_b/frame_000032.png")));
    }

    void audioFormatsRatesAndChannels_data() {
        QTest::addColumn<QString>("name");
        QTest::addColumn<QString>("encoder");
        QTest::addColumn<int>("rate");
        QTest::addColumn<int>("channels");
        QTest::newRow("8 kHz mono wav") << "r8k.wav"
                                        << "pcm_s16le" << 8000 << 1;
        QTest::newRow("44.1 kHz stereo mp3") << "r44.mp3"
                                             << "libmp3lame" << 44100 << 2;
        QTest::newRow("384 kHz wav") << "r384.wav"
                                     << "pcm_s16le" << 384000 << 1;
        QTest::newRow("6 channels flac") << "c6.flac"
                                         << "flac" << 48000 << 6;
        QTest::newRow("8 channels wav") << "c8.wav"
                                        << "pcm_s16le" << 48000 << 8;
        QTest::newRow("m4a aac") << "a.m4a"
                                 << "aac" << 44100 << 2;
        QTest::newRow("ogg opus") << "a.ogg"
                                  << "libopus" << 48000 << 1;
        QTest::newRow("audio of a video (mkv)") << "v.mkv"
                                                << "aac" << 48000 << 2;
    }
    void audioFormatsRatesAndChannels() {
        QFETCH(QString, name);
        QFETCH(QString, encoder);
        QFETCH(int, rate);
        QFETCH(int, channels);
        if (!test::has_encoder(encoder.toUtf8().constData())) QSKIP("encoder not in this FFmpeg");
        const auto audio = path(name.toStdString());
        test::write_tone(audio, encoder.toUtf8().constData(), {300, 0.5, rate, channels, 0.5});
        auto j = job(audio, path(name.toStdString() + ".mp4"));
        j.settings.steps = 1;
        const auto result = render::render_video(model_, j);
        QVERIFY2(std::abs(result.frames - 13) <= 1, std::to_string(result.frames).c_str());
        QCOMPARE(render::probe_video(j.out).frame_count, int(result.frames));
    }

    void audioShorterThanOneClip() {
        const auto audio = path("short.wav");
        test::write_tone(audio, "pcm_s16le", {300, 0.2, 16000, 1, 0.5});
        const auto result = render::render_video(model_, job(audio, path("short.mp4")));
        QCOMPARE(result.frames, int64_t(5));
        QCOMPARE(render::probe_video(path("short.mp4")).frame_count, 5);
    }

    void badAudioIsRefused() {
        QTemporaryDir out;
        const auto target = out.filePath("o.mp4").toStdString();
        write_bytes(path("empty.wav"), "");
        auto message = expect_failure(job(path("empty.wav"), target));
        QVERIFY2(test::contains(message, "empty.wav"), message.c_str());
        // A video file without an audio stream.
        {
            render::VideoWriterOptions o;
            o.width = o.height = 64;
            o.preset = "ultrafast";
            render::VideoWriter w(path("silent.mp4"), o);
            std::vector<uint8_t> black(64 * 64 * 3, 0);
            for (int i = 0; i < 5; ++i)
                w.add_frame(black.data());
            w.finish();
        }
        message = expect_failure(job(path("silent.mp4"), target));
        QVERIFY2(test::contains(message, "no audio stream"), message.c_str());
        // An mp3 cut inside its first frame header: nothing decodes.
        if (test::has_encoder("libmp3lame")) {
            test::write_tone(path("long.mp3"), "libmp3lame", {300, 2.0, 44100, 1, 0.5});
            write_bytes(path("cut.mp3"), read_bytes(path("long.mp3")).substr(0, 60));
            message = expect_failure(job(path("cut.mp3"), target));
            QVERIFY2(test::contains(message, "cut.mp3"), message.c_str());
        }
        QVERIFY(!fs::exists(target));
    }

    void truncatedMp3RendersItsReadablePart() {
        if (!test::has_encoder("libmp3lame")) QSKIP("no mp3 encoder");
        test::write_tone(path("song.mp3"), "libmp3lame", {300, 2.0, 44100, 1, 0.5});
        const auto bytes = read_bytes(path("song.mp3"));
        write_bytes(path("half.mp3"), bytes.substr(0, bytes.size() / 2));
        const auto result = render::render_video(model_, job(path("half.mp3"), path("half.mp4")));
        QVERIFY2(result.frames >= 20 && result.frames <= 30, std::to_string(result.frames).c_str());
    }

    void badPortraitsAreRefused() {
        QTemporaryDir out;
        const auto target = out.filePath("o.mp4").toStdString();
        auto j = job(speech_, target);
        const auto png = read_bytes(portrait_);
        write_bytes(path("truncated.png"), png.substr(0, png.size() / 3));
        write_bytes(path("corrupt.png"), "\x89PNG\r\n\x1a\n this is not a PNG at all");
        std::vector<uint8_t> pixel{255, 0, 0};
        render::write_png(path("1x1.png"), pixel.data(), 1, 1);
        for (const char* name : {"truncated.png", "corrupt.png", "1x1.png", "missing.png"}) {
            j.portrait = path(name);
            const auto message = expect_failure(j);
            QVERIFY2(test::contains(message, name), message.c_str());
        }
    }

    void badCheckpointIsRefused() {
        write_bytes(path("not-a-model.safetensors"), "definitely not safetensors");
        auto message = test::error_of([&] { Model::load(path("not-a-model.safetensors")); });
        QVERIFY2(test::contains(message, "not-a-model.safetensors"), message.c_str());
        const auto bytes = read_bytes(checkpoint_);
        write_bytes(path("cut.safetensors"), bytes.substr(0, bytes.size() - 1000));
        message = test::error_of([&] { Model::load(path("cut.safetensors")); });
        QVERIFY2(test::contains(message, "cut.safetensors"), message.c_str());
    }

    void existingOutputNeedsOverwrite() {
        const auto out = path("keep.mp4");
        write_bytes(out, "precious");
        auto message = expect_failure(job(speech_, out));
        QVERIFY2(test::contains(message, "exists"), message.c_str());
        QCOMPARE(read_bytes(out), std::string("precious"));
        auto j = job(speech_, out);
        j.overwrite = true;
        render::render_video(model_, j);
        QCOMPARE(render::probe_video(out).frame_count, 33);
    }

    void readOnlyFolderIsRefused() {
        QTemporaryDir out;
        const auto folder = out.path().toStdString();
        const bool root = ::geteuid() == 0;
        if (root ? !set_immutable(folder, true)
                 : (fs::permissions(folder, fs::perms::owner_read | fs::perms::owner_exec), false))
            QSKIP("running as root on a file system without the immutable flag");
        const auto message = expect_failure(job(speech_, folder + "/o.mp4"));
        if (root)
            set_immutable(folder, false);
        else
            fs::permissions(folder, fs::perms::owner_all);
        QVERIFY2(test::contains(message, "not writable"), message.c_str());
        QCOMPARE(entries(folder), std::size_t{0});
    }

    void diskWriteErrorLeavesNothing() {
        // A file-size limit makes writes past 30 kB fail like a full disk (EFBIG).
        QTemporaryDir out;
        const auto target = out.filePath("o.mp4").toStdString();
        auto j = job(path("long.wav"), target);
        test::write_tone(j.audio, "pcm_s16le", {300, 4.0, 16000, 1, 0.5});
        j.crf = 0;  // lossless: large frames
        rlimit old{};
        ::getrlimit(RLIMIT_FSIZE, &old);
        auto previous = std::signal(SIGXFSZ, SIG_IGN);
        rlimit limited = old;
        limited.rlim_cur = 30000;
        ::setrlimit(RLIMIT_FSIZE, &limited);
        const auto message = test::error_of([&] { render::render_video(model_, j); });
        ::setrlimit(RLIMIT_FSIZE, &old);
        std::signal(SIGXFSZ, previous);
        QVERIFY2(!message.empty(), "the write error was not reported");
        QCOMPARE(entries(out.path().toStdString()), std::size_t{0});
    }

    void cancelLeavesNoFile() {
        QTemporaryDir out;
        std::atomic<bool> cancel{false};
        render::RenderCallbacks callbacks;
        callbacks.cancel = &cancel;
        callbacks.on_frame = [&](const Frame& f) {
            if (f.index == 15) cancel = true;
        };
        bool cancelled = false;
        try {
            render::render_video(model_, job(speech_, out.filePath("o.mp4").toStdString()),
                                 callbacks);
        } catch (const Cancelled&) {
            cancelled = true;
        }
        QVERIFY(cancelled);
        QCOMPARE(entries(out.path().toStdString()), std::size_t{0});
    }

    void cliRendersWithProgressAndSummary() {
        const QString out = dir_.filePath("cli.mp4");
        const QStringList args{"render",
                               "--checkpoint",
                               checkpoint_.c_str(),
                               "--portrait",
                               portrait_.c_str(),
                               "--audio",
                               speech_.c_str(),
                               "--out",
                               out,
                               "--steps",
                               "2",
                               "--seed",
                               "3",
                               "--threads",
                               "2"};
        QProcess p;
        p.start(QString(LOOPY_BINARY_DIR) + "/app/loopy", args);
        QVERIFY(p.waitForFinished(300000));
        const QString stdout_text = p.readAllStandardOutput(),
                      stderr_text = p.readAllStandardError();
        QVERIFY2(p.exitCode() == 0, qPrintable(stderr_text));
        QVERIFY2(stdout_text.contains("33 frames, 1.32 s of video"), qPrintable(stdout_text));
        QVERIFY2(stdout_text.contains("real-time factor"), qPrintable(stdout_text));
        QVERIFY2(stderr_text.contains("render:") && stderr_text.contains("clip"),
                 qPrintable(stderr_text));
        QCOMPARE(render::probe_video(out.toStdString()).frame_count, 33);
        // Again without --force: refused before any work, the file kept.
        const auto before = read_bytes(out.toStdString());
        p.start(QString(LOOPY_BINARY_DIR) + "/app/loopy", args);
        QVERIFY(p.waitForFinished(300000));
        QCOMPARE(p.exitCode(), 1);
        QVERIFY(QString(p.readAllStandardError()).contains("--force"));
        QCOMPARE(read_bytes(out.toStdString()), before);
    }

    // Another extension still gets an MP4, with a warning that says so.
    void cliWarnsWhenTheNameIsNotMp4() {
        const QString out = dir_.filePath("clip.txt");
        QProcess p;
        p.start(QString(LOOPY_BINARY_DIR) + "/app/loopy",
                {"render", "--checkpoint", checkpoint_.c_str(), "--portrait", portrait_.c_str(),
                 "--audio", speech_.c_str(), "--out", out, "--steps", "1"});
        QVERIFY(p.waitForFinished(300000));
        const QString stderr_text = p.readAllStandardError();
        QVERIFY2(p.exitCode() == 0, qPrintable(stderr_text));
        QVERIFY2(stderr_text.contains("clip.txt: written as MP4"), qPrintable(stderr_text));
        QCOMPARE(render::probe_video(out.toStdString()).video_codec, std::string("h264"));
    }

    void tenMinutesOfAudioStreamInBoundedMemory() {
        // A micro network, one DDIM step, one guidance pass and 0.2 s of audio context: the
        // length is tested here, not the model.
        ModelOptions options;
        options.audio_context_seconds = 0.2;
        auto model = Model::from_network(test::random_network(test::micro_config()), options);
        test::write_wav_s16(path("ten.wav"), 44100, kLongAudioSeconds, 200.0);
        auto j = job(path("ten.wav"), path("ten.mp4"));
        j.settings.steps = 1;
        j.settings.reference_ratio = j.settings.audio_ratio = 1;
        const auto result = render::render_video(model, j);
        const auto& st = result.stats;
        qInfo(
            "per clip: audio %.1f ms, motion %.1f ms, step %.1f ms; decode %.2f ms/frame; "
            "total %.1f s",
            st.audio_encoder.mean() * 1e3, st.motion_encode.mean() * 1e3,
            st.denoise_step.mean() * 1e3, st.vae_decode.mean() * 1e3, result.wall_seconds);
        QCOMPARE(result.frames, int64_t(kLongAudioSeconds * 25));
        // The session holds a clip's audio window plus one read chunk, never the whole file.
        QVERIFY2(result.stats.peak_audio_samples < 4 * 16000,
                 std::to_string(result.stats.peak_audio_samples).c_str());
        QCOMPARE(render::probe_video(path("ten.mp4")).frame_count, int(kLongAudioSeconds * 25));
    }
};

QTEST_GUILESS_MAIN(RenderTest)
#include "test_render.moc"
