// `loopy-studio`: the desktop app.
#include <QApplication>
#include <QSurfaceFormat>

#include "audio/ffmpeg_log.h"
#include "core/log.h"
#include "core/system.h"
#include "ui/main_window.h"

int main(int argc, char** argv) {
    QSurfaceFormat format;
    format.setSwapInterval(1);  // vsync: no tearing in the viewport
    QSurfaceFormat::setDefaultFormat(format);
    QApplication app(argc, argv);
    QApplication::setApplicationName(QStringLiteral("Loopy Studio"));
    QApplication::setOrganizationName(QStringLiteral("Loopy Studio"));

    const QStringList args = QApplication::arguments();
    loopy::setup_app_logging({args.contains(QStringLiteral("--verbose")),
                              args.contains(QStringLiteral("--quiet")), true});
    loopy::audio::route_ffmpeg_logs();
    loopy::set_num_threads(0);

    loopy::ui::MainWindow window;
    window.show();
    return QApplication::exec();
}
