// Every reference file parses, and writing its tensors back gives the same tensors and metadata.
#include <QtTest>

#include <filesystem>

#include "core/checkpoint.h"
#include "model/golden.h"

class GoldensRoundTrip : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void roundTrip_data() {
        QTest::addColumn<QString>("file");
        for (const char* f :
             {"autoencoder_kl.safetensors", "ddim.safetensors", "transformer_temporal.safetensors",
              "unet2d_condition.safetensors", "wav2vec2.safetensors"})
            QTest::newRow(f) << QString(f);
    }
    void roundTrip() {
        QFETCH(QString, file);
        const std::string path = loopy::test::goldens_dir() + "/" + file.toStdString();
        QVERIFY2(std::filesystem::exists(path), path.c_str());
        loopy::Metadata meta;
        const auto tensors = loopy::load_safetensors(path, &meta);
        QVERIFY(!tensors.empty());
        QVERIFY(meta.count("config") || file == "ddim.safetensors" || meta.count("reference"));

        QTemporaryDir dir;
        const std::string copy = dir.filePath("copy.safetensors").toStdString();
        loopy::save_safetensors(copy, tensors, meta);
        loopy::Metadata meta2;
        const auto back = loopy::load_safetensors(copy, &meta2);
        QCOMPARE(meta2, meta);
        QCOMPARE(back.size(), tensors.size());
        for (const auto& [k, v] : tensors) {
            QVERIFY2(back.count(k), k.c_str());
            QVERIFY2(torch::equal(back.at(k), v), k.c_str());
        }
    }
};

QTEST_APPLESS_MAIN(GoldensRoundTrip)
#include "test_goldens_roundtrip.moc"
