// Stable Diffusion's denoiser against diffusers 0.25 UNet2DConditionModel.
#include <QtTest>

#include "model/golden.h"
#include "model/unet2d_condition.h"

using namespace loopy;

class UNetParity : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void matches_golden();
    void hooks_see_every_layer();
    void odd_sizes_keep_shape();
};

namespace {

model::UNet2DConditionModel golden_unet(const test::Golden& golden) {
    model::UNet2DConditionModel unet(model::UNet2DConditionConfig::parse(golden.config));
    load_state_dict(*unet, golden.weights(), {}, "unet2d_condition golden");
    unet->eval();
    return unet;
}

}  // namespace

void UNetParity::matches_golden() {
    auto golden = test::load_golden("unet2d_condition.safetensors");
    torch::NoGradGuard no_grad;
    auto unet = golden_unet(golden);
    auto out = unet->forward(golden.at("in.sample"), golden.at("in.timestep"),
                             golden.at("in.encoder_hidden_states"));
    const double err = test::relative_error(out, golden.at("out.sample"));
    qInfo("unet2d_condition relative error: %.3g", err);
    QVERIFY2(err <= test::kParityTolerance, qPrintable(QString::number(err)));
}

// An identity hook changes nothing and is called once per down/up layer and mid attention.
void UNetParity::hooks_see_every_layer() {
    auto golden = test::load_golden("unet2d_condition.safetensors");
    torch::NoGradGuard no_grad;
    auto unet = golden_unet(golden);
    int calls = 0;
    auto hook = [&](const model::UNetLayerSite&, const torch::Tensor& h) {
        ++calls;
        return h;
    };
    auto out = unet->forward(golden.at("in.sample"), golden.at("in.timestep"),
                             golden.at("in.encoder_hidden_states"), hook);
    QCOMPARE(calls, 2 * 1 + 1 + 2 * 2);  // layers_per_block 1: down 1+1, mid 1, up 2+2
    QVERIFY(test::relative_error(out, golden.at("out.sample")) <= test::kParityTolerance);
}

// 9x7 is not a multiple of the total downscale (2): the upsampler must match the skip sizes.
void UNetParity::odd_sizes_keep_shape() {
    auto golden = test::load_golden("unet2d_condition.safetensors");
    torch::NoGradGuard no_grad;
    auto unet = golden_unet(golden);
    auto sample = torch::randn({1, 4, 9, 7});
    auto out = unet->forward(sample, torch::tensor(500),
                             golden.at("in.encoder_hidden_states")[0].unsqueeze(0));
    QCOMPARE(out.sizes().vec(), sample.sizes().vec());
}

QTEST_APPLESS_MAIN(UNetParity)
#include "test_unet_parity.moc"
