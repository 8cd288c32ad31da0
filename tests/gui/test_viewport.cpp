// The main window and its OpenGL viewport under Xvfb (Mesa software OpenGL).
#include <QtTest>

#include <QMimeData>
#include <QOpenGLContext>

#include "render/frame_viewport.h"
#include "ui/main_window.h"

namespace {

QImage test_portrait() {
    QImage img(64, 32, QImage::Format_RGB32);
    for (int y = 0; y < img.height(); ++y)
        for (int x = 0; x < img.width(); ++x)
            img.setPixel(x, y, qRgb(x * 4, y * 8, x < 32 ? 200 : 30));
    return img;
}

void drop_file(QWidget* target, const QString& path) {
    QMimeData mime;
    mime.setUrls({QUrl::fromLocalFile(path)});
    QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(target, &enter);
    QDropEvent drop(QPointF(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(target, &drop);
}

}  // namespace

class ViewportTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void letterboxKeepsAspect() {
        using loopy::render::FrameViewport;
        QCOMPARE(FrameViewport::letterbox({100, 50}, {400, 400}), QRect(0, 100, 400, 200));
        QCOMPARE(FrameViewport::letterbox({50, 100}, {400, 400}), QRect(100, 0, 200, 400));
        QVERIFY(FrameViewport::letterbox({0, 0}, {400, 400}).isEmpty());
    }

    void droppedPortraitIsDrawn() {
        QTemporaryDir dir;
        const QString path = dir.filePath("face.png");
        QVERIFY(test_portrait().save(path));

        loopy::ui::MainWindow window;
        window.show();
        QVERIFY(QTest::qWaitForWindowExposed(&window));
        drop_file(&window, path);
        QCOMPARE(window.portraitPath(), path);

        auto* view = window.viewport();
        QVERIFY(view->context() && view->context()->isValid());
        const QImage grabbed = view->grabFramebuffer();
        const QRect r = loopy::render::FrameViewport::letterbox({64, 32}, grabbed.size());
        QVERIFY(!r.isEmpty());
        // Sample the centre of each texel block and compare with the source pixel.
        const QImage src = test_portrait();
        int checked = 0;
        for (int sy = 4; sy < 32; sy += 9) {
            for (int sx = 4; sx < 64; sx += 9) {
                const int gx = r.x() + int((sx + 0.5) * r.width() / 64.0);
                const int gy = r.y() + int((sy + 0.5) * r.height() / 32.0);
                const QColor g = grabbed.pixelColor(gx, gy);
                const QColor s = src.pixelColor(sx, sy);
                QVERIFY2(std::abs(g.red() - s.red()) <= 24 &&
                             std::abs(g.green() - s.green()) <= 24 &&
                             std::abs(g.blue() - s.blue()) <= 24,
                         qPrintable(QString("pixel %1,%2: got %3 want %4")
                                        .arg(sx)
                                        .arg(sy)
                                        .arg(g.name(), s.name())));
                ++checked;
            }
        }
        QVERIFY(checked > 20);
        // Outside the letterbox: the background, not the image.
        QVERIFY(grabbed.pixelColor(grabbed.width() / 2, 1).red() < 40);
    }

    void unsupportedDropKeepsPriorState() {
        QTemporaryDir dir;
        const QString good = dir.filePath("face.png");
        QVERIFY(test_portrait().save(good));
        const QString bad = dir.filePath("broken.png");
        QFile f(bad);
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("\x89PNG\r\n\x1a\n garbage");
        f.close();

        loopy::ui::MainWindow window;
        window.show();
        QVERIFY(QTest::qWaitForWindowExposed(&window));
        QVERIFY(window.openPortrait(good));
        drop_file(&window, bad);
        QCOMPARE(window.portraitPath(), good);
        QVERIFY2(window.lastError().contains("broken.png"), qPrintable(window.lastError()));
        QCOMPARE(window.viewport()->currentFrame().size(), QSize(64, 32));
    }
};

QTEST_MAIN(ViewportTest)
#include "test_viewport.moc"
