// The `loopy` executable as a user runs it.
#include <QJsonDocument>
#include <QJsonObject>
#include <QtTest>

#include "core/checkpoint.h"
#include "e2e/loopy_cli.h"
#include "pipeline/tiny_model.h"

namespace {

using Run = loopy::test::CliRun;

Run run_program(const QString& program, const QStringList& args) {
    QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
    env.insert("XDG_DATA_HOME", QDir::tempPath() + "/loopy-cli-test");
    return loopy::test::run_program(program, args, 120000, env);
}

Run loopy_cli(const QStringList& args) {
    return run_program(QString(LOOPY_BINARY_DIR) + "/app/loopy", args);
}

// The CLI that -DLOOPY_ENGINE_ONLY=ON builds (app/CMakeLists.txt builds it beside `loopy`).
const QString kEngineOnlyCli = QString(LOOPY_BINARY_DIR) + "/app/loopy-engine-only";

}  // namespace

class CliTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void version() {
        const Run r = loopy_cli({"--version"});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.startsWith("loopy 0."), qPrintable(r.out));
    }

    void helpListsSubcommands() {
        const Run r = loopy_cli({"--help"});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains("info"), qPrintable(r.out));
        QVERIFY(r.out.contains("--threads"));
    }

    void infoOnAGolden() {
        const QString file = QString(LOOPY_TEST_DATA) + "/goldens/ddim.safetensors";
        const Run r = loopy_cli({"info", file, "--tensors"});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains("tensors:  46"), qPrintable(r.out));
        QVERIFY(r.out.contains("I64 x3"));
        QVERIFY(r.out.contains("reference = diffusers"));
        QVERIFY(r.out.contains("out.timesteps.25  I64  [25]"));
        QVERIFY(r.out.contains("bytes:    "));
    }

    void infoSystem() {
        const Run r = loopy_cli({"--threads", "2", "info", "--system"});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains("LibTorch       1.") || r.out.contains("LibTorch       2."),
                 qPrintable(r.out));
        QVERIFY2(r.out.contains("Threads        2 intra-op"), qPrintable(r.out));
        QVERIFY(r.out.contains("BLAS"));
        if (r.out.contains("openblas"))  // kept at 1 whatever --threads says (core/system.cpp)
            QVERIFY2(r.out.contains("OpenBLAS pool 1"), qPrintable(r.out));
        // PortAudio's probe of ALSA and JACK goes to the debug log, not to the terminal: without
        // a sound card (CI) ALSA and JACK printed dozens of lines here.
        for (const char* noise : {"ALSA lib", "jack server", "Cannot connect to server"})
            QVERIFY2(!r.err.contains(noise), qPrintable(r.err));
    }

    void corruptFileIsAClearErrorNotACrash() {
        QTemporaryDir dir;
        QFile f(dir.filePath("model.safetensors"));
        QVERIFY(f.open(QIODevice::WriteOnly));
        f.write("PK\x03\x04 this is a zip pickle", 26);
        f.close();
        const Run r = loopy_cli({"info", f.fileName()});
        QCOMPARE(r.code, 1);
        QVERIFY2(r.err.contains("model.safetensors") && r.err.contains("zip archive"),
                 qPrintable(r.err));
    }

    void benchModulesPrintsEveryNetwork() {
        const Run r = loopy_cli({"bench", "modules", "--no-sd15", "--repeat", "1"});
        QCOMPARE(r.code, 0);
        for (const char* network :
             {"AutoencoderKL", "UNet2DConditionModel", "TransformerTemporalModel", "Wav2Vec2Model"})
            QVERIFY2(r.out.contains(network), qPrintable(r.out));
        QVERIFY2(r.out.contains("matmul 2048^2 float32:"), qPrintable(r.out));
        // The golden U-Net has 212 - 4 (inputs/outputs) tensors; its parameter count is printed.
        const QStringList lines = r.out.split('\n');
        bool found_unet = false;
        for (const QString& line : lines) {
            if (!line.startsWith("UNet2DConditionModel")) continue;
            const QStringList cols = line.split(' ', Qt::SkipEmptyParts);
            QVERIFY(cols.size() >= 5);
            QVERIFY2(cols[cols.size() - 4].toLongLong() > 100000, qPrintable(line));
            QVERIFY2(cols[cols.size() - 2].toDouble() > 0, qPrintable(line));  // GFLOP/fwd
            found_unet = true;
        }
        QVERIFY(found_unet);
    }

    // The pipeline benchmark end to end on the CPU; --compare-cpu there compares the CPU with
    // itself (same weights, same seed): the frames must match.
    void benchRenderWritesItsFiguresAndComparesWithTheCpu() {
        QTemporaryDir dir;
        const QString json = dir.filePath("bench.json");
        const Run r = loopy_cli({"bench", "render", "--config", "tiny", "--resolution", "64",
                                 "--steps", "1", "--seconds", "0.96", "--compare-cpu",
                                 "--motion-cache", "off", "--json", json});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains("first clip against the CPU in float32: PSNR"), qPrintable(r.out));
        QVERIFY2(!r.out.contains("peak GPU memory"), qPrintable(r.out));
        QFile f(json);
        QVERIFY(f.open(QIODevice::ReadOnly));
        const QJsonObject j = QJsonDocument::fromJson(f.readAll()).object();
        QCOMPARE(j["frames"].toInt(), 12);  // the second clip; the first warms up
        QVERIFY(j["frames_per_second"].toDouble() > 0);
        QVERIFY(j["median_ms"].toObject()["denoise_step"].toDouble() > 0);
        QVERIFY(j["denoise_step_gflop"].toDouble() > 0);
        const QJsonObject cpu = j["first_clip_vs_cpu_float32"].toObject();
        QVERIFY2(cpu["max_abs_diff"].toInt(-1) == 0, qPrintable(QJsonDocument(cpu).toJson()));
        QVERIFY(!j.contains("peak_gpu_allocated_mib"));
        QCOMPARE(j["config"].toObject()["motion_cache"].toString(), QString("off"));
    }

    // --cfg-audio / --cfg-ref: ratios whose pass weight is zero skip that pass, so 6 / 1 times
    // two passes a step where the method's 5 / 3 runs three.
    void benchRenderTimesTheGuidanceRatiosGiven() {
        QTemporaryDir dir;
        const auto bench = [&](const QStringList& ratios) {
            const QString json = dir.filePath("bench.json");
            const Run r =
                loopy_cli(QStringList{"bench", "render", "--config", "tiny", "--resolution", "64",
                                      "--steps", "1", "--seconds", "0.96", "--json", json} +
                          ratios);
            QFile f(json);
            if (r.code != 0 || !f.open(QIODevice::ReadOnly)) qWarning("%s", qPrintable(r.err));
            return QJsonDocument::fromJson(f.readAll()).object();
        };
        const QJsonObject method = bench({}), two = bench({"--cfg-audio", "6", "--cfg-ref", "1"});
        QCOMPARE(method["config"].toObject()["guidance"].toString(),
                 QString("3-pass (audio 5, reference 3)"));
        QCOMPARE(two["config"].toObject()["guidance"].toString(),
                 QString("2-pass (audio 6, reference 1)"));
        const double ratio =
            two["denoise_step_gflop"].toDouble() / method["denoise_step_gflop"].toDouble();
        QVERIFY2(ratio > 0.55 && ratio < 0.78, qPrintable(QString::number(ratio)));
        QCOMPARE(bench({"--cfg", "on", "--cfg-ref", "1", "--cfg-audio", "6"})["config"]
                     .toObject()["guidance"]
                     .toString(),
                 QString("2-pass (audio 6, reference 1)"));
        const Run off = loopy_cli({"bench", "render", "--cfg", "off", "--cfg-audio", "6"});
        QVERIFY(off.code != 0);
        QVERIFY2(off.err.contains("--cfg off times one pass"), qPrintable(off.err));
    }

    // NHWC convolutions (--channels-last) against the plain path on the CPU: same frames within
    // rounding (the two use different kernels, so not always bit for bit).
    void benchRenderChannelsLastMatchesThePlainPath() {
        QTemporaryDir dir;
        const QString json = dir.filePath("bench.json");
        const Run r =
            loopy_cli({"bench", "render", "--config", "tiny", "--resolution", "64", "--steps", "2",
                       "--seconds", "0.96", "--channels-last", "--compare-cpu", "--json", json});
        QCOMPARE(r.code, 0);
        QVERIFY2(r.out.contains("channels last"), qPrintable(r.out));
        QFile f(json);
        QVERIFY(f.open(QIODevice::ReadOnly));
        const QJsonObject j = QJsonDocument::fromJson(f.readAll()).object();
        QVERIFY(j["config"].toObject()["channels_last"].toBool());
        const QJsonObject cpu = j["first_clip_vs_cpu_float32"].toObject();
        QVERIFY2(cpu["max_abs_diff"].toInt(-1) >= 0 && cpu["max_abs_diff"].toInt() <= 2,
                 qPrintable(QJsonDocument(cpu).toJson()));
        QVERIFY2(cpu["psnr_db"].toDouble() > 45, qPrintable(QJsonDocument(cpu).toJson()));
    }

    void benchResolutionOtherThanTheCheckpointsIsAnError() {
        QTemporaryDir dir;
        const QString checkpoint = dir.filePath("tiny32.safetensors");
        loopy::test::save_random_checkpoint(checkpoint.toStdString(), 32);
        const QStringList bench = {"bench", "render",    "--checkpoint", checkpoint,  "--steps",
                                   "1",     "--seconds", "0.48",         "--threads", "1"};
        const Run wrong = loopy_cli(bench + QStringList{"--resolution", "64"});
        QCOMPARE(wrong.code, 1);
        QVERIFY2(wrong.err.contains("--resolution 64 applies to random-weight networks") &&
                     wrong.err.contains("is a 32x32 model"),
                 qPrintable(wrong.err));
        const Run same = loopy_cli(bench + QStringList{"--resolution", "32"});
        QCOMPARE(same.code, 0);
        QVERIFY2(same.out.contains("32x32"), qPrintable(same.out));
    }

    void engineOnlyCliHasTheEngineCommandsAlone() {
        const Run help = run_program(kEngineOnlyCli, {"--help"});
        QCOMPARE(help.code, 0);
        for (const char* command : {"info", "bench", "convert", "train"})
            QVERIFY2(help.out.contains(QString("  %1 ").arg(command)), qPrintable(help.out));
        for (const char* command : {"render", "synth", "eval", "train-vae", "train-audio"})
            QVERIFY2(!help.out.contains(QString("  %1").arg(command)), qPrintable(help.out));
        // Its `train` reads a training data cache, never clip folders (that needs FFmpeg).
        const QString folder = QDir::tempPath();
        const Run train =
            run_program(kEngineOnlyCli, {"train", "--data", folder, "--config", "tiny", "-o",
                                         folder + "/loopy-engine-only-run"});
        QVERIFY(train.code != 0);
        QVERIFY2(train.err.contains("reads training data from a cache file alone"),
                 qPrintable(train.err));
        QVERIFY(!QFileInfo::exists(folder + "/loopy-engine-only-run"));
        // A CUDA run on a LibTorch without CUDA says why it cannot start.
        const Run cuda = loopy_cli({"train", "--data", folder, "--config", "tiny", "--device",
                                    "cuda", "-o", folder + "/loopy-cuda-run"});
        QVERIFY(cuda.code != 0);
        QVERIFY2(cuda.err.contains("has no CUDA") || torch::cuda::is_available(),
                 qPrintable(cuda.err));
        const Run gpu = loopy_cli({"train", "--data", folder, "--config", "tiny", "--device", "gpu",
                                   "-o", folder + "/loopy-gpu-run"});
        QVERIFY(gpu.code != 0);
        QVERIFY2(gpu.err.contains("unknown device 'gpu'"), qPrintable(gpu.err));
        // --steps 0 only writes a data cache, so it needs --save-data.
        const Run none = loopy_cli({"train", "--data", folder, "--config", "tiny", "--steps", "0",
                                    "-o", folder + "/loopy-no-steps-run"});
        QVERIFY(none.code != 0);
        QVERIFY2(none.err.contains("--steps 0 trains nothing"), qPrintable(none.err));
        QVERIFY2(loopy_cli({"--help"}).out.contains("  render "), "the full CLI's help differs");

        const Run info = run_program(kEngineOnlyCli, {"info", "--system"});
        QCOMPARE(info.code, 0);
        QVERIFY2(info.out.contains("not built in (engine-only build)"), qPrintable(info.out));

        // Linked against LibTorch alone: no Qt, FFmpeg, PortAudio or OpenCV library among the
        // ones it needs itself (Debian's LibTorch brings OpenCV and FFmpeg along, so not `ldd`).
        const auto needed = [](const QString& binary) {
            return run_program("objdump", {"-p", binary}).out;
        };
        const QString engine_only = needed(kEngineOnlyCli);
        QVERIFY2(engine_only.contains(QRegularExpression("NEEDED +libtorch")),
                 qPrintable(engine_only));
        for (const char* library : {"libQt6", "libavcodec", "libportaudio", "libopencv"})
            QVERIFY2(!engine_only.contains(library), qPrintable(engine_only));
        QVERIFY2(needed(QString(LOOPY_BINARY_DIR) + "/app/loopy").contains("libavcodec"),
                 "objdump does not list what the full CLI needs");
    }

    void trainTakesOtherMaskProbabilitiesAndSaysSo() {
        // The trainer reports the probabilities it was given (before the empty folder stops it).
        const QString folder = QDir::tempPath() + "/loopy-mask-options";
        QVERIFY(QDir().mkpath(folder));
        const Run other =
            loopy_cli({"train", "--data", folder, "--config", "tiny", "--drop-reference", "0.5",
                       "--drop-motion", "0.4", "-o", folder + "/run"});
        QVERIFY(other.code != 0);
        QVERIFY2(other.err.contains("condition masks differ from the method's: drop reference 0.5 "
                                    "(the method's 0.15)\n"),
                 qPrintable(other.err));
        // The method's values by default: no such line.
        const Run method =
            loopy_cli({"train", "--data", folder, "--config", "tiny", "-o", folder + "/run"});
        QVERIFY(method.code != 0);
        QVERIFY2(method.err.contains("no clip folders"), qPrintable(method.err));
        QVERIFY2(!method.err.contains("condition masks"), qPrintable(method.err));
        const Run bad = loopy_cli({"train", "--data", folder, "--config", "tiny", "--drop-audio",
                                   "1.5", "-o", folder + "/run"});
        QVERIFY(bad.code != 0);
        QVERIFY2(bad.err.contains("--drop-audio"), qPrintable(bad.err));
        QVERIFY(!QFileInfo::exists(folder + "/run"));
    }

    void unknownSubcommandFails() {
        const Run r = loopy_cli({"frobnicate"});
        QVERIFY(r.code != 0);
    }
};

QTEST_APPLESS_MAIN(CliTest)
#include "test_cli.moc"
