// wav2vec 2.0: the base architecture's size, loading Hugging Face folders (both weight-norm key
// spellings, with and without the `wav2vec2.` prefix), input normalisation and clear errors.
#include <torch/torch.h>
#include <QtTest>

#include <fstream>
#include <functional>

#include "core/error.h"
#include "model/golden.h"
#include "model/wav2vec2.h"
#include "test_util.h"

using loopy::model::Wav2Vec2Config;
using loopy::model::Wav2Vec2Model;

using loopy::test::contains;
using loopy::test::error_of;

namespace {

// Writes config.json + model.safetensors into `dir`.
void write_folder(const QTemporaryDir& dir, const nlohmann::json& config,
                  const loopy::TensorMap& weights) {
    std::ofstream(dir.filePath("config.json").toStdString()) << config.dump(2);
    loopy::save_safetensors(dir.filePath("model.safetensors").toStdString(), weights);
}

// The golden's weights without the `wav2vec2.` prefix.
loopy::TensorMap unprefixed(const loopy::TensorMap& weights) {
    loopy::TensorMap out;
    for (const auto& [k, v] : weights)
        out[k.substr(std::string("wav2vec2.").size())] = v;
    return out;
}

void expect_matches_golden(Wav2Vec2Model& model, const loopy::test::Golden& golden) {
    torch::NoGradGuard no_grad;
    const auto out = model(golden.at("in.waveform"));
    const int64_t layers = model->config().num_hidden_layers;
    const double err = loopy::test::relative_error(
        out.hidden_states[layers], golden.at("out.hidden_state." + std::to_string(layers)));
    qInfo("last hidden state: relative error %.3g", err);
    QVERIFY(err <= loopy::test::kParityTolerance);
}

}  // namespace

class Wav2Vec2LoadingTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void baseHasUpstreamSizeAndNames() {
        Wav2Vec2Model model(Wav2Vec2Config::base());
        int64_t count = 0;
        for (const auto& p : model->parameters())
            count += p.numel();
        qInfo("wav2vec2-base parameters: %lld", static_cast<long long>(count));
        QCOMPARE(count, int64_t(94370944));
        const auto names = loopy::state_dict(*model);
        QCOMPARE(names.size(), std::size_t(210));  // transformers' 211 less masked_spec_embed
        QCOMPARE(names.at("encoder.pos_conv_embed.conv.weight_g").sizes(),
                 (at::IntArrayRef{1, 1, 128}));
        QCOMPARE(names.at("encoder.pos_conv_embed.conv.weight_v").sizes(),
                 (at::IntArrayRef{768, 48, 128}));
        QVERIFY(names.count("feature_extractor.conv_layers.0.layer_norm.weight"));
        QVERIFY(!names.count("feature_extractor.conv_layers.1.layer_norm.weight"));
        QVERIFY(!names.count("feature_extractor.conv_layers.0.conv.bias"));
        QVERIFY(names.count("encoder.layers.11.feed_forward.output_dense.bias"));
        QCOMPARE(Wav2Vec2Config::base().num_frames(16000), int64_t(49));  // 1 s -> 49 frames
    }

    void layerNormVariantsBuildAndRun() {
        auto config = Wav2Vec2Config::from_json({{"feat_extract_norm", "layer"},
                                                 {"do_stable_layer_norm", true},
                                                 {"conv_bias", true},
                                                 {"conv_dim", {8, 8, 8}},
                                                 {"conv_kernel", {10, 3, 2}},
                                                 {"conv_stride", {5, 2, 2}},
                                                 {"hidden_size", 16},
                                                 {"num_hidden_layers", 2},
                                                 {"num_attention_heads", 2},
                                                 {"intermediate_size", 32},
                                                 {"num_conv_pos_embeddings", 5},
                                                 {"num_conv_pos_embedding_groups", 2}});
        Wav2Vec2Model model(config);
        const auto names = loopy::state_dict(*model);
        QVERIFY(names.count("feature_extractor.conv_layers.2.layer_norm.bias"));
        QVERIFY(names.count("feature_extractor.conv_layers.2.conv.bias"));
        torch::NoGradGuard no_grad;
        const auto out = model(torch::randn({1, 1000}));
        QCOMPARE(out.conv_features.size(1), config.num_frames(1000));
        QCOMPARE(out.hidden_states.size(), std::size_t(3));
        QCOMPARE(out.last_hidden_state().sizes(),
                 (at::IntArrayRef{1, config.num_frames(1000), 16}));
        // Stable layer norm: the last state is the encoder's final layer_norm of layer 2's output.
        const auto layer2 =
            model->encoder->layers->ptr(1)->as<loopy::model::Wav2Vec2EncoderLayerImpl>();
        const auto expected = model->encoder->layer_norm(layer2->forward(out.hidden_states[1]));
        QVERIFY(torch::allclose(out.last_hidden_state(), expected, 1e-5, 1e-6));
    }

    void loadsHuggingFaceFolders() {
        const auto golden = loopy::test::load_golden("wav2vec2.safetensors");
        {  // Wav2Vec2ForCTC layout: prefixed keys plus a CTC head we do not build.
            QTemporaryDir dir;
            auto weights = golden.weights();
            weights["lm_head.weight"] = torch::zeros({5, 32});
            weights["lm_head.bias"] = torch::zeros({5});
            write_folder(dir, golden.config, weights);
            auto model = loopy::model::load_wav2vec2_folder(dir.path().toStdString());
            expect_matches_golden(model, golden);
        }
        {  // Wav2Vec2Model layout saved by PyTorch >= 2.1 (weight-norm parametrizations).
            QTemporaryDir dir;
            auto weights = unprefixed(golden.weights());
            const std::string conv = "encoder.pos_conv_embed.conv.";
            weights[conv + "parametrizations.weight.original0"] = weights.at(conv + "weight_g");
            weights[conv + "parametrizations.weight.original1"] = weights.at(conv + "weight_v");
            weights.erase(conv + "weight_g");
            weights.erase(conv + "weight_v");
            weights["masked_spec_embed"] = torch::zeros({32});
            write_folder(dir, golden.config, weights);
            auto model = loopy::model::load_wav2vec2_folder(dir.path().toStdString());
            expect_matches_golden(model, golden);
        }
    }

    void normalisationGivesZeroMeanUnitVariance() {
        const auto wave =
            torch::randn({2, 16000}, torch::kFloat) * torch::tensor({{3.f}, {0.01f}}) +
            torch::tensor({{5.f}, {-1.f}});
        const auto normalised = loopy::model::normalize_waveform(wave);
        QCOMPARE(normalised.scalar_type(), torch::kFloat);
        const auto x = normalised.to(torch::kDouble);
        QVERIFY(x.mean(-1).abs().max().item<double>() < 1e-6);
        // Unit variance up to the 1e-7 epsilon, which matters for the quiet row (var 1e-4).
        const auto var_in = wave.to(torch::kDouble).var(-1, /*unbiased=*/false);
        const auto var = x.var(-1, /*unbiased=*/false);
        QVERIFY((var - var_in / (var_in + 1e-7)).abs().max().item<double>() < 1e-5);
        QVERIFY((var - 1).abs().max().item<double>() < 2e-3);
        const auto silent = loopy::model::normalize_waveform(torch::full({100}, 0.5f));
        QCOMPARE(silent.scalar_type(), torch::kFloat);
        QVERIFY(silent.abs().max().item<float>() == 0.f);  // constant input: zeros, no NaN
    }

    void reportsClearErrors() {
        const auto golden = loopy::test::load_golden("wav2vec2.safetensors");
        const auto config = Wav2Vec2Config::from_json(golden.config);
        const std::string conv_v = "wav2vec2.encoder.pos_conv_embed.conv.weight_v";
        auto load = [&](const loopy::TensorMap& weights) {
            Wav2Vec2Model model(config);
            loopy::model::load_wav2vec2_weights(model, weights, "ckpt");
        };

        auto missing = golden.weights();
        missing.erase("wav2vec2.encoder.layers.1.final_layer_norm.bias");
        auto msg = error_of([&] { load(missing); });
        qInfo("%s", msg.c_str());
        QVERIFY(contains(msg, "missing") && contains(msg, "layers.1.final_layer_norm.bias"));

        auto wrong = golden.weights();
        wrong[conv_v] = torch::zeros({32, 8, 15});
        msg = error_of([&] { load(wrong); });
        QVERIFY(contains(msg, "wrong shape") && contains(msg, "pos_conv_embed.conv.weight_v"));

        const auto vae = loopy::test::load_golden("autoencoder_kl.safetensors");
        msg = error_of([&] { load(vae.weights()); });
        qInfo("%s", msg.c_str());
        QVERIFY(contains(msg, "not a wav2vec2 checkpoint"));

        auto bad_config = golden.config;
        bad_config["feat_extract_norm"] = "batch";
        QTemporaryDir dir;
        write_folder(dir, bad_config, golden.weights());
        msg = error_of([&] { loopy::model::load_wav2vec2_folder(dir.path().toStdString()); });
        qInfo("%s", msg.c_str());
        QVERIFY(contains(msg, "config.json") && contains(msg, "feat_extract_norm 'batch'"));

        QTemporaryDir empty;
        msg = error_of([&] { loopy::model::load_wav2vec2_folder(empty.path().toStdString()); });
        QVERIFY(contains(msg, "config.json"));
        QVERIFY(contains(error_of([] {
                             Wav2Vec2Config::from_json({{"model_type", "hubert"}});
                         }),
                         "model_type"));

        Wav2Vec2Model model(config);
        msg = error_of([&] { model(torch::zeros({1, 300})); });
        QVERIFY(contains(msg, "too few"));
    }
};

QTEST_APPLESS_MAIN(Wav2Vec2LoadingTest)
#include "test_wav2vec2_loading.moc"
