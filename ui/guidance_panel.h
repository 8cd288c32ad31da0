#pragma once
// Guidance controls: audio and reference CFG ratios, DDIM steps (offline and live), seed, and the
// decoder (full VAE or the fast preview). Each number has a slider and a spin box kept in step.
// Changes are announced at once (changed()); the engine applies them from its next clip, also in
// live mode.
#include <QGroupBox>

#include <optional>

#include "ui/engine_worker.h"

class QComboBox;
class QDoubleSpinBox;
class QSlider;
class QSpinBox;
class QPushButton;
class QGridLayout;
class QLabel;

namespace loopy::ui {

class GuidancePanel : public QGroupBox {
    Q_OBJECT
  public:
    explicit GuidancePanel(QWidget* parent = nullptr);

    // The settings for offline generation (steps) or live mode (live steps).
    GuidanceSettings settings(bool live) const;
    int steps() const;
    int liveSteps() const;
    double audioRatio() const;
    double referenceRatio() const;
    quint64 seed() const;
    bool previewDecoder() const;

    void setSteps(int steps);
    void setLiveSteps(int steps);
    void setAudioRatio(double ratio);
    void setReferenceRatio(double ratio);
    void setSeed(quint64 seed);
    void setPreviewDecoder(bool preview);  // ignored while the preview is unavailable
    // Whether the chosen checkpoint has a preview decoder; without one the choice is disabled
    // and falls back to the full VAE decoder.
    void setPreviewAvailable(bool available);
    // The checkpoint's recommended ratios, offered with a button that applies them; hidden for a
    // checkpoint without any. The panel never changes the user's ratios without that click
    // (MainWindow starts from them on a first start).
    void setRecommendation(const std::optional<RecommendedGuidance>& recommended);
    const std::optional<RecommendedGuidance>& recommendation() const { return recommended_; }
    void randomizeSeed();

    static constexpr double kMaxRatio = 15.0;
    static constexpr int kMaxSteps = 50;

  Q_SIGNALS:
    void changed();

  private:
    QDoubleSpinBox* addRatioRow(QGridLayout* grid, int row, const QString& label,
                                const QString& name, double value, const QString& tip);
    QSpinBox* addStepsRow(QGridLayout* grid, int row, const QString& label, const QString& name,
                          int value, const QString& tip);

    QDoubleSpinBox* audio_ratio_ = nullptr;
    QDoubleSpinBox* reference_ratio_ = nullptr;
    QSpinBox* steps_ = nullptr;
    QSpinBox* live_steps_ = nullptr;
    QSpinBox* seed_ = nullptr;
    QComboBox* decoder_ = nullptr;
    QLabel* recommendation_ = nullptr;
    QPushButton* use_recommendation_ = nullptr;
    std::optional<RecommendedGuidance> recommended_;
};

}  // namespace loopy::ui
