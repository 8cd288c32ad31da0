#include "ui/log_panel.h"

#include <QFontDatabase>
#include <QPlainTextEdit>

#include <deque>
#include <mutex>
#include <string>

#include <spdlog/sinks/sink.h>

#include "core/log.h"

namespace loopy::ui {
namespace {

constexpr std::size_t kMailboxLines = 2000;  // lines waiting beyond this: the oldest go
constexpr int kPanelLines = 5000;

struct Mailbox {
    std::mutex mutex;
    std::deque<std::string> lines;
};

Mailbox& mailbox() {
    static Mailbox instance;
    return instance;
}

const char* level_name(spdlog::level::level_enum level) {
    switch (level) {
        case spdlog::level::trace:
            return "trace";
        case spdlog::level::debug:
            return "debug";
        case spdlog::level::info:
            return "info";
        case spdlog::level::warn:
            return "warning";
        case spdlog::level::err:
            return "error";
        case spdlog::level::critical:
            return "critical";
        default:
            return "";
    }
}

}  // namespace

void LogPanel::installSink() {
    static std::once_flag once;
    std::call_once(once, [] {
        auto sink =
            make_callback_sink([](spdlog::level::level_enum level, const std::string& line) {
                Mailbox& box = mailbox();
                std::lock_guard<std::mutex> lock(box.mutex);
                box.lines.push_back(std::string(level_name(level)) + ": " + line);
                if (box.lines.size() > kMailboxLines) box.lines.pop_front();
            });
        sink->set_pattern("%H:%M:%S.%e %v");
        auto sinks = logger()->sinks();
        sinks.push_back(sink);
        set_log_sinks(std::move(sinks));
    });
}

LogPanel::LogPanel(QWidget* parent) : QDockWidget(tr("Log"), parent) {
    setObjectName(QStringLiteral("logPanel"));
    installSink();
    view_ = new QPlainTextEdit(this);
    view_->setObjectName(QStringLiteral("logView"));
    view_->setReadOnly(true);
    view_->setMaximumBlockCount(kPanelLines);
    view_->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
    setWidget(view_);
    timer_.setInterval(100);
    connect(&timer_, &QTimer::timeout, this, &LogPanel::drain);
    timer_.start();
}

void LogPanel::drain() {
    std::deque<std::string> lines;
    {
        Mailbox& box = mailbox();
        std::lock_guard<std::mutex> lock(box.mutex);
        lines.swap(box.lines);
    }
    for (const auto& line : lines)
        view_->appendPlainText(QString::fromStdString(line));
}

QString LogPanel::text() {
    drain();
    return view_->toPlainText();
}

}  // namespace loopy::ui
