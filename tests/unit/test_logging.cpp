// Engine logs reach whatever sink the application installs; FFmpeg's av_log is routed there too;
// the app set-up writes a log file in the user's data dir.
#include <QtTest>

extern "C" {
#include <libavutil/log.h>
}

#include <fstream>
#include <sstream>

#include "audio/ffmpeg_log.h"
#include "core/log.h"

namespace {
struct Captured {
    std::vector<std::pair<spdlog::level::level_enum, std::string>> lines;
    bool contains(spdlog::level::level_enum level, const std::string& text) const {
        for (const auto& [l, s] : lines)
            if (l == level && s.find(text) != std::string::npos) return true;
        return false;
    }
};
}  // namespace

class LoggingTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void replaceableSinkGetsEngineLogs() {
        Captured cap;
        loopy::set_log_sinks(
            {loopy::make_callback_sink([&](spdlog::level::level_enum l, const std::string& s) {
                cap.lines.emplace_back(l, s);
            })});
        loopy::set_log_level(spdlog::level::debug);
        loopy::logger()->warn("model has {} layers", 12);
        loopy::logger()->debug("detail");
        QVERIFY(cap.contains(spdlog::level::warn, "model has 12 layers"));
        QVERIFY(cap.contains(spdlog::level::debug, "detail"));
    }

    void ffmpegLogsAreRouted() {
        Captured cap;
        loopy::set_log_sinks(
            {loopy::make_callback_sink([&](spdlog::level::level_enum l, const std::string& s) {
                cap.lines.emplace_back(l, s);
            })});
        loopy::audio::route_ffmpeg_logs();
        av_log(nullptr, AV_LOG_ERROR, "decoder %s failed", "mp3");
        av_log(nullptr, AV_LOG_ERROR, " with code %d\n", 7);  // one line in two pieces
        av_log(nullptr, AV_LOG_WARNING, "odd header\n");
        av_log(nullptr, AV_LOG_DEBUG, "hidden below the level\n");
        QVERIFY(cap.contains(spdlog::level::err, "ffmpeg: decoder mp3 failed with code 7"));
        QVERIFY(cap.contains(spdlog::level::warn, "ffmpeg: odd header"));
        QVERIFY(!cap.contains(spdlog::level::debug, "hidden"));
        QCOMPARE(QString::fromStdString(loopy::audio::ffmpeg_level_name(AV_LOG_FATAL)),
                 QString("critical"));
    }

    void appLoggingWritesRotatingFileInDataDir() {
        QTemporaryDir dir;
        qputenv("XDG_DATA_HOME", dir.path().toUtf8());
        const std::string path = loopy::setup_app_logging({false, true, true});
        QCOMPARE(QString::fromStdString(path), dir.filePath("loopy-studio/logs/loopy.log"));
        loopy::logger()->warn("written to the file");
        loopy::logger()->flush();
        std::ifstream in(path);
        std::stringstream ss;
        ss << in.rdbuf();
        QVERIFY2(ss.str().find("written to the file") != std::string::npos, ss.str().c_str());
    }
};

QTEST_APPLESS_MAIN(LoggingTest)
#include "test_logging.moc"
