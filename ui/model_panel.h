#pragma once
// Model controls: the checkpoint file, the device (CPU, or CUDA when LibTorch has it) and the
// number of LibTorch threads. The engine loads the model when a job starts with a new choice.
#include <QGroupBox>

#include "ui/engine_worker.h"

class QComboBox;
class QLineEdit;
class QSpinBox;

namespace loopy::ui {

class ModelPanel : public QGroupBox {
    Q_OBJECT
  public:
    explicit ModelPanel(QWidget* parent = nullptr);

    EngineConfig config() const;
    QString checkpoint() const;
    void setCheckpoint(const QString& path);  // "" : none chosen
    void setDevice(const QString& device);    // "cpu" / "cuda" (CPU when CUDA is unavailable)
    void setThreads(int threads);             // 0: all cores

    // The bundled demo model (loopy::default_checkpoint(): $LOOPY_DATA_DIR, the installed share
    // folder, resources/ next to the executable, the source tree); "" if none exists.
    static QString defaultCheckpoint();

  Q_SIGNALS:
    void changed();

  private:
    void browse();

    QLineEdit* checkpoint_ = nullptr;
    QComboBox* device_ = nullptr;
    QSpinBox* threads_ = nullptr;
};

}  // namespace loopy::ui
