#include "ui/guidance_panel.h"

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QGridLayout>
#include <QLabel>
#include <QPushButton>
#include <QRandomGenerator>
#include <QSignalBlocker>
#include <QSlider>
#include <QSpinBox>

#include <algorithm>
#include <climits>
#include <cmath>

namespace loopy::ui {
namespace {
constexpr int kRatioTicks = 10;  // slider positions per unit of ratio (0.1 steps)
}

GuidancePanel::GuidancePanel(QWidget* parent) : QGroupBox(tr("Guidance"), parent) {
    auto* grid = new QGridLayout(this);
    audio_ratio_ = addRatioRow(grid, 0, tr("Audio CFG"), QStringLiteral("audioRatio"), 5.0,
                               tr("How strongly the motion follows the audio (classifier-free "
                                  "guidance ratio)"));
    reference_ratio_ = addRatioRow(grid, 1, tr("Reference CFG"), QStringLiteral("referenceRatio"),
                                   3.0, tr("How strongly the frames keep the portrait's look"));
    steps_ = addStepsRow(grid, 2, tr("Steps"), QStringLiteral("steps"), 25,
                         tr("DDIM steps per clip for Generate: more is cleaner and slower"));
    live_steps_ = addStepsRow(grid, 3, tr("Live steps"), QStringLiteral("liveSteps"), 4,
                              tr("DDIM steps per clip in live mode (keep it small)"));

    grid->addWidget(new QLabel(tr("Seed"), this), 4, 0);
    seed_ = new QSpinBox(this);
    seed_->setObjectName(QStringLiteral("seedSpin"));
    seed_->setRange(0, INT_MAX);
    seed_->setToolTip(
        tr("The noise of clip c comes from (seed, c): the same seed, the same video"));
    grid->addWidget(seed_, 4, 1);
    auto* random = new QPushButton(tr("Random"), this);
    random->setObjectName(QStringLiteral("randomSeedButton"));
    grid->addWidget(random, 4, 2);
    connect(seed_, &QSpinBox::valueChanged, this, &GuidancePanel::changed);
    connect(random, &QPushButton::clicked, this, &GuidancePanel::randomizeSeed);

    grid->addWidget(new QLabel(tr("Decoder"), this), 5, 0);
    decoder_ = new QComboBox(this);
    decoder_->setObjectName(QStringLiteral("decoderCombo"));
    decoder_->addItem(tr("Full VAE"));
    decoder_->addItem(tr("Fast preview"));
    grid->addWidget(decoder_, 5, 1, 1, 2);
    connect(decoder_, &QComboBox::currentIndexChanged, this, &GuidancePanel::changed);
    setPreviewAvailable(false);

    recommendation_ = new QLabel(this);
    recommendation_->setObjectName(QStringLiteral("recommendationLabel"));
    grid->addWidget(recommendation_, 6, 0, 1, 2);
    use_recommendation_ = new QPushButton(tr("Use"), this);
    use_recommendation_->setObjectName(QStringLiteral("useRecommendationButton"));
    use_recommendation_->setToolTip(tr("Set the CFG ratios to the ones this model was tuned for"));
    grid->addWidget(use_recommendation_, 6, 2);
    connect(use_recommendation_, &QPushButton::clicked, this, [this] {
        if (!recommended_) return;
        setAudioRatio(recommended_->audio_ratio);
        setReferenceRatio(recommended_->reference_ratio);
    });
    setRecommendation(std::nullopt);
    grid->setColumnStretch(1, 1);
}

// A slider (0.1 steps) and a spin box showing the same ratio.
QDoubleSpinBox* GuidancePanel::addRatioRow(QGridLayout* grid, int row, const QString& label,
                                           const QString& name, double value, const QString& tip) {
    auto* slider = new QSlider(Qt::Horizontal, this);
    slider->setObjectName(name + QStringLiteral("Slider"));
    slider->setRange(0, int(kMaxRatio * kRatioTicks));
    slider->setPageStep(kRatioTicks);
    auto* spin = new QDoubleSpinBox(this);
    spin->setObjectName(name + QStringLiteral("Spin"));
    spin->setRange(0, kMaxRatio);
    spin->setDecimals(1);
    spin->setSingleStep(0.1);
    spin->setValue(value);
    slider->setValue(int(std::lround(value * kRatioTicks)));
    slider->setToolTip(tip);
    spin->setToolTip(tip);
    connect(slider, &QSlider::valueChanged, spin,
            [spin](int v) { spin->setValue(double(v) / kRatioTicks); });
    connect(spin, &QDoubleSpinBox::valueChanged, this, [this, slider](double v) {
        const QSignalBlocker block(slider);
        slider->setValue(int(std::lround(v * kRatioTicks)));
        Q_EMIT changed();
    });
    grid->addWidget(new QLabel(label, this), row, 0);
    grid->addWidget(slider, row, 1);
    grid->addWidget(spin, row, 2);
    return spin;
}

QSpinBox* GuidancePanel::addStepsRow(QGridLayout* grid, int row, const QString& label,
                                     const QString& name, int value, const QString& tip) {
    auto* slider = new QSlider(Qt::Horizontal, this);
    slider->setObjectName(name + QStringLiteral("Slider"));
    slider->setRange(1, kMaxSteps);
    slider->setPageStep(5);
    auto* spin = new QSpinBox(this);
    spin->setObjectName(name + QStringLiteral("Spin"));
    spin->setRange(1, kMaxSteps);
    spin->setValue(value);
    slider->setValue(value);
    slider->setToolTip(tip);
    spin->setToolTip(tip);
    connect(slider, &QSlider::valueChanged, spin, &QSpinBox::setValue);
    connect(spin, &QSpinBox::valueChanged, this, [this, slider](int v) {
        const QSignalBlocker block(slider);
        slider->setValue(v);
        Q_EMIT changed();
    });
    grid->addWidget(new QLabel(label, this), row, 0);
    grid->addWidget(slider, row, 1);
    grid->addWidget(spin, row, 2);
    return spin;
}

GuidanceSettings GuidancePanel::settings(bool live) const {
    GuidanceSettings s;
    s.steps = live ? liveSteps() : steps();
    s.audio_ratio = audioRatio();
    s.reference_ratio = referenceRatio();
    s.seed = seed();
    s.preview_decoder = previewDecoder();
    return s;
}

int GuidancePanel::steps() const {
    return steps_->value();
}
int GuidancePanel::liveSteps() const {
    return live_steps_->value();
}
double GuidancePanel::audioRatio() const {
    return audio_ratio_->value();
}
double GuidancePanel::referenceRatio() const {
    return reference_ratio_->value();
}
quint64 GuidancePanel::seed() const {
    return quint64(seed_->value());
}
bool GuidancePanel::previewDecoder() const {
    return decoder_->currentIndex() == 1;
}

void GuidancePanel::setSteps(int steps) {
    steps_->setValue(steps);
}
void GuidancePanel::setLiveSteps(int steps) {
    live_steps_->setValue(steps);
}
void GuidancePanel::setAudioRatio(double ratio) {
    audio_ratio_->setValue(ratio);
}
void GuidancePanel::setReferenceRatio(double ratio) {
    reference_ratio_->setValue(ratio);
}
void GuidancePanel::setSeed(quint64 seed) {
    seed_->setValue(int(std::min<quint64>(seed, INT_MAX)));
}

void GuidancePanel::setPreviewDecoder(bool preview) {
    if (!preview || decoder_->isEnabled()) decoder_->setCurrentIndex(preview ? 1 : 0);
}

void GuidancePanel::setPreviewAvailable(bool available) {
    if (!available) decoder_->setCurrentIndex(0);
    decoder_->setEnabled(available);
    decoder_->setToolTip(
        available ? tr("Fast preview: a small decoder distilled from the VAE, several times "
                       "faster and blurrier. Full VAE: the best picture")
                  : tr("This checkpoint has no fast preview decoder (make one with `loopy "
                       "train-vae --preview`): frames are decoded by the full VAE"));
}

void GuidancePanel::setRecommendation(const std::optional<RecommendedGuidance>& recommended) {
    recommended_ = recommended;
    recommendation_->setVisible(recommended.has_value());
    use_recommendation_->setVisible(recommended.has_value());
    if (recommended)
        recommendation_->setText(tr("This model's choice: audio %1, reference %2")
                                     .arg(recommended->audio_ratio, 0, 'f', 1)
                                     .arg(recommended->reference_ratio, 0, 'f', 1));
}

void GuidancePanel::randomizeSeed() {
    seed_->setValue(int(QRandomGenerator::global()->bounded(INT_MAX)));
}

}  // namespace loopy::ui
