#include "ui/model_panel.h"

#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>

#include "core/resources.h"

namespace loopy::ui {

ModelPanel::ModelPanel(QWidget* parent) : QGroupBox(tr("Model"), parent) {
    auto* form = new QFormLayout(this);
    auto* row = new QHBoxLayout;
    checkpoint_ = new QLineEdit(this);
    checkpoint_->setObjectName(QStringLiteral("checkpointEdit"));
    checkpoint_->setPlaceholderText(tr("No checkpoint chosen"));
    auto* browse = new QPushButton(tr("..."), this);
    browse->setToolTip(tr("Choose a Loopy checkpoint (.safetensors)"));
    row->addWidget(checkpoint_, 1);
    row->addWidget(browse);
    form->addRow(tr("Checkpoint"), row);

    device_ = new QComboBox(this);
    device_->setObjectName(QStringLiteral("deviceCombo"));
    device_->addItem(tr("CPU"), QStringLiteral("cpu"));
    if (EngineWorker::cudaAvailable()) device_->addItem(tr("CUDA"), QStringLiteral("cuda"));
    form->addRow(tr("Device"), device_);

    threads_ = new QSpinBox(this);
    threads_->setObjectName(QStringLiteral("threadsSpin"));
    threads_->setRange(0, EngineWorker::hardwareThreads());
    threads_->setSpecialValueText(tr("All cores"));
    form->addRow(tr("Threads"), threads_);

    connect(browse, &QPushButton::clicked, this, &ModelPanel::browse);
    connect(checkpoint_, &QLineEdit::editingFinished, this, &ModelPanel::changed);
    connect(device_, &QComboBox::currentIndexChanged, this, &ModelPanel::changed);
    connect(threads_, &QSpinBox::valueChanged, this, &ModelPanel::changed);
}

EngineConfig ModelPanel::config() const {
    EngineConfig c;
    c.checkpoint = checkpoint();
    c.device = device_->currentData().toString();
    c.threads = threads_->value();
    return c;
}

QString ModelPanel::checkpoint() const {
    return checkpoint_->text().trimmed();
}

void ModelPanel::setCheckpoint(const QString& path) {
    checkpoint_->setText(path);
    Q_EMIT changed();
}

void ModelPanel::setDevice(const QString& device) {
    const int index = device_->findData(device);
    device_->setCurrentIndex(index >= 0 ? index : 0);
}

void ModelPanel::setThreads(int threads) {
    threads_->setValue(threads);
}

QString ModelPanel::defaultCheckpoint() {
    // The same search as the CLI's (core/resources.h), so both find the same demo model.
    return QString::fromStdString(loopy::default_checkpoint());
}

void ModelPanel::browse() {
    const QString start = checkpoint().isEmpty() ? QString() : QFileInfo(checkpoint()).path();
    const QString path = QFileDialog::getOpenFileName(this, tr("Choose a Loopy checkpoint"), start,
                                                      tr("Loopy checkpoints (*.safetensors)"));
    if (!path.isEmpty()) setCheckpoint(path);
}

}  // namespace loopy::ui
