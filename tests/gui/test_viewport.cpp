// The OpenGL frame viewport under Xvfb (Mesa software OpenGL): letterboxing, what reaches the
// framebuffer, in-place texture updates and the "frame on screen" report live mode times with.
// ctest runs it twice: as is, and with LOOPY_GL_DEEPBIND=1 (Mesa loaded by isolate_gl_driver).
#include <dlfcn.h>

#include <QtTest>

#include <QOpenGLContext>
#include <cstring>

#include "render/frame_viewport.h"
#include "render/gl_driver.h"

using loopy::render::FrameViewport;

namespace {

QImage test_image(int width, int height, int shift = 0) {
    QImage img(width, height, QImage::Format_RGB32);
    for (int y = 0; y < img.height(); ++y)
        for (int x = 0; x < img.width(); ++x)
            img.setPixel(x, y, qRgb((x * 4 + shift) % 256, y * 8 % 256, x < width / 2 ? 200 : 30));
    return img;
}

// Samples the centre of each source pixel's block in the grabbed framebuffer.
int compare_texel_centres(const QImage& grabbed, const QImage& src, int tolerance, QString* why) {
    const QRect r = FrameViewport::letterbox(src.size(), grabbed.size());
    int checked = 0;
    for (int sy = 2; sy < src.height(); sy += 5) {
        for (int sx = 2; sx < src.width(); sx += 5) {
            const int gx = r.x() + int((sx + 0.5) * r.width() / src.width());
            const int gy = r.y() + int((sy + 0.5) * r.height() / src.height());
            const QColor g = grabbed.pixelColor(gx, gy), s = src.pixelColor(sx, sy);
            if (std::abs(g.red() - s.red()) > tolerance ||
                std::abs(g.green() - s.green()) > tolerance ||
                std::abs(g.blue() - s.blue()) > tolerance) {
                *why =
                    QString("pixel %1,%2: got %3 want %4").arg(sx).arg(sy).arg(g.name(), s.name());
                return -1;
            }
            ++checked;
        }
    }
    return checked;
}

}  // namespace

class ViewportTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    // The binding the viewport chose before its first context; every case below draws with it.
    void glDriverIsBoundAsAsked() {
        FrameViewport view;
        const auto binding = loopy::render::isolate_gl_driver();
        const char* env = std::getenv("LOOPY_GL_DEEPBIND");
        if (env && std::strcmp(env, "1") == 0) {
#if defined(__SANITIZE_ADDRESS__)
            QSKIP("ASan builds never deep-bind");
#endif
            QCOMPARE(binding, loopy::render::GlDriverBinding::DeepBound);
            QVERIFY(dlopen("libGLX_mesa.so.0", RTLD_LAZY | RTLD_NOLOAD) != nullptr);
        } else {
            QCOMPARE(binding, loopy::render::llvm_c_api_is_global()
                                  ? loopy::render::GlDriverBinding::DeepBound
                                  : loopy::render::GlDriverBinding::Default);
        }
    }

    void letterboxKeepsAspect() {
        QCOMPARE(FrameViewport::letterbox({100, 50}, {400, 400}), QRect(0, 100, 400, 200));
        QCOMPARE(FrameViewport::letterbox({50, 100}, {400, 400}), QRect(100, 0, 200, 400));
        QVERIFY(FrameViewport::letterbox({0, 0}, {400, 400}).isEmpty());
    }

    void framesAreDrawnLetterboxed() {
        FrameViewport view;
        view.resize(480, 360);
        view.show();
        QVERIFY(QTest::qWaitForWindowExposed(&view));
        QVERIFY(view.context() && view.context()->isValid());
        const QImage src = test_image(64, 32);
        view.showFrame(src);
        const QImage grabbed = view.grabFramebuffer();
        QString why;
        const int checked = compare_texel_centres(grabbed, src, 24, &why);
        QVERIFY2(checked > 50, qPrintable(why));
        // Outside the letterbox: the background, not the image.
        QVERIFY(grabbed.pixelColor(grabbed.width() / 2, 1).red() < 40);
    }

    // Same-size frames update the texture in place; a new size allocates a new one.
    void sameSizeFramesReuseTheTexture() {
        FrameViewport view;
        view.resize(320, 320);
        view.show();
        QVERIFY(QTest::qWaitForWindowExposed(&view));
        QImage last;
        for (int i = 0; i < 5; ++i) {
            last = test_image(64, 64, i * 40);
            view.showFrame(last);
            view.grabFramebuffer();
        }
        QCOMPARE(view.textureAllocations(), std::uint64_t(1));
        QVERIFY(view.textureUploads() >= 5);
        QString why;
        QVERIFY2(compare_texel_centres(view.grabFramebuffer(), last, 24, &why) > 50,
                 qPrintable(why));
        view.showFrame(test_image(96, 64));
        view.grabFramebuffer();
        QCOMPARE(view.textureAllocations(), std::uint64_t(2));
    }

    // A tagged frame is reported once it reached the screen (after the buffer swap).
    void taggedFramesAreReportedOnScreen() {
        FrameViewport view;
        view.resize(320, 320);
        view.show();
        QVERIFY(QTest::qWaitForWindowExposed(&view));
        QSignalSpy shown(&view, &FrameViewport::frameDisplayed);
        view.showFrame(test_image(64, 64), 7);
        QTRY_COMPARE(shown.count(), 1);
        QCOMPARE(shown.at(0).at(0).value<quint64>(), quint64(7));
        view.update();  // repainting the same frame does not report it again
        QTest::qWait(100);
        QCOMPARE(shown.count(), 1);
    }
};

QTEST_MAIN(ViewportTest)
#include "test_viewport.moc"
