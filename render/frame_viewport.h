#pragma once
// Shows video frames in an OpenGL widget: one texture, updated in place per frame (re-created only
// when the frame size changes), drawn letterboxed at the frame's aspect ratio. QOpenGLWidget
// renders into a framebuffer object that Qt composites into the window, and the app asks for
// vsync (swap interval 1), so a frame is never shown half-updated. Display only: it never blocks
// on, or talks to, the engine.
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

    // Thread: UI. The image is converted to RGBA and uploaded at the next paint. A non-zero `tag`
    // is reported by frameDisplayed() once this frame has reached the screen.
    void showFrame(const QImage& frame, quint64 tag = 0);
    void clearFrame();
    const QImage& currentFrame() const { return frame_; }
    std::uint64_t framesShown() const { return frames_shown_; }
    std::uint64_t textureUploads() const { return uploads_; }
    std::uint64_t textureAllocations() const { return allocations_; }

    // Where the frame lands inside a widget of `widget` size (device pixels).
    static QRect letterbox(const QSize& frame, const QSize& widget);

  Q_SIGNALS:
    // The frame shown with this tag was painted and the window's buffers swapped.
    void frameDisplayed(quint64 tag);

  protected:
    void initializeGL() override;
    void paintGL() override;

  private:
    void upload();
    void onFrameSwapped();

    QImage frame_;
    quint64 tag_ = 0;           // of frame_
    quint64 painted_tag_ = 0;   // of the frame the last paint drew
    quint64 reported_tag_ = 0;  // the last one frameDisplayed() reported
    bool dirty_ = false;
    std::unique_ptr<QOpenGLTexture> texture_;
    QOpenGLTextureBlitter blitter_;
    std::uint64_t frames_shown_ = 0;
    std::uint64_t uploads_ = 0;
    std::uint64_t allocations_ = 0;
};

}  // namespace loopy::render
