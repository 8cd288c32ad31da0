// `loopy convert` and `loopy info` on a converted checkpoint, as a user runs them.
#include <QtTest>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/checkpoint.h"
#include "e2e/loopy_cli.h"

namespace {

using Run = loopy::test::CliRun;
using loopy::test::loopy_cli;

// A golden's weights and upstream config as a model folder.
void golden_folder(const QString& dir, const std::string& golden, const std::string& file) {
    loopy::Metadata metadata;
    auto tensors =
        loopy::load_safetensors(std::string(LOOPY_TEST_DATA) + "/goldens/" + golden, &metadata);
    loopy::TensorMap weights;
    for (const auto& [k, v] : tensors)
        if (k.rfind("in.", 0) != 0 && k.rfind("out.", 0) != 0) weights[k] = v;
    QDir().mkpath(dir);
    std::ofstream(QDir(dir).filePath("config.json").toStdString()) << metadata.at("config");
    loopy::save_safetensors(QDir(dir).filePath(QString::fromStdString(file)).toStdString(),
                            weights);
}

}  // namespace

class CliConvert : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void convertThenInfo() {
        QTemporaryDir dir;
        golden_folder(dir.filePath("sd/unet"), "unet2d_condition.safetensors",
                      "diffusion_pytorch_model.safetensors");
        golden_folder(dir.filePath("sd/vae"), "autoencoder_kl.safetensors",
                      "diffusion_pytorch_model.safetensors");
        golden_folder(dir.filePath("w2v"), "wav2vec2.safetensors", "model.safetensors");
        const QString out = dir.filePath("init.safetensors");
        const Run c = loopy_cli({"convert", "--sd15", dir.filePath("sd"), "--wav2vec2",
                                 dir.filePath("w2v"), "--out", out, "--config", "tiny"});
        QVERIFY2(c.code == 0, qPrintable(c.err));
        QVERIFY2(c.out.contains("initialised fresh") &&
                     c.out.contains("denoising_unet.*.audio_attentions.*") &&
                     c.out.contains("not reused for audio"),
                 qPrintable(c.out));
        QVERIFY2(c.err.contains("audio_encoder.*"), qPrintable(c.err));  // progress stages

        const Run i = loopy_cli({"info", out});
        QVERIFY2(i.code == 0, qPrintable(i.err));
        QVERIFY2(i.out.contains("Loopy config 'tiny' (format version 1)"), qPrintable(i.out));
        QVERIFY(i.out.contains("block_out_channels [32, 64]"));  // the golden U-Net's widths
        QVERIFY(i.out.contains("124 -> 20 (uniform)"));
        QVERIFY(i.out.contains("tensors:  966"));
        const Run j = loopy_cli({"info", out, "--config-json"});
        const auto json_start = j.out.indexOf("\n{");
        QVERIFY(json_start > 0);
        auto config = nlohmann::json::parse(j.out.mid(json_start).toStdString());
        QCOMPARE(config["temporal_segment"]["num_segments"].get<int>(), 5);
    }

    void convertErrorsAreClear() {
        QTemporaryDir dir;
        QDir().mkpath(dir.filePath("empty"));
        const Run r = loopy_cli({"convert", "--sd15", dir.filePath("empty"), "--wav2vec2",
                                 dir.filePath("empty"), "--out", dir.filePath("x.safetensors")});
        QCOMPARE(r.code, 1);
        QVERIFY2(r.err.contains("no unet/ folder"), qPrintable(r.err));
        QVERIFY(!QFile::exists(dir.filePath("x.safetensors")));
        const Run missing = loopy_cli({"convert", "--sd15", dir.filePath("empty")});
        QVERIFY(missing.code != 0);
    }
};

QTEST_APPLESS_MAIN(CliConvert)
#include "test_cli_convert.moc"
