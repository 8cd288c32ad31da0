#include "ui/main_window.h"

#include <QAction>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QImageReader>
#include <QLabel>
#include <QMenuBar>
#include <QMimeData>
#include <QStatusBar>

#include "loopy/version.h"
#include "render/frame_viewport.h"

namespace loopy::ui {
namespace {
constexpr qint64 kMaxPortraitPixels = 100'000'000;  // larger images are refused, not decoded
}

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
    setWindowTitle(QStringLiteral("Loopy Studio %1").arg(QStringLiteral(LOOPY_VERSION_STRING)));
    setAcceptDrops(true);
    viewport_ = new render::FrameViewport(this);
    setCentralWidget(viewport_);
    status_ = new QLabel(tr("Drop a portrait image here"), this);
    statusBar()->addWidget(status_, 1);

    QMenu* file = menuBar()->addMenu(tr("&File"));
    QAction* open = file->addAction(tr("&Open portrait..."));
    open->setShortcut(QKeySequence::Open);
    connect(open, &QAction::triggered, this, &MainWindow::openPortraitDialog);
    QAction* quit = file->addAction(tr("&Quit"));
    quit->setShortcut(QKeySequence::Quit);
    connect(quit, &QAction::triggered, this, &QWidget::close);
    resize(800, 640);
}

bool MainWindow::openPortrait(const QString& path) {
    QImageReader reader(path);
    reader.setAutoTransform(true);
    const QSize size = reader.size();
    if (!reader.canRead()) {
        showError(tr("Cannot open %1: %2").arg(QFileInfo(path).fileName(), reader.errorString()));
        return false;
    }
    if (size.isValid() && qint64(size.width()) * size.height() > kMaxPortraitPixels) {
        showError(tr("%1 is %2x%3 pixels; the limit is 100 megapixels")
                      .arg(QFileInfo(path).fileName())
                      .arg(size.width())
                      .arg(size.height()));
        return false;
    }
    const QImage image = reader.read();
    if (image.isNull()) {
        showError(tr("Cannot decode %1: %2").arg(QFileInfo(path).fileName(), reader.errorString()));
        return false;
    }
    portrait_path_ = path;
    last_error_.clear();
    viewport_->showFrame(image);
    status_->setText(tr("Portrait: %1 (%2x%3)")
                         .arg(QFileInfo(path).fileName())
                         .arg(image.width())
                         .arg(image.height()));
    return true;
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event) {
    if (event->mimeData()->hasUrls()) event->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* event) {
    for (const QUrl& url : event->mimeData()->urls()) {
        if (url.isLocalFile()) openPortrait(url.toLocalFile());
    }
    event->acceptProposedAction();
}

void MainWindow::showError(const QString& message) {
    last_error_ = message;
    status_->setText(message);
}

void MainWindow::openPortraitDialog() {
    const QString path = QFileDialog::getOpenFileName(
        this, tr("Open portrait"), QString(), tr("Images (*.png *.jpg *.jpeg *.webp *.bmp)"));
    if (!path.isEmpty()) openPortrait(path);
}

}  // namespace loopy::ui
