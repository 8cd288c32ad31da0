#include "render/frame_viewport.h"

#include <QOpenGLTexture>

#include "render/gl_driver.h"

namespace loopy::render {

FrameViewport::FrameViewport(QWidget* parent) : QOpenGLWidget(parent) {
    isolate_gl_driver();  // before the window's first GL context
    setMinimumSize(256, 256);
    connect(this, &QOpenGLWidget::frameSwapped, this, &FrameViewport::onFrameSwapped);
}

FrameViewport::~FrameViewport() {
    makeCurrent();
    texture_.reset();
    if (blitter_.isCreated()) blitter_.destroy();
    doneCurrent();
}

void FrameViewport::showFrame(const QImage& frame, quint64 tag) {
    frame_ = frame.convertToFormat(QImage::Format_RGBA8888);
    tag_ = tag;
    dirty_ = true;
    ++frames_shown_;
    update();
}

void FrameViewport::clearFrame() {
    frame_ = QImage();
    tag_ = 0;
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

// Same size as the texture: glTexSubImage2D into it; otherwise a new texture.
void FrameViewport::upload() {
    dirty_ = false;
    if (frame_.isNull()) {
        texture_.reset();
        return;
    }
    if (texture_ && texture_->width() == frame_.width() && texture_->height() == frame_.height()) {
        texture_->setData(QOpenGLTexture::RGBA, QOpenGLTexture::UInt8, frame_.constBits());
    } else {
        texture_ = std::make_unique<QOpenGLTexture>(frame_, QOpenGLTexture::DontGenerateMipMaps);
        texture_->setMinificationFilter(QOpenGLTexture::Linear);
        texture_->setMagnificationFilter(QOpenGLTexture::Linear);
        texture_->setWrapMode(QOpenGLTexture::ClampToEdge);
        ++allocations_;
    }
    ++uploads_;
}

void FrameViewport::paintGL() {
    glClearColor(0.08f, 0.08f, 0.09f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    if (dirty_) upload();
    painted_tag_ = tag_;
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

void FrameViewport::onFrameSwapped() {
    if (painted_tag_ == 0 || painted_tag_ == reported_tag_) return;  // each frame once
    reported_tag_ = painted_tag_;
    Q_EMIT frameDisplayed(painted_tag_);
}

}  // namespace loopy::render
