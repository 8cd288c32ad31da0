// `loopy-studio`: the desktop app. Files given on the command line are opened (portraits and
// audio, by extension), as if dropped on the window.
#include <QApplication>
#include <QSurfaceFormat>

#include "audio/ffmpeg_log.h"
#include "core/log.h"
#include "loopy/version.h"
#include "ui/main_window.h"

int main(int argc, char** argv) {
    QSurfaceFormat format;
    format.setSwapInterval(1);  // vsync: no tearing in the viewport
    QSurfaceFormat::setDefaultFormat(format);
    QApplication app(argc, argv);
    QApplication::setApplicationName(QStringLiteral("Loopy Studio"));
    QApplication::setOrganizationName(QStringLiteral("Loopy Studio"));
    QApplication::setApplicationVersion(QStringLiteral(LOOPY_VERSION_STRING));

    QStringList args = QApplication::arguments();
    args.removeFirst();
    const std::string log_file =
        loopy::setup_app_logging({args.contains(QStringLiteral("--verbose")),
                                  args.contains(QStringLiteral("--quiet")), true});
    loopy::audio::route_ffmpeg_logs();
    if (!log_file.empty()) loopy::logger()->info("log file: {}", log_file);

    loopy::ui::MainWindow window;  // the engine's threads are set when a model loads
    window.show();
    for (const QString& arg : args) {
        if (!arg.startsWith(QStringLiteral("--"))) window.openFile(arg);
    }
    return QApplication::exec();
}
