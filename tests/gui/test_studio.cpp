// Loopy Studio's main window end to end under Xvfb: drops and their errors, settings, guidance
// reaching the engine's Session, a generation with a random-weight tiny checkpoint shown in the
// viewport, playback, MP4 export, live mode through PortAudio with a virtual microphone
// (PulseAudio null sink + espeak-ng speech) and with no audio device at all.
#include <QtTest>

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QLabel>
#include <QMimeData>
#include <QProgressBar>
#include <QPushButton>
#include <QScrollArea>
#include <QSettings>
#include <QSlider>
#include <QSpinBox>
#include <QStandardPaths>

#include <cmath>
#include <memory>

#include "audio/audio_decoder.h"
#include "audio/media_gen.h"
#include "audio/virtual_mic.h"
#include "model/preview_decoder.h"
#include "pipeline/tiny_model.h"
#include "render/frame_viewport.h"
#include "render/video_probe.h"
#include "ui/engine_worker.h"
#include "ui/export_job.h"
#include "ui/frame_store.h"
#include "ui/guidance_panel.h"
#include "ui/live_view.h"
#include "ui/log_panel.h"
#include "ui/main_window.h"
#include "ui/model_panel.h"
#include "ui/playback.h"

using loopy::render::FrameViewport;
using loopy::test::VirtualMicrophone;
using loopy::ui::GuidancePanel;
using loopy::ui::MainWindow;

namespace {

constexpr int kGenerationTimeoutMs = 400000;  // a hang guard on a loaded 2-core machine

void drop_files(QWidget* target, const QStringList& paths) {
    QMimeData mime;
    QList<QUrl> urls;
    for (const QString& p : paths)
        urls << QUrl::fromLocalFile(p);
    mime.setUrls(urls);
    QDragEnterEvent enter(QPoint(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(target, &enter);
    QVERIFY(enter.isAccepted());
    QDropEvent drop(QPointF(10, 10), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(target, &drop);
}

void write_file(const QString& path, const QByteArray& bytes) {
    QFile f(path);
    QVERIFY(f.open(QIODevice::WriteOnly));
    f.write(bytes);
}

QByteArray read_file(const QString& path) {
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll() : QByteArray();
}

template <class T>
T* child(QWidget* parent, const char* name) {
    auto* w = parent->findChild<T*>(QString::fromLatin1(name));
    if (!w) qWarning("no child %s", name);
    return w;
}

// Mean absolute difference (per channel) between each source pixel and the centre of its block
// in the grabbed framebuffer, and how many channels were off by more than `tolerance`.
struct Comparison {
    double mean = 0;
    int outliers = 0;
    int samples = 0;
};
Comparison compare_with_grab(const QImage& grabbed, const QImage& frame, int tolerance) {
    const QRect r = FrameViewport::letterbox(frame.size(), grabbed.size());
    Comparison c;
    double sum = 0;
    for (int sy = 0; sy < frame.height(); ++sy) {
        for (int sx = 0; sx < frame.width(); ++sx) {
            const int gx = r.x() + int((sx + 0.5) * r.width() / frame.width());
            const int gy = r.y() + int((sy + 0.5) * r.height() / frame.height());
            const QColor g = grabbed.pixelColor(gx, gy), s = frame.pixelColor(sx, sy);
            for (const int d : {g.red() - s.red(), g.green() - s.green(), g.blue() - s.blue()}) {
                sum += std::abs(d);
                c.outliers += std::abs(d) > tolerance;
                ++c.samples;
            }
        }
    }
    c.mean = c.samples ? sum / c.samples : 0;
    return c;
}

// What the running (or last) Session holds; defaults before there is one.
loopy::ui::GuidanceSettings session_settings(const loopy::ui::EngineWorker* worker) {
    return worker->sessionSettings().value_or(loopy::ui::GuidanceSettings{});
}

double luminance_stddev(const QImage& image) {
    double sum = 0, sum2 = 0;
    const int n = image.width() * image.height();
    for (int y = 0; y < image.height(); ++y)
        for (int x = 0; x < image.width(); ++x) {
            const double v = qGray(image.pixel(x, y));
            sum += v, sum2 += v * v;
        }
    const double mean = sum / n;
    return std::sqrt(std::max(0.0, sum2 / n - mean * mean));
}

}  // namespace

class StudioTest : public QObject {
    Q_OBJECT
    QTemporaryDir dir_;
    QString checkpoint_, portrait_, audio_short_, audio_long_;
    std::unique_ptr<MainWindow> generated_;  // the window of generatesIntoTheViewport

    std::unique_ptr<MainWindow> make_window(bool with_inputs = true) {
        auto w = std::make_unique<MainWindow>();
        w->show();
        if (!QTest::qWaitForWindowExposed(w.get())) qWarning("window not exposed");
        w->activateWindow();  // shortcuts go to the active window
        if (!QTest::qWaitForWindowActive(w.get())) qWarning("window not active");
        w->modelPanel()->setCheckpoint(checkpoint_);
        if (with_inputs) {
            w->openPortrait(portrait_);
            w->openAudio(audio_short_);
        }
        return w;
    }

  private Q_SLOTS:
    void init() { QSettings().clear(); }  // each test starts from the defaults

    void initTestCase() {
        QVERIFY(dir_.isValid());
        // Settings of this run only, never the user's.
        QStandardPaths::setTestModeEnabled(true);
        QSettings::setPath(QSettings::NativeFormat, QSettings::UserScope, dir_.filePath("config"));
        QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, dir_.filePath("config"));
        QCoreApplication::setOrganizationName("LoopyStudioTest");
        QCoreApplication::setApplicationName("studio-test");
        QSettings().clear();

        checkpoint_ = dir_.filePath("tiny64.safetensors");
        loopy::test::save_random_checkpoint(checkpoint_.toStdString(), 64);
        portrait_ = QStringLiteral(LOOPY_TEST_DATA "/faces/astronaut.png");
        audio_short_ = dir_.filePath("speech1s.wav");
        audio_long_ = dir_.filePath("speech4s.wav");
        loopy::test::Tone tone;
        tone.frequency = 220, tone.frequency2 = 660, tone.amplitude2 = 0.2;
        tone.sample_rate = 22050, tone.seconds = 1.0;
        loopy::test::write_tone(audio_short_.toStdString(), "pcm_s16le", tone);
        tone.seconds = 4.0;
        loopy::test::write_tone(audio_long_.toStdString(), "pcm_s16le", tone);
    }

    void dropsLoadFilesAndBadFilesKeepState() {
        auto w = make_window(false);
        drop_files(w.get(), {portrait_, audio_short_});
        QCOMPARE(w->portraitPath(), portrait_);
        QCOMPARE(w->audioPath(), audio_short_);
        QVERIFY2(w->lastError().isEmpty(), qPrintable(w->lastError()));
        QVERIFY(std::abs(w->audioSeconds() - 1.0) < 0.01);
        // The viewport shows the square face crop the engine will get.
        const QImage crop = w->viewport()->currentFrame();
        QCOMPARE(crop.size(), QSize(512, 512));

        const QString text = dir_.filePath("notes.txt");
        write_file(text, "not media");
        drop_files(w.get(), {text});
        QVERIFY2(w->lastError().contains("notes.txt") && w->lastError().contains("unsupported"),
                 qPrintable(w->lastError()));
        QCOMPARE(child<QLabel>(w.get(), "errorLabel")->text(), w->lastError());

        const QString bad_image = dir_.filePath("broken.png");
        write_file(bad_image, QByteArray("\x89PNG\r\n\x1a\n garbage", 17));
        drop_files(w.get(), {bad_image});
        QVERIFY2(w->lastError().contains("broken.png"), qPrintable(w->lastError()));

        const QString bad_audio = dir_.filePath("broken.wav");
        write_file(bad_audio, "RIFF....WAVEjunk");
        drop_files(w.get(), {bad_audio});
        QVERIFY2(w->lastError().contains("broken.wav"), qPrintable(w->lastError()));

        // Nothing changed.
        QCOMPARE(w->portraitPath(), portrait_);
        QCOMPARE(w->audioPath(), audio_short_);
        QCOMPARE(w->viewport()->currentFrame(), crop.convertToFormat(QImage::Format_RGBA8888));
        QCOMPARE(w->mode(), MainWindow::Mode::Idle);
        // A good file clears the error.
        QVERIFY(w->openAudio(audio_long_));
        QVERIFY(w->lastError().isEmpty());

        // A dropped checkpoint becomes the model (the file manager opens them this way too).
        const QString checkpoint = dir_.filePath("dropped.safetensors");
        write_file(checkpoint, "{}");
        drop_files(w.get(), {checkpoint});
        QCOMPARE(w->modelPanel()->checkpoint(), QFileInfo(checkpoint).absoluteFilePath());
        QCOMPARE(w->portraitPath(), portrait_);
    }

    void shortcutsAndMissingCheckpoint() {
        auto w = make_window();
        w->modelPanel()->setCheckpoint(QString());
        QTest::keyClick(w.get(), Qt::Key_G, Qt::ControlModifier);
        QVERIFY2(w->lastError().contains("No checkpoint chosen"), qPrintable(w->lastError()));
        QCOMPARE(w->mode(), MainWindow::Mode::Idle);
        QTest::keyClick(w.get(), Qt::Key_L, Qt::ControlModifier);
        QVERIFY2(w->lastError().contains("No checkpoint chosen"), qPrintable(w->lastError()));
        QTest::keyClick(w.get(), Qt::Key_E, Qt::ControlModifier);
        QCOMPARE(w->mode(), MainWindow::Mode::Idle);
        w->modelPanel()->setCheckpoint(dir_.filePath("missing.safetensors"));
        w->generate();
        QVERIFY2(w->lastError().contains("does not exist"), qPrintable(w->lastError()));
        // Not a checkpoint: the engine's error shows, nothing crashes, the window stays usable.
        const QString garbage = dir_.filePath("garbage.safetensors");
        write_file(garbage, "definitely not safetensors");
        w->modelPanel()->setCheckpoint(garbage);
        QSignalSpy done(w.get(), &MainWindow::generationDone);
        w->generate();
        QVERIFY(done.wait(60000));
        QCOMPARE(done.at(0).at(0).toBool(), false);
        QVERIFY2(w->lastError().contains("cannot load the checkpoint") &&
                     w->lastError().contains("garbage.safetensors"),
                 qPrintable(w->lastError()));
        QCOMPARE(w->mode(), MainWindow::Mode::Idle);
        // The log panel got the errors too.
        QVERIFY(w->logPanel()->text().contains("No checkpoint chosen"));
    }

    void settingsPersist() {
        {
            auto w = make_window();
            GuidancePanel* g = w->guidancePanel();
            child<QSlider>(g, "audioRatioSlider")->setValue(62);
            child<QSlider>(g, "referenceRatioSlider")->setValue(21);
            child<QSlider>(g, "stepsSlider")->setValue(7);
            child<QSlider>(g, "liveStepsSlider")->setValue(3);
            g->setSeed(4242);
        }
        auto w = make_window(false);
        const GuidancePanel* g = w->guidancePanel();
        QCOMPARE(g->audioRatio(), 6.2);
        QCOMPARE(g->referenceRatio(), 2.1);
        QCOMPARE(g->steps(), 7);
        QCOMPARE(g->liveSteps(), 3);
        QCOMPARE(g->seed(), quint64(4242));
        QCOMPARE(w->modelPanel()->checkpoint(), checkpoint_);
        const QStringList recent = QSettings().value("files/recent").toStringList();
        QVERIFY2(recent.contains(QFileInfo(portrait_).absoluteFilePath()),
                 qPrintable(recent.join(", ")));
    }

    // The fast preview decoder is offered only with a checkpoint that has one.
    void decoderChoiceFollowsTheCheckpoint() {
        const QString with_preview = dir_.filePath("tiny64-preview.safetensors");
        auto net = loopy::test::random_network(loopy::test::tiny_config(64));
        loopy::model::PreviewDecoder preview(loopy::model::preview_decoder_options(net->config));
        loopy::model::save_loopy_checkpoint(with_preview.toStdString(), *net,
                                            loopy::model::preview_decoder_metadata(*preview),
                                            loopy::model::preview_decoder_tensors(*preview));
        auto w = make_window(false);
        GuidancePanel* g = w->guidancePanel();
        auto* decoder = child<QComboBox>(g, "decoderCombo");
        QVERIFY(!decoder->isEnabled());
        w->modelPanel()->setCheckpoint(with_preview);
        QVERIFY(decoder->isEnabled());
        decoder->setCurrentIndex(1);
        QVERIFY(g->settings(true).preview_decoder);
        w->modelPanel()->setCheckpoint(checkpoint_);
        QVERIFY(!decoder->isEnabled());
        QVERIFY(!g->previewDecoder());
    }

    // A checkpoint's recommended guidance is offered, applied only on the user's click, and
    // hidden again for a checkpoint without one.
    void recommendedGuidanceIsOfferedNotImposed() {
        const QString tuned = dir_.filePath("tiny64-tuned.safetensors");
        auto net = loopy::test::random_network(loopy::test::tiny_config(64));
        loopy::model::save_loopy_checkpoint(tuned.toStdString(), *net,
                                            loopy::model::guidance_metadata({12.0, 2.5}));
        auto w = make_window(false);
        GuidancePanel* g = w->guidancePanel();
        auto* use = child<QPushButton>(g, "useRecommendationButton");
        QVERIFY(use->isHidden());
        g->setAudioRatio(4.0);
        w->modelPanel()->setCheckpoint(tuned);
        QVERIFY(!use->isHidden());
        QVERIFY2(child<QLabel>(g, "recommendationLabel")->text().contains("audio 12.0"),
                 qPrintable(child<QLabel>(g, "recommendationLabel")->text()));
        QCOMPARE(g->audioRatio(), 4.0);  // not imposed
        use->click();
        QCOMPARE(g->audioRatio(), 12.0);
        QCOMPARE(g->referenceRatio(), 2.5);
        w->modelPanel()->setCheckpoint(checkpoint_);
        QVERIFY(use->isHidden());
    }

    // At the default window size the controls need no sideways scrolling, also with their widest
    // rows (a checkpoint with a preview decoder and recommended ratios, like the demo model).
    void controlsFitTheirColumn() {
        const QString widest = dir_.filePath("tiny64-widest.safetensors");
        auto net = loopy::test::random_network(loopy::test::tiny_config(64));
        loopy::model::PreviewDecoder preview(loopy::model::preview_decoder_options(net->config));
        auto metadata = loopy::model::preview_decoder_metadata(*preview);
        metadata.merge(loopy::model::guidance_metadata({12.5, 2.5}));
        loopy::model::save_loopy_checkpoint(widest.toStdString(), *net, metadata,
                                            loopy::model::preview_decoder_tensors(*preview));
        auto w = make_window(false);
        w->modelPanel()->setCheckpoint(widest);
        QVERIFY(!child<QPushButton>(w->guidancePanel(), "useRecommendationButton")->isHidden());
        QVERIFY(child<QComboBox>(w->guidancePanel(), "decoderCombo")->isEnabled());
        const auto* scroll = child<QScrollArea>(w.get(), "controlsScroll");
        QVERIFY(scroll);
        const QWidget* controls = scroll->widget();
        // Layout changes arrive as posted events.
        QTRY_VERIFY2(controls->width() <= scroll->viewport()->width(),
                     qPrintable(QStringLiteral("controls %1 px wide (%2 needed), column %3 px")
                                    .arg(controls->width())
                                    .arg(controls->minimumSizeHint().width())
                                    .arg(scroll->viewport()->width())));
        QVERIFY(controls->width() >= controls->minimumSizeHint().width());
    }

    // On a first start (no saved ratios) the model's recommendation is where the ratios start;
    // saved ratios win over it, and a model without one starts at the method's 5 / 3.
    void firstStartUsesTheModelsRecommendation() {
        const QString tuned = dir_.filePath("tiny64-tuned-first.safetensors");
        auto net = loopy::test::random_network(loopy::test::tiny_config(64));
        loopy::model::save_loopy_checkpoint(tuned.toStdString(), *net,
                                            loopy::model::guidance_metadata({7.0, 1.5}));
        QSettings().setValue("model/checkpoint", tuned);
        {
            MainWindow w;
            QCOMPARE(w.modelPanel()->checkpoint(), tuned);
            QCOMPARE(w.guidancePanel()->audioRatio(), 7.0);
            QCOMPARE(w.guidancePanel()->referenceRatio(), 1.5);
            w.guidancePanel()->setAudioRatio(4.0);
        }  // saves 4 / 1.5
        {
            MainWindow w;
            QCOMPARE(w.guidancePanel()->audioRatio(), 4.0);
            QCOMPARE(w.guidancePanel()->referenceRatio(), 1.5);
        }
        QSettings().clear();
        QSettings().setValue("model/checkpoint", checkpoint_);
        MainWindow w;
        QCOMPARE(w.modelPanel()->checkpoint(), checkpoint_);
        QCOMPARE(w.guidancePanel()->audioRatio(), 5.0);
        QCOMPARE(w.guidancePanel()->referenceRatio(), 3.0);
    }

    // Each control moved during a generation reaches the running Session (read back from it);
    // a new step count applies from the next clip; Cancel stops the run.
    void guidanceReachesTheSession() {
        auto w = make_window();
        QVERIFY(w->openAudio(audio_long_));
        GuidancePanel* g = w->guidancePanel();
        child<QSlider>(g, "stepsSlider")->setValue(1);
        loopy::ui::EngineWorker* worker = w->engineWorker();
        QSignalSpy frames(worker, &loopy::ui::EngineWorker::frameGenerated);
        QSignalSpy progress(worker, &loopy::ui::EngineWorker::progressed);
        QSignalSpy done(w.get(), &MainWindow::generationDone);
        child<QPushButton>(w.get(), "generateButton")->click();
        QCOMPARE(w->mode(), MainWindow::Mode::Generating);
        QTRY_VERIFY_WITH_TIMEOUT(frames.count() > 0, kGenerationTimeoutMs);
        QCOMPARE(session_settings(worker).steps, 1);

        child<QSlider>(g, "audioRatioSlider")->setValue(37);
        QTRY_COMPARE(session_settings(worker).audio_ratio, 3.7);
        // The start is the default checkpoint's recommendation, if found, else 3.
        const double reference = g->referenceRatio();
        child<QSlider>(g, "referenceRatioSlider")->triggerAction(QSlider::SliderPageStepAdd);
        QTRY_COMPARE(session_settings(worker).reference_ratio, reference + 1.0);  // one page
        child<QDoubleSpinBox>(g, "referenceRatioSpin")->setValue(2.5);
        QTRY_COMPARE(session_settings(worker).reference_ratio, 2.5);
        child<QPushButton>(g, "randomSeedButton")->click();
        QTRY_COMPARE(session_settings(worker).seed, g->seed());
        child<QSpinBox>(g, "seedSpin")->setValue(99);
        QTRY_COMPARE(session_settings(worker).seed, quint64(99));
        child<QSlider>(g, "liveStepsSlider")->setValue(9);  // live only: not this session's
        child<QSlider>(g, "stepsSlider")->setValue(2);
        QTRY_COMPARE(session_settings(worker).steps, 2);

        // The clip after the change runs 2 steps.
        const int seen = progress.count();
        QTRY_VERIFY_WITH_TIMEOUT(
            [&] {
                for (int i = seen; i < progress.count(); ++i)
                    if (progress.at(i).at(0).value<loopy::ui::GenerationProgress>().steps == 2)
                        return true;
                return false;
            }(),
            kGenerationTimeoutMs);
        QTest::keyClick(w.get(), Qt::Key_Escape);  // Cancel
        QVERIFY(done.wait(kGenerationTimeoutMs));
        QCOMPARE(done.at(0).at(0).toBool(), false);
        QVERIFY(w->lastReport().cancelled);
        QCOMPARE(w->mode(), MainWindow::Mode::Idle);
        QVERIFY(!w->hasCompleteResult());
        QVERIFY(!w->exportVideo(dir_.filePath("partial.mp4"), false));
        QVERIFY(!QFileInfo::exists(dir_.filePath("partial.mp4")));
    }

    void generatesIntoTheViewport() {
        auto w = make_window();
        child<QSlider>(w->guidancePanel(), "stepsSlider")->setValue(2);
        QSignalSpy done(w.get(), &MainWindow::generationDone);
        QTest::keyClick(w.get(), Qt::Key_Return, Qt::ControlModifier);  // Generate
        QCOMPARE(w->mode(), MainWindow::Mode::Generating);
        QVERIFY(done.wait(kGenerationTimeoutMs));
        QVERIFY2(done.at(0).at(0).toBool(), qPrintable(w->lastError()));
        QCOMPARE(w->lastReport().frames, qint64(25));  // 1 s at 25 fps
        QCOMPARE(w->frames()->count(), qint64(25));
        QCOMPARE(w->frames()->size(), QSize(64, 64));
        QCOMPARE(session_settings(w->engineWorker()).steps, 2);
        const auto* bar = child<QProgressBar>(w.get(), "progressBar");
        QCOMPARE(bar->value(), bar->maximum());
        QVERIFY2(w->logPanel()->text().contains("generated 25 frames (1.00 s of video)"),
                 qPrintable(w->logPanel()->text().right(600)));

        // What the viewport draws is the last generated frame, scaled to fit.
        const QImage last = w->lastGeneratedFrame();
        QCOMPARE(w->frames()->frame(24), last.convertToFormat(QImage::Format_RGB888));
        QVERIFY2(luminance_stddev(last) > 2, "the last frame is blank");
        const QImage grabbed = w->viewport()->grabFramebuffer();
        const Comparison c = compare_with_grab(grabbed, last, 24);
        qInfo("viewport vs last frame: mean |diff| %.2f, %d of %d channels off by > 24", c.mean,
              c.outliers, c.samples);
        QVERIFY2(c.mean < 4 && c.outliers < c.samples / 100, "the viewport differs");
        const QRect box = FrameViewport::letterbox(last.size(), grabbed.size());
        QVERIFY2(luminance_stddev(grabbed.copy(box)) > 2, "the viewport is blank");

        // Scrub, play, pause.
        w->scrubSlider()->setValue(5);
        QCOMPARE(w->viewport()->currentFrame(),
                 w->frames()->frame(5).convertToFormat(QImage::Format_RGBA8888));
        w->playback()->play();
        QTRY_VERIFY_WITH_TIMEOUT(w->playback()->currentFrame() > 5, 20000);
        w->playback()->pause();
        const qint64 paused = w->playback()->currentFrame();
        QTest::qWait(200);
        QCOMPARE(w->playback()->currentFrame(), paused);
        qInfo("playback: %s",
              qPrintable(w->playback()->note().isEmpty() ? "with sound" : w->playback()->note()));

        w->scrubSlider()->setValue(24);
        const QString shot = QStringLiteral(LOOPY_BINARY_DIR "/loopy-studio-screenshot.png");
        QVERIFY(w->grab().save(shot));
        qInfo("screenshot: %s", qPrintable(shot));
        generated_ = std::move(w);
    }

    void exportsPlayableMp4() {
        if (!generated_) QSKIP("needs generatesIntoTheViewport");
        MainWindow* w = generated_.get();
        QSignalSpy done(w, &MainWindow::exportDone);
        const QString out = dir_.filePath("out.mp4");
        QVERIFY(w->exportVideo(out, false));
        QCOMPARE(w->mode(), MainWindow::Mode::Exporting);
        QVERIFY(done.wait(60000));
        QVERIFY2(done.at(0).at(0).toBool(), qPrintable(done.at(0).at(1).toString()));
        const auto probe = loopy::render::probe_video(out.toStdString());
        QCOMPARE(probe.frame_count, 25);
        QCOMPARE(probe.width, 64);
        QCOMPARE(probe.height, 64);
        QCOMPARE(probe.video_codec, std::string("h264"));
        QCOMPARE(probe.audio_codec, std::string("aac"));
        QVERIFY(std::abs(probe.fps - 25) < 0.01);
        QVERIFY2(std::abs(probe.decoded_audio_duration() - 1.0) < 0.05,
                 qPrintable(QString::number(probe.decoded_audio_duration())));

        // An existing file is replaced only when confirmed.
        const QString existing = dir_.filePath("existing.mp4");
        write_file(existing, "old");
        QVERIFY(!w->exportVideo(existing, false));
        QVERIFY2(w->lastError().contains("exists"), qPrintable(w->lastError()));
        QCOMPARE(read_file(existing), QByteArray("old"));
        // A failing or cancelled export leaves nothing half-written (and the old file alone).
        done.clear();
        QVERIFY(w->exportVideo(dir_.filePath("no-such-folder/out.mp4"), true));
        QVERIFY(done.wait(60000));
        QCOMPARE(done.at(0).at(0).toBool(), false);
        QVERIFY(!QFileInfo::exists(dir_.filePath("no-such-folder")));
        loopy::ui::ExportJob cancelled({existing, true, w->frames(), nullptr});
        QSignalSpy cancel_done(&cancelled, &loopy::ui::ExportJob::finished);
        cancelled.cancel();
        cancelled.start();
        QVERIFY(cancel_done.wait(60000));
        QCOMPARE(cancel_done.at(0).at(1).toString(), QString("cancelled"));
        QCOMPARE(read_file(existing), QByteArray("old"));
        // Confirmed: replaced.
        done.clear();
        QVERIFY(w->exportVideo(existing, true));
        QVERIFY(done.wait(60000));
        QVERIFY(done.at(0).at(0).toBool());
        QCOMPARE(loopy::render::probe_video(existing.toStdString()).frame_count, 25);
        QCOMPARE(QDir(dir_.path()).entryList({"*.tmp-*"}, QDir::Files | QDir::Hidden),
                 QStringList());  // the writer's temporary files
    }

    // Speech played into a virtual microphone drives the preview through PortAudio.
    void liveFromAVirtualMicrophone() {
        START_VIRTUAL_MIC(vm);
        QString wav;
        try {
            // Longer than a clip takes to generate here, so that clips get speech, not silence.
            wav = vm->speak(
                "Hello from the live preview of Loopy Studio. The microphone drives the portrait "
                "while it speaks. One, two, three, four, five, six, seven, eight, nine, ten.",
                "speech");
        } catch (const std::exception& e) {
            QFAIL(e.what());
        }
        auto w = make_window();  // after the daemon: its device list has it
        QVERIFY2(!w->microphone().isEmpty(), "no microphone listed");
        qInfo("microphone: %s", qPrintable(w->microphone()));
        GuidancePanel* g = w->guidancePanel();
        child<QSlider>(g, "liveStepsSlider")->setValue(1);
        loopy::ui::EngineWorker* worker = w->engineWorker();
        QSignalSpy done(w.get(), &MainWindow::liveDone);

        QTest::keyClick(w.get(), Qt::Key_L, Qt::ControlModifier);
        QCOMPARE(w->mode(), MainWindow::Mode::Live);
        QTRY_VERIFY_WITH_TIMEOUT(w->liveView()->stats().captured_seconds > 0 || done.count(),
                                 60000);
        QVERIFY2(done.isEmpty(), qPrintable(w->lastError()));
        vm->play(wav);
        // Live changes reach the session: live steps (not the offline ones), ratios.
        child<QSlider>(g, "liveStepsSlider")->setValue(2);
        QTRY_COMPARE(session_settings(worker).steps, 2);
        child<QSlider>(g, "stepsSlider")->setValue(11);
        QCOMPARE(session_settings(worker).steps, 2);
        child<QSlider>(g, "audioRatioSlider")->setValue(44);
        QTRY_COMPARE(session_settings(worker).audio_ratio, 4.4);
        QTRY_VERIFY_WITH_TIMEOUT(vm->wait_played(0), 60000);
        QTest::keyClick(w.get(), Qt::Key_L, Qt::ControlModifier);  // stop
        QVERIFY(done.wait(kGenerationTimeoutMs));
        QVERIFY2(w->lastError().isEmpty(), qPrintable(w->lastError()));
        checkLiveRun(*w, wav);
    }

    void liveWithoutAnyAudioDevice() {
        loopy::test::NoAudioDevices none;
        auto w = make_window();
        QCOMPARE(w->microphone(), QString());  // "No microphone found"
        QSignalSpy done(w.get(), &MainWindow::liveDone);
        child<QPushButton>(w.get(), "liveButton")->click();
        QVERIFY(done.wait(kGenerationTimeoutMs));
        QVERIFY2(w->lastError().contains("no microphone"), qPrintable(w->lastError()));
        QCOMPARE(w->mode(), MainWindow::Mode::Idle);
        QVERIFY(child<QPushButton>(w.get(), "generateButton")->isEnabled());
        // A named device that does not exist: a clear message too.
        w->setMicrophone("no-such-microphone");
        done.clear();
        w->startLive();
        QVERIFY(done.wait(kGenerationTimeoutMs));
        QVERIFY2(w->lastError().contains("no microphone"), qPrintable(w->lastError()));
    }

  private:
    void checkLiveRun(MainWindow& w, const QString& wav) {
        const auto stats = w.liveView()->stats();
        const auto report = w.lastReport();
        const double speech = loopy::audio::decode_audio_file(wav.toStdString()).duration();
        const double kept =
            stats.captured_seconds - stats.discarded_seconds - stats.overflow_seconds;
        qInfo(
            "live: captured %.2f s (speech %.2f s), discarded %.2f s, overflow %.2f s, pushed "
            "%.2f s, %lld frames (%.2f s), peak %.3f, %.2f fps generated, latency last %.0f ms "
            "median %.0f ms, %lld frames shown, %llu dropped",
            stats.captured_seconds, speech, stats.discarded_seconds, stats.overflow_seconds,
            stats.pushed_seconds, static_cast<long long>(report.frames), report.video_seconds,
            stats.peak, stats.generated_fps, w.liveView()->lastLatency() * 1000,
            w.liveView()->medianLatency() * 1000,
            static_cast<long long>(w.liveView()->framesShown()),
            static_cast<unsigned long long>(w.liveView()->framesDropped()));
        qInfo("status bar: %s", qPrintable(w.statusText()));
        QVERIFY2(stats.captured_seconds > speech, "the capture is shorter than the speech");
        QVERIFY2(stats.peak > 0.05, "the speech did not reach the engine");
        // Every frame is accounted for: frames = the audio kept (captured minus what the drop
        // policy discarded), to within one clip.
        QVERIFY2(
            std::abs(report.video_seconds - kept) <= 12.0 / 25,
            qPrintable(
                QString("%1 s of frames for %2 s of audio").arg(report.video_seconds).arg(kept)));
        QVERIFY(std::abs(stats.pushed_seconds - kept) < 0.1);
        QCOMPARE(stats.clip_steps, 2);  // the live-steps change applied to the later clips
        QTRY_VERIFY_WITH_TIMEOUT(!w.liveView()->active(), 30000);  // the queue played out
        QVERIFY(w.liveView()->framesShown() > 0);
        QCOMPARE(w.liveView()->framesShown() + qint64(w.liveView()->framesDropped()),
                 report.frames);
        QVERIFY2(w.liveView()->lastLatency() > 0, "no microphone-to-display latency measured");
        QCOMPARE(w.viewport()->currentFrame().size(), QSize(64, 64));
        QVERIFY(w.statusText().contains("mic-to-display"));
        QVERIFY(w.statusText().contains("audio dropped"));
    }
};

QTEST_MAIN(StudioTest)
#include "test_studio.moc"
