#include "ui/main_window.h"

#include <QAction>
#include <QComboBox>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFileDialog>
#include <QFileInfo>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QScrollBar>
#include <QSettings>
#include <QSignalBlocker>
#include <QSlider>
#include <QSplitter>
#include <QStatusBar>
#include <QVBoxLayout>

#include <exception>

#include "audio/devices.h"
#include "core/log.h"
#include "loopy/version.h"
#include "render/frame_viewport.h"
#include "ui/export_job.h"
#include "ui/frame_store.h"
#include "ui/guidance_panel.h"
#include "ui/live_view.h"
#include "ui/log_panel.h"
#include "ui/model_panel.h"
#include "ui/playback.h"

namespace loopy::ui {
namespace {

constexpr int kMaxRecent = 8;
constexpr int kProgressTicks = 1000;

QString seconds_text(double seconds) {
    return QStringLiteral("%1:%2")
        .arg(int(seconds) / 60)
        .arg(int(seconds) % 60, 2, 10, QLatin1Char('0'));
}

// "frame 6/25, 0.20 s"
QString frame_text(qint64 index, qint64 count) {
    return QStringLiteral("frame %1/%2, %3 s")
        .arg(index + 1)
        .arg(count)
        .arg(double(index) / EngineWorker::kFps, 0, 'f', 2);
}

QString file_name(const QString& path) {
    return QFileInfo(path).fileName();
}

}  // namespace

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
    setWindowTitle(QStringLiteral("Loopy Studio %1").arg(QStringLiteral(LOOPY_VERSION_STRING)));
    setAcceptDrops(true);
    log_panel_ = new LogPanel(this);  // its log sink first, before the engine thread starts
    addDockWidget(Qt::BottomDockWidgetArea, log_panel_);
    log_panel_->hide();
    worker_ = new EngineWorker(this);
    playback_ = new Playback(this);

    auto* splitter = new QSplitter(Qt::Horizontal, this);
    splitter->addWidget(buildViewer());
    splitter->addWidget(buildControls());
    splitter->setStretchFactor(0, 1);
    setCentralWidget(splitter);
    live_view_ = new LiveView(worker_, viewport_, this);

    status_ = new QLabel(tr("Drop a portrait and an audio file here"), this);
    status_->setObjectName(QStringLiteral("statusMessage"));
    stats_ = new QLabel(this);
    stats_->setObjectName(QStringLiteral("statusStats"));
    statusBar()->addWidget(status_, 1);
    statusBar()->addPermanentWidget(stats_);

    buildMenus();
    connectEngine();
    loadSettings();
    refreshMicrophones();
    setMode(Mode::Idle);
    resize(1180, 760);
}

MainWindow::~MainWindow() {
    saveSettings();
    if (export_) export_->cancel();
    delete export_.data();
    worker_->cancel();
    delete worker_;  // joins the inference thread before the widgets go
    worker_ = nullptr;
}

// --- layout ---

namespace {

// The controls' column scrolls only vertically: it is at least as wide as its widest row, which
// changes with the checkpoint (the decoder row, the model's recommended ratios). A plain
// QScrollArea keeps its own minimum width, and the rows it cut off were reached by scrolling
// sideways.
class ControlsScrollArea : public QScrollArea {
  public:
    using QScrollArea::QScrollArea;

    QSize minimumSizeHint() const override {
        QSize hint = QScrollArea::minimumSizeHint();
        if (const QWidget* content = widget())
            hint.setWidth(content->minimumSizeHint().width() +
                          verticalScrollBar()->sizeHint().width() + 2 * frameWidth());
        return hint;
    }

  protected:
    bool eventFilter(QObject* watched, QEvent* event) override {
        // The content's layout changed: the splitter must read the new minimum width.
        if (watched == widget() && event->type() == QEvent::LayoutRequest) updateGeometry();
        return QScrollArea::eventFilter(watched, event);
    }
};

}  // namespace

QWidget* MainWindow::buildViewer() {
    auto* viewer = new QWidget(this);
    auto* column = new QVBoxLayout(viewer);
    column->setContentsMargins(0, 0, 0, 0);
    viewport_ = new render::FrameViewport(viewer);
    column->addWidget(viewport_, 1);

    auto* transport = new QHBoxLayout;
    play_button_ = new QPushButton(tr("Play"), viewer);
    play_button_->setObjectName(QStringLiteral("playButton"));
    scrub_ = new QSlider(Qt::Horizontal, viewer);
    scrub_->setObjectName(QStringLiteral("scrubSlider"));
    time_label_ = new QLabel(viewer);
    time_label_->setObjectName(QStringLiteral("frameLabel"));
    time_label_->setMinimumWidth(time_label_->fontMetrics().horizontalAdvance(
        QStringLiteral("frame 00000/00000, 000.00 s")));
    transport->addWidget(play_button_);
    transport->addWidget(scrub_, 1);
    transport->addWidget(time_label_);
    column->addLayout(transport);

    connect(play_button_, &QPushButton::clicked, playback_, &Playback::togglePlay);
    connect(scrub_, &QSlider::valueChanged, playback_, &Playback::seekFrame);
    connect(playback_, &Playback::frameChanged, this, &MainWindow::showStoredFrame);
    connect(playback_, &Playback::playingChanged, this, [this](bool playing) {
        play_button_->setText(playing ? tr("Pause") : tr("Play"));
        if (playing && !playback_->note().isEmpty()) showStatus(playback_->note());
    });
    return viewer;
}

QWidget* MainWindow::buildControls() {
    auto* panel = new QWidget(this);
    auto* column = new QVBoxLayout(panel);
    column->addWidget(buildInputsBox());
    model_ = new ModelPanel(panel);
    column->addWidget(model_);
    guidance_ = new GuidancePanel(panel);
    column->addWidget(guidance_);
    column->addWidget(buildRunBox());
    column->addWidget(buildLiveBox());
    error_label_ = new QLabel(panel);
    error_label_->setObjectName(QStringLiteral("errorLabel"));
    error_label_->setWordWrap(true);
    error_label_->setTextInteractionFlags(Qt::TextSelectableByMouse);
    error_label_->setStyleSheet(QStringLiteral("color: #d03030;"));
    column->addWidget(error_label_);
    column->addStretch(1);

    auto* scroll = new ControlsScrollArea(this);
    scroll->setObjectName(QStringLiteral("controlsScroll"));
    scroll->setWidget(panel);
    scroll->setWidgetResizable(true);
    scroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    return scroll;
}

QWidget* MainWindow::buildInputsBox() {
    auto* box = new QGroupBox(tr("Input"), this);
    auto* column = new QVBoxLayout(box);
    portrait_label_ = new QLabel(tr("Portrait: none (drop an image)"), box);
    audio_label_ = new QLabel(tr("Audio: none (drop a sound file)"), box);
    portrait_label_->setWordWrap(true);
    audio_label_->setWordWrap(true);
    column->addWidget(portrait_label_);
    column->addWidget(audio_label_);
    auto* buttons = new QHBoxLayout;
    auto* open = new QPushButton(tr("Open..."), box);
    open->setToolTip(tr("Open a portrait image or an audio file (Ctrl+O)"));
    buttons->addWidget(open);
    buttons->addStretch(1);
    column->addLayout(buttons);
    connect(open, &QPushButton::clicked, this, &MainWindow::openDialog);
    return box;
}

QWidget* MainWindow::buildRunBox() {
    auto* box = new QGroupBox(tr("Generate"), this);
    auto* column = new QVBoxLayout(box);
    auto* buttons = new QHBoxLayout;
    generate_button_ = new QPushButton(tr("Generate"), box);
    generate_button_->setObjectName(QStringLiteral("generateButton"));
    cancel_button_ = new QPushButton(tr("Cancel"), box);
    cancel_button_->setObjectName(QStringLiteral("cancelButton"));
    export_button_ = new QPushButton(tr("Export MP4..."), box);
    export_button_->setObjectName(QStringLiteral("exportButton"));
    buttons->addWidget(generate_button_);
    buttons->addWidget(cancel_button_);
    buttons->addWidget(export_button_);
    column->addLayout(buttons);
    progress_ = new QProgressBar(box);
    progress_->setObjectName(QStringLiteral("progressBar"));
    progress_->setRange(0, kProgressTicks);
    progress_->setValue(0);
    eta_ = new QLabel(box);
    eta_->setObjectName(QStringLiteral("etaLabel"));
    column->addWidget(progress_);
    column->addWidget(eta_);
    connect(generate_button_, &QPushButton::clicked, this, &MainWindow::generate);
    connect(cancel_button_, &QPushButton::clicked, this, &MainWindow::cancel);
    connect(export_button_, &QPushButton::clicked, this, &MainWindow::exportWithDialog);
    return box;
}

QWidget* MainWindow::buildLiveBox() {
    auto* box = new QGroupBox(tr("Live microphone"), this);
    auto* column = new QVBoxLayout(box);
    auto* row = new QHBoxLayout;
    microphones_ = new QComboBox(box);
    microphones_->setObjectName(QStringLiteral("microphoneCombo"));
    auto* refresh = new QPushButton(tr("Refresh"), box);
    row->addWidget(microphones_, 1);
    row->addWidget(refresh);
    column->addLayout(row);
    live_button_ = new QPushButton(tr("Live"), box);
    live_button_->setObjectName(QStringLiteral("liveButton"));
    live_button_->setToolTip(tr("Drive the portrait with the microphone (Ctrl+L)"));
    column->addWidget(live_button_);
    connect(refresh, &QPushButton::clicked, this, &MainWindow::refreshMicrophones);
    connect(live_button_, &QPushButton::clicked, this, &MainWindow::toggleLive);
    return box;
}

void MainWindow::buildMenus() {
    QMenu* file = menuBar()->addMenu(tr("&File"));
    QAction* open =
        file->addAction(tr("&Open portrait or audio..."), this, &MainWindow::openDialog);
    open->setShortcut(QKeySequence::Open);
    recent_menu_ = file->addMenu(tr("Open &recent"));
    export_action_ = file->addAction(tr("&Export MP4..."), this, &MainWindow::exportWithDialog);
    export_action_->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));
    file->addSeparator();
    QAction* quit = file->addAction(tr("&Quit"), this, &QWidget::close);
    quit->setShortcut(QKeySequence::Quit);

    QMenu* run = menuBar()->addMenu(tr("&Run"));
    generate_action_ = run->addAction(tr("&Generate"), this, &MainWindow::generate);
    generate_action_->setShortcuts(
        {QKeySequence(Qt::CTRL | Qt::Key_G), QKeySequence(Qt::CTRL | Qt::Key_Return)});
    live_action_ = run->addAction(tr("&Live"), this, &MainWindow::toggleLive);
    live_action_->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_L));
    cancel_action_ = run->addAction(tr("&Cancel"), this, &MainWindow::cancel);
    cancel_action_->setShortcut(QKeySequence(Qt::Key_Escape));
    QAction* play = run->addAction(tr("&Play / pause"), playback_, &Playback::togglePlay);
    play->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Space));

    QMenu* view = menuBar()->addMenu(tr("&View"));
    QAction* log = log_panel_->toggleViewAction();
    log->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_L));
    view->addAction(log);
}

void MainWindow::connectEngine() {
    connect(worker_, &EngineWorker::modelLoaded, this,
            [this](const QString& summary) { showStatus(tr("Model loaded: %1").arg(summary)); });
    connect(worker_, &EngineWorker::frameGenerated, this, &MainWindow::onFrameGenerated);
    connect(worker_, &EngineWorker::progressed, this, &MainWindow::onProgress);
    connect(worker_, &EngineWorker::generationFinished, this, &MainWindow::onGenerationFinished);
    connect(worker_, &EngineWorker::liveStarted, this,
            [this](const QString& device) { showStatus(tr("Live: listening to %1").arg(device)); });
    connect(worker_, &EngineWorker::liveStatsChanged, live_view_, &LiveView::setStats);
    connect(live_view_, &LiveView::statusChanged, stats_, &QLabel::setText);
    connect(worker_, &EngineWorker::liveFinished, this, &MainWindow::onLiveFinished);
    connect(worker_, &EngineWorker::failed, this, &MainWindow::onEngineFailed);
    connect(guidance_, &GuidancePanel::changed, this,
            [this] { worker_->setGuidance(guidance_->settings(mode_ == Mode::Live)); });
    // Offer the fast preview decoder only when the checkpoint has one.
    connect(model_, &ModelPanel::changed, this, [this] {
        guidance_->setPreviewAvailable(EngineWorker::hasPreviewDecoder(model_->checkpoint()));
        guidance_->setRecommendation(EngineWorker::recommendedGuidance(model_->checkpoint()));
    });
}

// --- state ---

void MainWindow::setMode(Mode mode) {
    mode_ = mode;
    const bool idle = mode == Mode::Idle;
    generate_button_->setEnabled(idle);
    generate_action_->setEnabled(idle);
    cancel_button_->setEnabled(!idle);
    cancel_action_->setEnabled(!idle);
    export_button_->setEnabled(idle && result_complete_);
    export_action_->setEnabled(idle && result_complete_);
    live_button_->setEnabled((idle || mode == Mode::Live) && !stopping_live_);
    live_action_->setEnabled(live_button_->isEnabled());
    live_button_->setText(mode != Mode::Live ? tr("Live")
                          : stopping_live_   ? tr("Stopping...")
                                             : tr("Stop live"));
    microphones_->setEnabled(idle);
    model_->setEnabled(idle);
    updateTransport();
}

void MainWindow::updateTransport() {
    const qint64 count = frames_ ? frames_->count() : 0;
    const bool browsable = mode_ == Mode::Idle && count > 0;
    play_button_->setEnabled(browsable);
    scrub_->setEnabled(browsable);
    const QSignalBlocker block(scrub_);
    scrub_->setRange(0, int(std::max<qint64>(count - 1, 0)));
}

void MainWindow::showError(const QString& message) {
    last_error_ = message;
    error_label_->setText(message);
    status_->setText(message);
    logger()->error("{}", message.toStdString());
}

void MainWindow::clearError() {
    last_error_.clear();
    error_label_->clear();
}

void MainWindow::showStatus(const QString& message) {
    status_->setText(message);
}

QString MainWindow::statusText() const {
    return status_->text() + QStringLiteral(" | ") + stats_->text();
}

std::shared_ptr<const FrameStore> MainWindow::frames() const {
    return frames_;
}

// --- files ---

bool MainWindow::openFile(const QString& path) {
    switch (classify_media(path)) {
        case MediaKind::Portrait:
            return openPortrait(path);
        case MediaKind::Audio:
            return openAudio(path);
        case MediaKind::Checkpoint:  // checked when the engine loads it, with a clear error
            model_->setCheckpoint(QFileInfo(path).absoluteFilePath());
            clearError();
            return true;
        case MediaKind::Unsupported:
            break;
    }
    showError(tr("%1: unsupported file type. Drop a portrait (%2) or an audio file (%3).")
                  .arg(file_name(path), portrait_extensions().join(QStringLiteral(", ")),
                       audio_extensions().join(QStringLiteral(", "))));
    return false;
}

bool MainWindow::openPortrait(const QString& path) {
    try {
        portrait_ = load_portrait_preview(path);
    } catch (const std::exception& e) {
        showError(tr("Cannot use %1 as the portrait: %2")
                      .arg(file_name(path), QString::fromStdString(e.what())));
        return false;
    }
    portrait_path_ = path;
    clearError();
    if (mode_ != Mode::Live) viewport_->showFrame(portrait_.image);
    portrait_label_->setText(
        tr("Portrait: %1 (%2x%3, %4)")
            .arg(file_name(path))
            .arg(portrait_.source_size.width())
            .arg(portrait_.source_size.height())
            .arg(portrait_.face_found ? tr("face found") : tr("no face found: centre crop")));
    showStatus(tr("Portrait: %1").arg(file_name(path)));
    addRecent(path);
    return true;
}

bool MainWindow::openAudio(const QString& path) {
    LoadedAudio loaded;
    try {
        loaded = load_audio(path);
    } catch (const std::exception& e) {
        showError(tr("Cannot use %1 as the audio: %2")
                      .arg(file_name(path), QString::fromStdString(e.what())));
        return false;
    }
    audio_path_ = path;
    audio_ = loaded.samples;
    audio_seconds_ = loaded.seconds;
    clearError();
    audio_label_->setText(tr("Audio: %1 (%2%3)")
                              .arg(file_name(path), seconds_text(loaded.seconds),
                                   loaded.damaged ? tr(", damaged: readable part only") : ""));
    showStatus(tr("Audio: %1").arg(file_name(path)));
    addRecent(path);
    return true;
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event) {
    for (const QUrl& url : event->mimeData()->urls()) {
        if (url.isLocalFile()) {
            event->acceptProposedAction();
            return;
        }
    }
}

void MainWindow::dropEvent(QDropEvent* event) {
    for (const QUrl& url : event->mimeData()->urls()) {
        if (url.isLocalFile()) openFile(url.toLocalFile());
    }
    event->acceptProposedAction();
}

void MainWindow::openDialog() {
    const QString start = recent_.isEmpty() ? QString() : QFileInfo(recent_.first()).path();
    const QStringList paths = QFileDialog::getOpenFileNames(
        this, tr("Open a portrait or an audio file"), start, open_dialog_filter());
    for (const QString& path : paths)
        openFile(path);
}

// --- generation ---

bool MainWindow::readyToRun(bool live) {
    const QString checkpoint = model_->checkpoint();
    if (checkpoint.isEmpty()) {
        showError(
            tr("No checkpoint chosen: choose a Loopy .safetensors file under Model or drop one "
               "on the window (the bundled demo model was not found: see the log)."));
        return false;
    }
    if (!QFileInfo(checkpoint).isFile()) {
        showError(tr("The checkpoint %1 does not exist.").arg(checkpoint));
        return false;
    }
    if (portrait_path_.isEmpty()) {
        showError(tr("Drop or open a portrait image first."));
        return false;
    }
    if (!live && !audio_) {
        showError(tr("Drop or open an audio file first (or go Live with a microphone)."));
        return false;
    }
    return true;
}

PortraitSource MainWindow::portraitSource() const {
    return PortraitSource{portrait_path_, portrait_.crop};
}

void MainWindow::generate() {
    if (mode_ != Mode::Idle || !readyToRun(false)) return;
    playback_->clear();
    frames_ = std::make_shared<FrameStore>();
    result_audio_ = audio_;
    result_complete_ = false;
    last_frame_ = QImage();
    worker_->setGuidance(guidance_->settings(false));
    if (!worker_->generate({model_->config(), portraitSource(), audio_})) {
        showError(tr("The engine is still busy."));
        return;
    }
    clearError();
    progress_->setValue(0);
    eta_->setText(tr("Loading the model..."));
    showStatus(
        tr("Generating from %1 and %2").arg(file_name(portrait_path_), file_name(audio_path_)));
    setMode(Mode::Generating);
}

void MainWindow::cancel() {
    if (mode_ == Mode::Generating || mode_ == Mode::Live) worker_->cancel();
    if (mode_ == Mode::Exporting && export_) export_->cancel();
}

void MainWindow::onFrameGenerated(const QImage& frame, qint64 index) {
    if (!frames_) return;
    if (!frames_->append(frame)) {
        showError(frames_->error());
        worker_->cancel();
        return;
    }
    last_frame_ = frame;
    viewport_->showFrame(frame);
    const QSignalBlocker block(scrub_);
    scrub_->setRange(0, int(index));
    scrub_->setValue(int(index));
    time_label_->setText(frame_text(index, index + 1));
}

void MainWindow::onProgress(const GenerationProgress& p) {
    if (mode_ != Mode::Generating) return;
    const double steps = std::max(p.steps, 1);
    const double done = double(p.clip) + double(p.step) / steps;
    if (p.clips > 0) progress_->setValue(int(kProgressTicks * done / double(p.clips)));
    QString text = tr("Clip %1/%2, step %3/%4")
                       .arg(std::min(p.clip + 1, std::max<qint64>(p.clips, 1)))
                       .arg(p.clips)
                       .arg(p.step)
                       .arg(p.steps);
    if (p.eta_seconds >= 0) text += tr(", ETA %1").arg(seconds_text(p.eta_seconds + 0.5));
    eta_->setText(text);
    if (p.elapsed_seconds > 0 && p.frames_done > 0)
        stats_->setText(
            tr("%1 fps generated (%2x real time)")
                .arg(double(p.frames_done) / p.elapsed_seconds, 0, 'f', 2)
                .arg(double(p.frames_done) / EngineWorker::kFps / p.elapsed_seconds, 0, 'f', 3));
}

void MainWindow::onGenerationFinished(const RunReport& report) {
    last_report_ = report;
    result_complete_ = !report.cancelled && frames_ && frames_->count() > 0;
    playback_->setMedia(result_audio_, frames_ ? frames_->count() : 0);
    if (report.cancelled) {
        showStatus(tr("Cancelled after %1 frames").arg(report.frames));
        eta_->setText(tr("Cancelled"));
        logger()->info("generation cancelled after {} frames", report.frames);
    } else {
        logger()->info("generated {} frames ({:.2f} s of video) in {:.1f} s, {:.3f}x real time",
                       report.frames, report.video_seconds, report.wall_seconds,
                       report.realTimeFactor());
        progress_->setValue(kProgressTicks);
        eta_->setText(tr("Done"));
        showStatus(tr("Generated %1 frames (%2 s of video) in %3 s: %4x real time")
                       .arg(report.frames)
                       .arg(report.video_seconds, 0, 'f', 2)
                       .arg(report.wall_seconds, 0, 'f', 1)
                       .arg(report.realTimeFactor(), 0, 'f', 3));
    }
    setMode(Mode::Idle);
    if (frames_ && frames_->count() > 0) {
        const QSignalBlocker block(scrub_);
        scrub_->setValue(scrub_->maximum());
    }
    Q_EMIT generationDone(!report.cancelled);
}

void MainWindow::onEngineFailed(const QString& message) {
    const Mode was = mode_;
    stopping_live_ = false;
    showError(message);
    eta_->clear();
    if (was == Mode::Live) live_view_->finish(live_view_->stats());
    setMode(Mode::Idle);
    if (was == Mode::Generating) Q_EMIT generationDone(false);
    if (was == Mode::Live) Q_EMIT liveDone();
}

void MainWindow::showStoredFrame(qint64 index) {
    if (!frames_ || mode_ != Mode::Idle) return;
    const QImage frame = frames_->frame(index);
    if (frame.isNull()) return;
    viewport_->showFrame(frame);
    const QSignalBlocker block(scrub_);
    scrub_->setValue(int(index));
    time_label_->setText(frame_text(index, frames_->count()));
}

// --- live ---

void MainWindow::toggleLive() {
    if (mode_ == Mode::Live)
        stopLive();
    else
        startLive();
}

void MainWindow::startLive() {
    if (mode_ != Mode::Idle || !readyToRun(true)) return;
    playback_->pause();
    worker_->setGuidance(guidance_->settings(true));
    if (!worker_->startLive({model_->config(), portraitSource(), microphone()})) {
        showError(tr("The engine is still busy."));
        return;
    }
    clearError();
    stopping_live_ = false;
    live_view_->start();
    showStatus(tr("Live: opening the microphone and loading the model..."));
    setMode(Mode::Live);
}

void MainWindow::stopLive() {
    if (mode_ != Mode::Live || stopping_live_) return;
    worker_->stopLive();
    stopping_live_ = true;
    showStatus(tr("Stopping: turning the audio already captured into frames..."));
    setMode(Mode::Live);
}

void MainWindow::onLiveFinished(const RunReport& report, const LiveStats& stats) {
    stopping_live_ = false;
    last_report_ = report;
    live_view_->finish(stats);
    showStatus(tr("Live %1: %2 frames from %3 s of audio (%4 s dropped)")
                   .arg(report.cancelled ? tr("cancelled") : tr("stopped"))
                   .arg(report.frames)
                   .arg(stats.captured_seconds, 0, 'f', 1)
                   .arg(stats.discarded_seconds + stats.overflow_seconds, 0, 'f', 1));
    setMode(Mode::Idle);
    Q_EMIT liveDone();
}

void MainWindow::refreshMicrophones() {
    const QString keep = microphones_->count() > 0 ? microphone() : preferred_microphone_;
    microphones_->clear();
    std::vector<audio::DeviceInfo> devices;
    try {
        devices = audio::list_devices();
    } catch (const std::exception& e) {
        logger()->warn("audio devices: {}", e.what());
    }
    int chosen = -1;
    for (const auto& d : devices) {
        if (d.max_input_channels <= 0) continue;
        const QString name = QString::fromStdString(d.name);
        microphones_->addItem(
            QStringLiteral("%1 (%2)").arg(name, QString::fromStdString(d.host_api)), name);
        if (name == keep || (chosen < 0 && d.is_default_input)) chosen = microphones_->count() - 1;
    }
    if (microphones_->count() == 0) microphones_->addItem(tr("No microphone found"), QString());
    microphones_->setCurrentIndex(std::max(chosen, 0));
}

void MainWindow::setMicrophone(const QString& name) {
    const int index = microphones_->findData(name);
    if (index >= 0) {
        microphones_->setCurrentIndex(index);
    } else {
        microphones_->addItem(name, name);  // not listed (yet): PortAudio will say if it exists
        microphones_->setCurrentIndex(microphones_->count() - 1);
    }
}

QString MainWindow::microphone() const {
    return microphones_->currentData().toString();
}

// --- export ---

void MainWindow::exportWithDialog() {
    if (mode_ != Mode::Idle || !result_complete_) {
        showError(tr("Nothing to export yet: generate a video first."));
        return;
    }
    const QString suggested = QFileInfo(audio_path_).completeBaseName() + QStringLiteral(".mp4");
    // The dialog asks before replacing an existing file.
    QString path =
        QFileDialog::getSaveFileName(this, tr("Export MP4"), suggested, tr("MP4 video (*.mp4)"));
    if (path.isEmpty()) return;
    if (QFileInfo(path).suffix().isEmpty()) {
        path += QStringLiteral(".mp4");
        if (QFileInfo::exists(path) &&
            QMessageBox::question(this, tr("Export MP4"), tr("Replace %1?").arg(path)) !=
                QMessageBox::Yes)
            return;
    }
    exportVideo(path, true);
}

bool MainWindow::exportVideo(const QString& path, bool overwrite) {
    if (mode_ != Mode::Idle || !result_complete_) {
        showError(tr("Nothing to export yet: generate a video first."));
        return false;
    }
    if (QFileInfo::exists(path) && !overwrite) {
        showError(tr("%1 exists; it was not replaced.").arg(path));
        return false;
    }
    auto* job = new ExportJob({path, overwrite, frames_, result_audio_}, this);
    export_ = job;
    connect(job, &ExportJob::progressed, this, [this](qint64 done, qint64 total) {
        progress_->setValue(int(kProgressTicks * done / std::max<qint64>(total, 1)));
        eta_->setText(tr("Exporting frame %1/%2").arg(done).arg(total));
    });
    connect(job, &ExportJob::finished, this, &MainWindow::onExportFinished);
    clearError();
    progress_->setValue(0);
    showStatus(tr("Exporting %1").arg(path));
    setMode(Mode::Exporting);
    job->start();
    return true;
}

void MainWindow::onExportFinished(bool ok, const QString& error) {
    const QString path = export_ ? export_->request().path : QString();
    if (export_) export_->deleteLater();
    export_.clear();
    setMode(Mode::Idle);
    if (ok) {
        eta_->setText(tr("Exported"));
        showStatus(tr("Exported %1").arg(path));
        logger()->info("exported {}", path.toStdString());
    } else if (error == QStringLiteral("cancelled")) {
        eta_->setText(tr("Export cancelled"));
        showStatus(tr("Export cancelled: nothing was written"));
    } else {
        eta_->clear();
        showError(tr("Export failed: %1").arg(error));
    }
    Q_EMIT exportDone(ok, error);
}

// --- settings ---

void MainWindow::addRecent(const QString& path) {
    const QString absolute = QFileInfo(path).absoluteFilePath();
    recent_.removeAll(absolute);
    recent_.prepend(absolute);
    while (recent_.size() > kMaxRecent)
        recent_.removeLast();
    rebuildRecentMenu();
}

void MainWindow::rebuildRecentMenu() {
    recent_menu_->clear();
    for (const QString& path : recent_)
        recent_menu_->addAction(file_name(path), this, [this, path] { openFile(path); });
    recent_menu_->setEnabled(!recent_.isEmpty());
}

void MainWindow::loadSettings() {
    QSettings s;
    const QString saved = s.value(QStringLiteral("model/checkpoint")).toString();
    model_->setCheckpoint(QFileInfo(saved).isFile() ? saved : ModelPanel::defaultCheckpoint());
    model_->setDevice(s.value(QStringLiteral("model/device"), QStringLiteral("cpu")).toString());
    model_->setThreads(s.value(QStringLiteral("model/threads"), 0).toInt());
    // First start: the model's own ratios where it recommends some (the demo model does), else
    // the panel's defaults (the method's 5 / 3). Saved ratios win; another model later is only
    // offered its own. setCheckpoint above has given the panel the recommendation.
    const auto& recommended = guidance_->recommendation();
    guidance_->setAudioRatio(
        s.value(QStringLiteral("guidance/audio_ratio"),
                recommended ? recommended->audio_ratio : guidance_->audioRatio())
            .toDouble());
    guidance_->setReferenceRatio(
        s.value(QStringLiteral("guidance/reference_ratio"),
                recommended ? recommended->reference_ratio : guidance_->referenceRatio())
            .toDouble());
    guidance_->setSteps(s.value(QStringLiteral("guidance/steps"), 25).toInt());
    guidance_->setLiveSteps(s.value(QStringLiteral("guidance/live_steps"), 4).toInt());
    guidance_->setSeed(s.value(QStringLiteral("guidance/seed"), 0).toULongLong());
    guidance_->setPreviewDecoder(
        s.value(QStringLiteral("guidance/preview_decoder"), false).toBool());
    preferred_microphone_ = s.value(QStringLiteral("live/microphone")).toString();
    recent_ = s.value(QStringLiteral("files/recent")).toStringList();
    rebuildRecentMenu();
    restoreGeometry(s.value(QStringLiteral("window/geometry")).toByteArray());
}

void MainWindow::saveSettings() const {
    QSettings s;
    s.setValue(QStringLiteral("model/checkpoint"), model_->checkpoint());
    const EngineConfig config = model_->config();
    s.setValue(QStringLiteral("model/device"), config.device);
    s.setValue(QStringLiteral("model/threads"), config.threads);
    s.setValue(QStringLiteral("guidance/audio_ratio"), guidance_->audioRatio());
    s.setValue(QStringLiteral("guidance/reference_ratio"), guidance_->referenceRatio());
    s.setValue(QStringLiteral("guidance/steps"), guidance_->steps());
    s.setValue(QStringLiteral("guidance/live_steps"), guidance_->liveSteps());
    s.setValue(QStringLiteral("guidance/seed"), guidance_->seed());
    s.setValue(QStringLiteral("guidance/preview_decoder"), guidance_->previewDecoder());
    s.setValue(QStringLiteral("live/microphone"), microphone());
    s.setValue(QStringLiteral("files/recent"), recent_);
    s.setValue(QStringLiteral("window/geometry"), saveGeometry());
}

}  // namespace loopy::ui
