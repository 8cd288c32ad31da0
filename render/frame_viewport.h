#pragma once
// Shows video frames in an OpenGL widget: one texture, re-uploaded per frame, drawn letterboxed
// at the frame's aspect ratio. Display only: it never blocks on, or talks to, the engine.
#include <QImage>
#include <QOpenGLFunctions>
#include <QOpenGLTextureBlitter>
#include <QOpenGLWidget>
#include <memory>

class QOpenGLTexture;

namespace loopy::render {

class FrameViewport : public QOpenGLWidget, protected QOpenGLFunctions {
    Q_OBJECT
  public:
    explicit FrameViewport(QWidget* parent = nullptr);
    ~FrameViewport() override;

    // Thread: UI. The image is copied (implicitly shared) and uploaded at the next paint.
    void showFrame(const QImage& frame);
    void clearFrame();
    const QImage& currentFrame() const { return frame_; }
    std::uint64_t framesShown() const { return frames_shown_; }

    // Where the frame lands inside a widget of `widget` size (device pixels).
    static QRect letterbox(const QSize& frame, const QSize& widget);

  protected:
    void initializeGL() override;
    void paintGL() override;

  private:
    QImage frame_;
    bool dirty_ = false;
    std::unique_ptr<QOpenGLTexture> texture_;
    QOpenGLTextureBlitter blitter_;
    std::uint64_t frames_shown_ = 0;
};

}  // namespace loopy::render
