#pragma once
// The log panel: a dock showing the engine's log lines (the "loopy" spdlog logger). A callback
// sink (core/log.h) is added to the logger once; it may be called from any thread, so it only
// appends to a bounded mailbox, and the panel drains the mailbox on the UI thread with a timer.
#include <QDockWidget>
#include <QTimer>

class QPlainTextEdit;

namespace loopy::ui {

class LogPanel : public QDockWidget {
    Q_OBJECT
  public:
    explicit LogPanel(QWidget* parent = nullptr);

    // Adds the mailbox sink to the engine logger (once per process; later calls do nothing).
    // Call it before threads that log start, as spdlog's sink list is not synchronised.
    static void installSink();
    QString text();  // everything logged so far (drains the mailbox first)

  private:
    void drain();

    QPlainTextEdit* view_ = nullptr;
    QTimer timer_;
};

}  // namespace loopy::ui
