// DDIM against diffusers 0.25 (timesteps and whole sampling loops), plus the closed forms of
// add_noise / velocity and the edges of set_timesteps.
#include <torch/torch.h>
#include <QtTest>

#include <cmath>
#include <functional>
#include <vector>

#include "core/error.h"
#include "model/ddim.h"
#include "model/golden.h"

using loopy::model::DDIMConfig;
using loopy::model::DDIMScheduler;
using loopy::test::relative_error;

namespace {

bool throws(const std::function<void()>& f) {
    try {
        f();
    } catch (const loopy::Error&) {
        return true;
    }
    return false;
}

// Stable Diffusion's alphas_cumprod in float64: prod(1 - beta), beta on a sqrt-linear ramp.
std::vector<double> closed_form_alphas_cumprod() {
    const double s0 = std::sqrt(0.00085), s1 = std::sqrt(0.012);
    std::vector<double> out;
    double prod = 1.0;
    for (int i = 0; i < 1000; ++i) {
        const double s = s0 + (s1 - s0) * i / 999.0;
        prod *= 1.0 - s * s;
        out.push_back(prod);
    }
    return out;
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
    auto c = t.contiguous();
    return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

class DDIMParityTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void matchesDiffusersLoops() {
        const auto golden = loopy::test::load_golden("ddim.safetensors");
        DDIMScheduler scheduler(DDIMConfig::from_json(golden.config));
        for (int n : {25, 8, 4}) {
            const std::string tag = std::to_string(n);
            scheduler.set_timesteps(n);
            QVERIFY2(torch::equal(scheduler.timesteps(), golden.at("out.timesteps." + tag)),
                     ("timesteps for N = " + tag).c_str());
            auto x = golden.at("in.sample." + tag).clone();
            const auto steps = to_vector(scheduler.timesteps());
            for (std::size_t i = 0; i < steps.size(); ++i)
                x = scheduler.step(golden.at("in.eps." + tag + "." + std::to_string(i)), steps[i],
                                   x);
            const double err = relative_error(x, golden.at("out.final." + tag));
            qInfo("N = %d: final sample relative error %.3g", n, err);
            QVERIFY(err <= loopy::test::kParityTolerance);
        }
    }

    void defaultsAreStableDiffusion15() {
        const auto golden = loopy::test::load_golden("ddim.safetensors");
        const auto from_file = DDIMConfig::from_json(golden.config);
        const DDIMConfig defaults;
        QCOMPARE(defaults.beta_schedule, from_file.beta_schedule);
        QCOMPARE(defaults.beta_start, from_file.beta_start);
        QCOMPARE(defaults.beta_end, from_file.beta_end);
        QCOMPARE(defaults.set_alpha_to_one, from_file.set_alpha_to_one);
        QCOMPARE(defaults.steps_offset, from_file.steps_offset);
        QCOMPARE(defaults.clip_sample, from_file.clip_sample);
        QCOMPARE(defaults.timestep_spacing, from_file.timestep_spacing);

        const auto diffusers = DDIMConfig::from_json(nlohmann::json::object());
        QCOMPARE(diffusers.beta_schedule, std::string("linear"));
        QVERIFY(diffusers.set_alpha_to_one && diffusers.clip_sample);
        QVERIFY(throws([] { DDIMConfig::from_json({{"prediction_type", "x0"}}); }));
        QVERIFY(throws([] { DDIMConfig::from_json({{"thresholding", true}}); }));
        QVERIFY(throws([] { DDIMConfig::from_json({{"timestep_spacing", "karras"}}); }));
    }

    void addNoiseAndVelocityMatchClosedForm() {
        DDIMScheduler scheduler;
        const auto abar = closed_form_alphas_cumprod();
        QVERIFY(abar[999] > 0.0046 && abar[999] < 0.0047);  // SD's terminal signal level
        const auto table = scheduler.alphas_cumprod().to(torch::kDouble);
        QVERIFY(relative_error(table, torch::tensor(abar, torch::kDouble)) < 1e-5);

        torch::manual_seed(3);
        const auto x0 = torch::randn({3, 4, 2, 2}), noise = torch::randn({3, 4, 2, 2});
        const auto t = torch::tensor(std::vector<int64_t>{0, 500, 999}, torch::kLong);
        auto expected_noisy = torch::empty({3, 4, 2, 2}, torch::kDouble);
        auto expected_v = torch::empty({3, 4, 2, 2}, torch::kDouble);
        for (int b = 0; b < 3; ++b) {
            const double a = abar[t[b].item<int64_t>()];
            const auto x = x0[b].to(torch::kDouble), n = noise[b].to(torch::kDouble);
            expected_noisy[b] = std::sqrt(a) * x + std::sqrt(1 - a) * n;
            expected_v[b] = std::sqrt(a) * n - std::sqrt(1 - a) * x;
        }
        const double noisy_err = relative_error(scheduler.add_noise(x0, noise, t), expected_noisy);
        const double v_err = relative_error(scheduler.velocity(x0, noise, t), expected_v);
        qInfo("add_noise relative error %.3g, velocity %.3g", noisy_err, v_err);
        QVERIFY(noisy_err < 1e-5 && v_err < 1e-5);
        QVERIFY(
            throws([&] { scheduler.add_noise(x0, noise, torch::tensor({1000}, torch::kLong)); }));
    }

    // With the exact noise (epsilon) or the exact velocity, each step lands on
    // add_noise(x0, noise, previous timestep).
    void exactPredictionsFollowTheForwardProcess() {
        for (const std::string type : {"epsilon", "v_prediction"}) {
            DDIMConfig config;
            config.prediction_type = type;
            DDIMScheduler scheduler(config);
            scheduler.set_timesteps(10);
            torch::manual_seed(5);
            const auto x0 = torch::randn({1, 4, 8, 8}), noise = torch::randn({1, 4, 8, 8});
            const double a0 = scheduler.alphas_cumprod()[0].item<double>();
            double worst = 0;
            for (int64_t t : to_vector(scheduler.timesteps())) {
                const auto tt = torch::tensor({t}, torch::kLong);
                const auto xt = scheduler.add_noise(x0, noise, tt);
                const auto pred = type == "epsilon" ? noise : scheduler.velocity(x0, noise, tt);
                const int64_t prev = t - 100;
                const auto expected =
                    prev >= 0 ? scheduler.add_noise(x0, noise, torch::tensor({prev}, torch::kLong))
                              : std::sqrt(a0) * x0 + std::sqrt(1 - a0) * noise;
                worst = std::max(worst, relative_error(scheduler.step(pred, t, xt), expected));
            }
            qInfo("%s: worst step relative error %.3g", type.c_str(), worst);
            QVERIFY(worst < 1e-5);
        }
    }

    void vPredictionRecoversX0InOneStep() {
        DDIMConfig config;
        config.prediction_type = "v_prediction";
        config.timestep_spacing = "trailing";
        config.set_alpha_to_one = true;
        DDIMScheduler scheduler(config);
        scheduler.set_timesteps(1);
        QCOMPARE(to_vector(scheduler.timesteps()), (std::vector<int64_t>{999}));
        torch::manual_seed(7);
        const auto x0 = torch::randn({2, 4, 8, 8}), noise = torch::randn({2, 4, 8, 8});
        const auto t = torch::tensor({999}, torch::kLong);
        const auto xt = scheduler.add_noise(x0, noise, t);
        const auto out = scheduler.step_full(scheduler.velocity(x0, noise, t), 999, xt);
        const double err = relative_error(out.prev_sample, x0);
        qInfo("v-prediction one-step x0 relative error %.3g", err);
        QVERIFY(err < 1e-5);
        QVERIFY(relative_error(out.pred_original_sample, x0) < 1e-5);
    }

    void etaAddsTheDDIMVariance() {
        DDIMConfig config;
        config.eta = 1.0;
        DDIMScheduler scheduler(config);
        scheduler.set_timesteps(10);
        torch::manual_seed(11);
        const auto x = torch::randn({1, 4, 4, 4}), eps = torch::randn({1, 4, 4, 4});
        const auto z = torch::randn({1, 4, 4, 4});
        const auto without = scheduler.step_full(eps, 501, x, torch::zeros_like(z)).prev_sample;
        const auto with = scheduler.step_full(eps, 501, x, z).prev_sample;
        const auto abar = closed_form_alphas_cumprod();
        const double a = abar[501], ap = abar[401];
        const double sigma = std::sqrt((1 - ap) / (1 - a) * (1 - a / ap));
        QVERIFY(relative_error(with - without, sigma * z) < 1e-4);
    }

    void setTimestepsEdges() {
        DDIMScheduler scheduler;
        QVERIFY(throws([&] { scheduler.step(torch::zeros({1}), 1, torch::zeros({1})); }));
        QVERIFY(throws([&] { scheduler.set_timesteps(0); }));
        QVERIFY(throws([&] { scheduler.set_timesteps(-2); }));
        QVERIFY(throws([&] { scheduler.set_timesteps(1001); }));
        scheduler.set_timesteps(1);
        QCOMPARE(to_vector(scheduler.timesteps()), (std::vector<int64_t>{1}));
        QVERIFY(scheduler.step(torch::zeros({1, 4}), 1, torch::ones({1, 4}))
                    .isfinite()
                    .all()
                    .item<bool>());

        // Leading spacing with steps_offset 1 reaches t = 1000, past the table, as in diffusers
        // (which fails with an IndexError there); we throw a loopy::Error instead.
        scheduler.set_timesteps(1000);
        const auto all = to_vector(scheduler.timesteps());
        QCOMPARE(all.size(), std::size_t(1000));
        QCOMPARE(all.front(), int64_t(1000));
        QCOMPARE(all.back(), int64_t(1));
        QVERIFY(throws([&] { scheduler.step(torch::zeros({4}), 1000, torch::zeros({4})); }));

        DDIMConfig no_offset;
        no_offset.steps_offset = 0;
        DDIMScheduler full(no_offset);
        full.set_timesteps(1000);
        auto x = torch::randn({1, 4, 2, 2});
        for (int64_t t : to_vector(full.timesteps()))
            x = full.step(torch::randn_like(x) * 0.1, t, x);
        QVERIFY(x.isfinite().all().item<bool>());

        DDIMConfig trailing;
        trailing.timestep_spacing = "trailing";
        DDIMScheduler tr(trailing);
        tr.set_timesteps(4);
        QCOMPARE(to_vector(tr.timesteps()), (std::vector<int64_t>{999, 749, 499, 249}));
        tr.set_timesteps(61);  // numpy's arange would give 62 values here, the last one -1
        const auto t61 = to_vector(tr.timesteps());
        QCOMPARE(t61.size(), std::size_t(61));
        QCOMPARE(t61.front(), int64_t(999));
        QVERIFY(t61.back() >= 0);

        DDIMConfig linspace;
        linspace.timestep_spacing = "linspace";
        DDIMScheduler ls(linspace);
        ls.set_timesteps(4);
        QCOMPARE(to_vector(ls.timesteps()), (std::vector<int64_t>{999, 666, 333, 0}));
        ls.set_timesteps(1);
        QCOMPARE(to_vector(ls.timesteps()), (std::vector<int64_t>{0}));
    }
};

QTEST_APPLESS_MAIN(DDIMParityTest)
#include "test_ddim_parity.moc"
