// wav2vec 2.0 against the torchaudio reference: CNN features and every transformer layer's
// output (torchaudio's extract_features == transformers' output_hidden_states[1..L]).
#include <torch/torch.h>
#include <QtTest>

#include "model/golden.h"
#include "model/wav2vec2.h"

using loopy::model::Wav2Vec2Config;
using loopy::model::Wav2Vec2Model;
using loopy::test::kParityTolerance;
using loopy::test::relative_error;

namespace {

void expect_close(const std::string& name, const torch::Tensor& out, const torch::Tensor& ref) {
    QVERIFY2(out.sizes() == ref.sizes(), (name + ": shape mismatch").c_str());
    const double err = relative_error(out, ref);
    qInfo("%s: relative error %.3g", name.c_str(), err);
    QVERIFY2(err <= kParityTolerance, (name + " differs from the reference").c_str());
}

}  // namespace

class Wav2Vec2ParityTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void matchesReference() {
        const auto golden = loopy::test::load_golden("wav2vec2.safetensors");
        const auto config = Wav2Vec2Config::from_json(golden.config);
        Wav2Vec2Model model(config);
        loopy::model::load_wav2vec2_weights(model, golden.weights(), "golden");
        model->eval();
        torch::NoGradGuard no_grad;

        // The reference fed the waveform as is (no normalisation).
        const auto out = model(golden.at("in.waveform"));
        expect_close("conv_features", out.conv_features, golden.at("out.conv_features"));
        QCOMPARE(out.hidden_states.size(), std::size_t(config.num_hidden_layers + 1));
        for (int64_t n = 1; n <= config.num_hidden_layers; ++n) {
            const std::string key = "hidden_state." + std::to_string(n);
            expect_close(key, out.hidden_states[n], golden.at("out." + key));
        }
    }

    void batchItemsAreIndependent() {
        const auto golden = loopy::test::load_golden("wav2vec2.safetensors");
        Wav2Vec2Model model(Wav2Vec2Config::from_json(golden.config));
        loopy::model::load_wav2vec2_weights(model, golden.weights(), "golden");
        model->eval();
        torch::NoGradGuard no_grad;
        const auto wave = golden.at("in.waveform");
        const auto batch = model(torch::cat({wave, wave.flip(-1)}, 0));
        const auto last = "out.hidden_state." + std::to_string(model->config().num_hidden_layers);
        expect_close("batch[0] last layer", batch.last_hidden_state()[0], golden.at(last)[0]);
    }
};

QTEST_APPLESS_MAIN(Wav2Vec2ParityTest)
#include "test_wav2vec2_parity.moc"
