// AutoencoderKL against diffusers 0.25.0 on a tiny random-weight model (tests/data/goldens).
#include <torch/torch.h>
#include <QtTest>

#include "model/autoencoder_kl.h"
#include "model/golden.h"

using loopy::model::AutoencoderKL;
using loopy::model::AutoencoderKLConfig;

class VaeParityTest : public QObject {
    Q_OBJECT
  private:
    loopy::test::Golden golden_;
    AutoencoderKL vae_{nullptr};

    void check(const char* what, const torch::Tensor& out, const char* ref_key) {
        const auto& ref = golden_.at(ref_key);
        QCOMPARE(out.sizes().vec(), ref.sizes().vec());
        const double err = loopy::test::relative_error(out, ref);
        qInfo("%s: relative error %.3g", what, err);
        QVERIFY2(err <= loopy::test::kParityTolerance, what);
    }

  private Q_SLOTS:
    void initTestCase() {
        torch::manual_seed(0);
        golden_ = loopy::test::load_golden("autoencoder_kl.safetensors");
        vae_ = AutoencoderKL(AutoencoderKLConfig::from_json(golden_.config));
        const auto report = loopy::load_state_dict(*vae_, golden_.weights());  // strict
        QVERIFY(report.ok());
        QVERIFY(report.loaded > 0);
        vae_->eval();
    }

    void encoderPosterior() {
        torch::NoGradGuard no_grad;
        const auto posterior = vae_->encode(golden_.at("in.image"));
        check("encoder mean", posterior.mean, "out.latent_mean");
        check("encoder logvar", posterior.logvar, "out.latent_logvar");
        QVERIFY(torch::allclose(posterior.std, torch::exp(0.5 * posterior.logvar)));
    }

    void decoder() {
        torch::NoGradGuard no_grad;
        check("decoder", vae_->decode(golden_.at("in.latent")), "out.decoded");
    }

    // Guards against goldens that would pass whatever the attention does.
    void mismatchIsDetected() {
        torch::NoGradGuard no_grad;
        auto bias = vae_->named_parameters()["decoder.mid_block.attentions.0.to_out.0.bias"];
        const auto saved = bias.clone();
        bias.add_(0.05);
        const double err = loopy::test::relative_error(vae_->decode(golden_.at("in.latent")),
                                                       golden_.at("out.decoded"));
        bias.copy_(saved);
        qInfo("decoder with a perturbed attention bias: relative error %.3g", err);
        QVERIFY(err > loopy::test::kParityTolerance);
    }

    void sampleUsesMeanAndStd() {
        torch::NoGradGuard no_grad;
        const auto posterior = vae_->encode(golden_.at("in.image"));
        const auto noise = torch::randn(posterior.mean.sizes());
        QVERIFY(torch::allclose(posterior.sample_with_noise(noise),
                                posterior.mean + posterior.std * noise));
        auto gen_a = at::detail::createCPUGenerator(7);
        auto gen_b = at::detail::createCPUGenerator(7);
        QVERIFY(torch::equal(posterior.sample(gen_a), posterior.sample(gen_b)));
        QCOMPARE(vae_->downscale_factor(), int64_t{2});
    }
};

QTEST_APPLESS_MAIN(VaeParityTest)
#include "test_vae_parity.moc"
