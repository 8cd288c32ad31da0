#pragma once
// The Loopy Studio main window: drop a portrait, see it in the viewport.
#include <QMainWindow>
#include <QString>

class QLabel;
class QDragEnterEvent;
class QDropEvent;

namespace loopy::render {
class FrameViewport;
}

namespace loopy::ui {

class MainWindow : public QMainWindow {
    Q_OBJECT
  public:
    explicit MainWindow(QWidget* parent = nullptr);

    // Loads a portrait image; on failure shows the reason and keeps the previous portrait.
    bool openPortrait(const QString& path);
    QString portraitPath() const { return portrait_path_; }
    QString lastError() const { return last_error_; }
    render::FrameViewport* viewport() const { return viewport_; }

  protected:
    void dragEnterEvent(QDragEnterEvent* event) override;
    void dropEvent(QDropEvent* event) override;

  private:
    void showError(const QString& message);
    void openPortraitDialog();

    render::FrameViewport* viewport_ = nullptr;
    QLabel* status_ = nullptr;
    QString portrait_path_;
    QString last_error_;
};

}  // namespace loopy::ui
