#pragma once
// The Loopy Studio main window: drop (or open) a portrait and an audio file, Generate, watch the
// frames arrive, play and scrub the result, Export MP4; or go Live with a microphone.
// docs/gui.md is the tour; the engine runs behind EngineWorker on its own thread.
#include <QMainWindow>
#include <QPointer>
#include <QString>
#include <QStringList>

#include <memory>
#include <vector>

#include "ui/engine_worker.h"
#include "ui/media_inputs.h"

class QAction;
class QComboBox;
class QDragEnterEvent;
class QDropEvent;
class QLabel;
class QMenu;
class QProgressBar;
class QPushButton;
class QSettings;
class QSlider;

namespace loopy::render {
class FrameViewport;
}

namespace loopy::ui {

class ExportJob;
class FrameStore;
class GuidancePanel;
class LiveView;
class LogPanel;
class ModelPanel;
class Playback;

class MainWindow : public QMainWindow {
    Q_OBJECT
  public:
    enum class Mode { Idle, Generating, Live, Exporting };

    explicit MainWindow(QWidget* parent = nullptr);
    ~MainWindow() override;  // saves the settings, stops the engine

    // Files. On failure the reason shows (lastError(), the error label, the log) and whatever was
    // loaded before stays.
    bool openFile(const QString& path);  // a portrait or an audio file, by extension
    bool openPortrait(const QString& path);
    bool openAudio(const QString& path);
    QString portraitPath() const { return portrait_path_; }
    QString audioPath() const { return audio_path_; }
    double audioSeconds() const { return audio_seconds_; }
    QString lastError() const { return last_error_; }
    QString statusText() const;

    // Actions (buttons, menus and shortcuts run these).
    void generate();
    void cancel();
    void startLive();
    void stopLive();  // stops capturing; the captured audio is still turned into frames
    void toggleLive();
    // Starts writing the generated video; false (with the reason shown) when it cannot start.
    // `overwrite`: replace an existing file (the dialog asked the user).
    bool exportVideo(const QString& path, bool overwrite);
    void setMicrophone(const QString& name);  // "" : the default input
    QString microphone() const;
    void refreshMicrophones();

    Mode mode() const { return mode_; }
    bool hasCompleteResult() const { return result_complete_; }
    RunReport lastReport() const { return last_report_; }
    QImage lastGeneratedFrame() const { return last_frame_; }

    render::FrameViewport* viewport() const { return viewport_; }
    GuidancePanel* guidancePanel() const { return guidance_; }
    ModelPanel* modelPanel() const { return model_; }
    EngineWorker* engineWorker() const { return worker_; }
    Playback* playback() const { return playback_; }
    LiveView* liveView() const { return live_view_; }
    LogPanel* logPanel() const { return log_panel_; }
    std::shared_ptr<const FrameStore> frames() const;
    QSlider* scrubSlider() const { return scrub_; }

  Q_SIGNALS:
    void generationDone(bool completed);
    void liveDone();
    void exportDone(bool ok, const QString& error);

  protected:
    void dragEnterEvent(QDragEnterEvent* event) override;
    void dropEvent(QDropEvent* event) override;

  private:
    QWidget* buildViewer();
    QWidget* buildControls();
    QWidget* buildInputsBox();
    QWidget* buildRunBox();
    QWidget* buildLiveBox();
    void buildMenus();
    void connectEngine();

    void setMode(Mode mode);
    void showError(const QString& message);
    void clearError();
    void showStatus(const QString& message);
    bool readyToRun(bool live);
    PortraitSource portraitSource() const;

    void onFrameGenerated(const QImage& frame, qint64 index);
    void onProgress(const GenerationProgress& progress);
    void onGenerationFinished(const RunReport& report);
    void onLiveFinished(const RunReport& report, const LiveStats& stats);
    void onEngineFailed(const QString& message);
    void onExportFinished(bool ok, const QString& error);
    void showStoredFrame(qint64 index);
    void updateTransport();

    void openDialog();
    void exportWithDialog();
    void addRecent(const QString& path);
    void rebuildRecentMenu();
    void loadSettings();
    void saveSettings() const;

    EngineWorker* worker_ = nullptr;
    render::FrameViewport* viewport_ = nullptr;
    GuidancePanel* guidance_ = nullptr;
    ModelPanel* model_ = nullptr;
    Playback* playback_ = nullptr;
    LiveView* live_view_ = nullptr;
    LogPanel* log_panel_ = nullptr;
    QPointer<ExportJob> export_;

    QLabel* portrait_label_ = nullptr;
    QLabel* audio_label_ = nullptr;
    QLabel* error_label_ = nullptr;
    QLabel* status_ = nullptr;
    QLabel* stats_ = nullptr;
    QLabel* eta_ = nullptr;
    QLabel* time_label_ = nullptr;
    QProgressBar* progress_ = nullptr;
    QPushButton* generate_button_ = nullptr;
    QPushButton* cancel_button_ = nullptr;
    QPushButton* export_button_ = nullptr;
    QPushButton* live_button_ = nullptr;
    QPushButton* play_button_ = nullptr;
    QComboBox* microphones_ = nullptr;
    QSlider* scrub_ = nullptr;
    QAction* generate_action_ = nullptr;
    QAction* live_action_ = nullptr;
    QAction* export_action_ = nullptr;
    QAction* cancel_action_ = nullptr;
    QMenu* recent_menu_ = nullptr;

    Mode mode_ = Mode::Idle;
    QString portrait_path_;
    PortraitPreview portrait_;
    QString audio_path_;
    std::shared_ptr<const std::vector<float>> audio_;
    double audio_seconds_ = 0;
    std::shared_ptr<FrameStore> frames_;
    std::shared_ptr<const std::vector<float>> result_audio_;  // the audio of frames_
    bool result_complete_ = false;
    RunReport last_report_;
    QImage last_frame_;
    QString last_error_;
    QStringList recent_;
    QString preferred_microphone_;
    bool stopping_live_ = false;
};

}  // namespace loopy::ui
