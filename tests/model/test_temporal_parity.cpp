// AnimateDiff motion module block against diffusers 0.25 TransformerTemporalModel.
#include <QtTest>

#include "core/error.h"
#include "model/golden.h"
#include "model/transformer_temporal.h"

using namespace loopy;

class TemporalParity : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void matches_golden();
    void builds_same_positions();
    void rejects_bad_frame_count();
    void rejects_unsupported_config();
};

void TemporalParity::matches_golden() {
    auto golden = test::load_golden("transformer_temporal.safetensors");
    torch::NoGradGuard no_grad;
    model::TransformerTemporalModel net(model::transformer_temporal_options(golden.config));
    load_state_dict(*net, golden.weights(), {}, "transformer_temporal golden");
    net->eval();
    const int64_t frames = golden.config.at("num_frames").get<int64_t>();
    auto out = net->forward(golden.at("in.hidden_states"), frames);
    const double err = test::relative_error(out, golden.at("out.sample"));
    qInfo("transformer_temporal relative error: %.3g", err);
    QVERIFY2(err <= test::kParityTolerance, qPrintable(QString::number(err)));
}

// The `pe` table we build equals the one diffusers saved, so loading it changes nothing.
void TemporalParity::builds_same_positions() {
    auto golden = test::load_golden("transformer_temporal.safetensors");
    model::TransformerTemporalModel net(model::transformer_temporal_options(golden.config));
    const auto& ref = golden.at("transformer_blocks.0.pos_embed.pe");
    const double err = test::relative_error(net->blocks[0]->pos_embed->pe, ref);
    qInfo("pos_embed.pe relative error: %.3g", err);
    QVERIFY(err <= 1e-6);
}

void TemporalParity::rejects_bad_frame_count() {
    auto golden = test::load_golden("transformer_temporal.safetensors");
    torch::NoGradGuard no_grad;
    model::TransformerTemporalModel net(model::transformer_temporal_options(golden.config));
    // 12 items cannot be split into videos of 5 frames; 40 frames exceed the 32 positions.
    QVERIFY_THROWS_EXCEPTION(Error, net->forward(golden.at("in.hidden_states"), 5));
    QVERIFY_THROWS_EXCEPTION(Error, net->forward(torch::zeros({40, 32, 2, 2}), 40));
}

void TemporalParity::rejects_unsupported_config() {
    auto config = test::load_golden("transformer_temporal.safetensors").config;
    config["activation_fn"] = "gelu";
    try {
        model::transformer_temporal_options(config);
        QFAIL("expected loopy::Error");
    } catch (const Error& e) {
        QVERIFY2(QString(e.what()).contains("activation_fn"), e.what());
    }
}

QTEST_APPLESS_MAIN(TemporalParity)
#include "test_temporal_parity.moc"
