#include "render/frame_viewport.h"

#include <QOpenGLTexture>

namespace loopy::render {

FrameViewport::FrameViewport(QWidget* parent) : QOpenGLWidget(parent) {
    setMinimumSize(256, 256);
}

FrameViewport::~FrameViewport() {
    makeCurrent();
    texture_.reset();
    if (blitter_.isCreated()) blitter_.destroy();
    doneCurrent();
}

void FrameViewport::showFrame(const QImage& frame) {
    frame_ = frame.convertToFormat(QImage::Format_RGBA8888);
    dirty_ = true;
    ++frames_shown_;
    update();
}

void FrameViewport::clearFrame() {
    frame_ = QImage();
    dirty_ = true;
    update();
}

QRect FrameViewport::letterbox(const QSize& frame, const QSize& widget) {
    if (frame.isEmpty() || widget.isEmpty()) return {};
    const QSize fitted = frame.scaled(widget, Qt::KeepAspectRatio);
    return QRect(
        QPoint((widget.width() - fitted.width()) / 2, (widget.height() - fitted.height()) / 2),
        fitted);
}

void FrameViewport::initializeGL() {
    initializeOpenGLFunctions();
    blitter_.create();
}

void FrameViewport::paintGL() {
    glClearColor(0.08f, 0.08f, 0.09f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    if (dirty_) {
        texture_.reset();
        if (!frame_.isNull()) {
            texture_ =
                std::make_unique<QOpenGLTexture>(frame_, QOpenGLTexture::DontGenerateMipMaps);
            texture_->setMinificationFilter(QOpenGLTexture::Linear);
            texture_->setMagnificationFilter(QOpenGLTexture::Linear);
        }
        dirty_ = false;
    }
    if (!texture_) return;
    const qreal dpr = devicePixelRatioF();
    const QSize target_size(qRound(width() * dpr), qRound(height() * dpr));
    const QRect target = letterbox(frame_.size(), target_size);
    glViewport(target.x(), target_size.height() - target.y() - target.height(), target.width(),
               target.height());
    blitter_.bind();
    // Whole viewport, image rows top-down (QImage) → OpenGL's bottom-up origin.
    const QMatrix4x4 transform =
        QOpenGLTextureBlitter::targetTransform(QRectF(0, 0, target.width(), target.height()),
                                               QRect(0, 0, target.width(), target.height()));
    blitter_.blit(texture_->textureId(), transform, QOpenGLTextureBlitter::OriginTopLeft);
    blitter_.release();
    glViewport(0, 0, target_size.width(), target_size.height());
}

}  // namespace loopy::render
