// `loopy eval` end to end: held-out synthetic clips scored for a random tiny model, with the
// static and ground-truth baselines, and the report files.
#include <QTemporaryDir>
#include <QtTest>

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "e2e/loopy_cli.h"
#include "model/guidance.h"
#include "model/loopy_model.h"
#include "model/preview_decoder.h"
#include "pipeline/tiny_model.h"
#include "render/evaluate.h"
#include "render/synth_dataset.h"

using namespace loopy;
namespace fs = std::filesystem;

class EvalTest : public QObject {
    Q_OBJECT
    QTemporaryDir dir_;
    std::string data_, checkpoint_;

  private Q_SLOTS:
    void initTestCase() {
        QVERIFY(dir_.isValid());
        data_ = dir_.filePath("data").toStdString();
        synth::SynthOptions synth;
        synth.out = data_;
        synth.clips = 2;
        synth.split = synth::Split::HeldOut;
        synth.clip.size = 128;
        synth.clip.seconds = 2.0;
        synth.clip.write_mp4 = true;
        synth::run_synth(synth);
        checkpoint_ = dir_.filePath("tiny.safetensors").toStdString();
        test::save_random_checkpoint(checkpoint_, 128);
    }

    void baselinesAndReport() {
        eval::EvalOptions options;
        options.data = data_;
        options.report = dir_.filePath("report").toStdString();
        options.settings.steps = 1;
        int calls = 0;
        const auto summary = eval::evaluate(Model::load(checkpoint_), options,
                                            [&](int, int, const std::string&) { ++calls; });
        QCOMPARE(summary.clips, 2);
        QVERIFY(calls >= 2);
        // The ground truth follows its own jaw; the static portrait cannot (r = 0 by definition
        // for a constant series).
        QVERIFY2(summary.truth_mouth_r >= 0.9, std::to_string(summary.truth_mouth_r).c_str());
        QVERIFY(std::abs(summary.static_mouth_r) < 0.2);
        QVERIFY(std::isfinite(summary.vae_mouth_r));
        // Two clips: the model's mean r comes with its standard error (0 only if both agree).
        QVERIFY(std::isfinite(summary.model_mouth_r_se) && summary.model_mouth_r_se >= 0);
        // Report files: a Markdown table with the four methods, a CSV row per method and clip,
        // a contact sheet (2 rows) and the mouth plot.
        const fs::path report(options.report);
        std::ifstream md(report / "metrics.md");
        const std::string markdown((std::istreambuf_iterator<char>(md)), {});
        for (const char* method : {"| model", "| static", "| VAE round trip", "| ground truth",
                                   "mouth_r", "Standard error of each mean"})
            QVERIFY2(markdown.find(method) != std::string::npos, markdown.c_str());
        std::ifstream csv(report / "metrics.csv");
        int lines = 0;
        for (std::string line; std::getline(csv, line);) {
            ++lines;
            // The round trip really goes through the (random) VAE: far from the truth's 100 dB.
            if (line.rfind("VAE round trip,", 0) == 0) {
                const double psnr = std::stod(line.substr(line.find(',', 15) + 1));
                QVERIFY2(psnr > 0 && psnr < 40, line.c_str());
            }
        }
        QCOMPARE(lines, 1 + 4 * 2);
        const auto sheet = cv::imread((report / "contact_sheet.png").string());
        QVERIFY(!sheet.empty());
        QVERIFY(sheet.rows >= 2 * 128 && sheet.cols >= 6 * 128);
        QVERIFY(!cv::imread((report / "mouth_opening.png").string()).empty());
    }

    void cliPrintsTheTable() {
        const auto r = test::loopy_cli(
            {"eval", "--checkpoint", checkpoint_.c_str(), "--data", data_.c_str(), "--report",
             dir_.filePath("cli-report"), "--steps", "1", "--max-clips", "1"},
            600000);
        QVERIFY2(r.code == 0, qPrintable(r.err));
        // The test checkpoint recommends no ratios: the method's, as the summary says.
        QVERIFY2(
            r.out.contains("mouth-opening correlation r") &&
                r.out.contains("(1 clips; guidance audio 5, reference 3, 1 steps, full decoder)"),
            qPrintable(r.out));
    }

    // `eval --decoder preview` scores the frames as the live preview draws them: the model's row
    // changes (the same noise and network, another decoder), and a checkpoint without a preview
    // decoder is refused with a message.
    void cliScoresThePreviewDecoder() {
        auto run = [&](const std::string& checkpoint, const char* decoder) {
            const QString report = dir_.filePath(QString("decoder-") + decoder);
            const auto r = test::loopy_cli(
                {"eval", "--checkpoint", checkpoint.c_str(), "--data", data_.c_str(), "--report",
                 report, "--steps", "1", "--max-clips", "1", "--decoder", decoder},
                600000);
            std::string model_row;  // the model's metrics.csv line
            std::ifstream csv(fs::path(report.toStdString()) / "metrics.csv");
            for (std::string line; std::getline(csv, line);)
                if (line.rfind("model,", 0) == 0) model_row = line;
            return std::make_pair(r, model_row);
        };
        const auto [refused, no_row] = run(checkpoint_, "preview");
        QVERIFY2(refused.code != 0 && (refused.out + refused.err).contains("preview decoder"),
                 qPrintable(refused.out + refused.err));

        const std::string with_preview = dir_.filePath("with-preview.safetensors").toStdString();
        auto net = model::load_loopy_checkpoint(checkpoint_);
        const auto preview = test::random_preview(net->config, 3);
        model::save_loopy_checkpoint(with_preview, *net, model::preview_decoder_metadata(*preview),
                                     model::preview_decoder_tensors(*preview));
        const auto [full_run, full] = run(with_preview, "full");
        const auto [preview_run, previewed] = run(with_preview, "preview");
        QVERIFY2(full_run.code == 0 && preview_run.code == 0 &&
                     preview_run.out.contains("1 steps, preview decoder)"),
                 qPrintable(preview_run.out + preview_run.err));
        QVERIFY2(!full.empty() && !previewed.empty() && full != previewed,
                 (full + " | " + previewed).c_str());
    }

    // The tiny preset feeds the reference latent to the denoiser's conv_in; `info` says so.
    void cliInfoShowsTheReferencePath() {
        const auto r = test::loopy_cli({"info", checkpoint_.c_str()}, 60000);
        QVERIFY(r.code >= 0);  // finished in time
        QVERIFY2(
            r.out.contains("reference:       attention bank + latent at the denoiser's conv_in"),
            qPrintable(r.out));
    }

    // `train-vae --decoder-only --mouth-weight`: the encoder and the latent scale stay (a
    // diffusion model trained on those latents stays valid); the decoder moves, and the guidance
    // ratios recommended for that diffusion model are kept.
    void cliTrainVaeDecoderOnly() {
        const std::string tuned = dir_.filePath("tuned.safetensors").toStdString();
        model::save_loopy_checkpoint(tuned, *model::load_loopy_checkpoint(checkpoint_),
                                     model::guidance_metadata({7.0, 1.5}));
        const QString out = dir_.filePath("decoder-only.safetensors");
        const auto r = test::loopy_cli({"train-vae",      "--init", tuned.c_str(), "--data",
                                        data_.c_str(),    "--out",  out,           "--decoder-only",
                                        "--mouth-weight", "4",      "--steps",     "2",
                                        "--batch",        "2",      "--lr",        "1e-3",
                                        "--seed",         "7",      "--threads",   "1"},
                                       600000);
        QVERIFY2(r.code == 0, qPrintable(r.err));
        auto before = Model::load(checkpoint_);
        auto after = Model::load(out.toStdString());
        QVERIFY(after->recommended_guidance().has_value());
        QCOMPARE(after->recommended_guidance()->audio, 7.0);
        QCOMPARE(after->recommended_guidance()->reference, 1.5);
        const auto& vae_before = *before->network().vae;
        const auto& vae_after = *after->network().vae;
        QCOMPARE(vae_after.config.scaling_factor, vae_before.config.scaling_factor);
        const auto old_params = vae_before.named_parameters();
        int encoder = 0, decoder_changed = 0;
        for (const auto& item : vae_after.named_parameters()) {
            const bool same = torch::equal(item.value(), old_params[item.key()]);
            const auto& key = item.key();
            if (key.rfind("decoder.", 0) == 0 || key.rfind("post_quant_conv.", 0) == 0) {
                decoder_changed += same ? 0 : 1;
            } else {
                QVERIFY2(same, key.c_str());
                ++encoder;
            }
        }
        QVERIFY(encoder > 10);
        QVERIFY2(decoder_changed > 10, std::to_string(decoder_changed).c_str());
    }

    void emptyFolderIsAnError() {
        QTemporaryDir empty;
        eval::EvalOptions options;
        options.data = empty.path().toStdString();
        options.report = empty.filePath("r").toStdString();
        bool threw = false;
        try {
            eval::evaluate(Model::load(checkpoint_), options);
        } catch (const Error& e) {
            threw = std::string(e.what()).find("no clips") != std::string::npos;
        }
        QVERIFY(threw);
    }
};

QTEST_GUILESS_MAIN(EvalTest)
#include "test_eval.moc"
