// AutoencoderKL: architecture size, diffusers folder loading (fp32 / fp16 / legacy names) and
// the errors a wrong folder or checkpoint gives.
#include <torch/torch.h>
#include <QtTest>

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/error.h"
#include "model/autoencoder_kl.h"
#include "model/golden.h"
#include "test_util.h"

namespace fs = std::filesystem;
using loopy::model::AutoencoderKL;
using loopy::model::AutoencoderKLConfig;

using loopy::test::contains;
using loopy::test::error_of;

namespace {

void write_text(const fs::path& path, const std::string& text) {
    std::ofstream(path) << text;
}

}  // namespace

class VaeLoadingTest : public QObject {
    Q_OBJECT
  private:
    loopy::test::Golden golden_;
    QTemporaryDir tmp_;

    // A diffusers-style folder holding `config` and `weights` under `file`.
    std::string make_folder(const std::string& name, const nlohmann::json& config,
                            const loopy::TensorMap& weights,
                            const std::string& file = "diffusion_pytorch_model.safetensors") {
        const fs::path dir = fs::path(tmp_.path().toStdString()) / name;
        fs::create_directories(dir);
        write_text(dir / "config.json", config.dump(2));
        loopy::save_safetensors((dir / file).string(), weights);
        return dir.string();
    }

    nlohmann::json folder_config() const {
        auto c = golden_.config;
        c["_class_name"] = "AutoencoderKL";
        c["_diffusers_version"] = "0.25.0";
        return c;
    }

    // Relative errors of the encoder mean and the decoder against the golden outputs.
    std::pair<double, double> errors(AutoencoderKL& vae) {
        torch::NoGradGuard no_grad;
        const auto mean = vae->encode(golden_.at("in.image")).mean;
        const auto decoded = vae->decode(golden_.at("in.latent"));
        return {loopy::test::relative_error(mean, golden_.at("out.latent_mean")),
                loopy::test::relative_error(decoded, golden_.at("out.decoded"))};
    }

  private Q_SLOTS:
    void initTestCase() {
        QVERIFY(tmp_.isValid());
        golden_ = loopy::test::load_golden("autoencoder_kl.safetensors");
    }

    void stableDiffusionParameterCount() {
        const auto cfg = AutoencoderKLConfig::from_json(nlohmann::json::parse(R"({
            "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D",
                                 "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                               "UpDecoderBlock2D"],
            "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
            "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "sample_size": 512
        })"));
        QCOMPARE(cfg.scaling_factor, 0.18215);
        AutoencoderKL vae(cfg);
        int64_t count = 0;
        for (const auto& p : vae->parameters())
            count += p.numel();
        qInfo("SD VAE parameters: %lld", static_cast<long long>(count));
        QCOMPARE(count, int64_t{83653863});
        QCOMPARE(vae->downscale_factor(), int64_t{8});

        AutoencoderKL preset(AutoencoderKLConfig::stable_diffusion());
        QCOMPARE(loopy::state_dict(*preset).size(), loopy::state_dict(*vae).size());
    }

    void loadsFloat32Folder() {
        const auto dir = make_folder("fp32", folder_config(), golden_.weights());
        auto vae = loopy::model::load_autoencoder_kl_folder(dir);
        QVERIFY(!vae->is_training());
        const auto [enc, dec] = errors(vae);
        qInfo("fp32 folder: encoder mean %.3g, decoder %.3g", enc, dec);
        QVERIFY(enc <= loopy::test::kParityTolerance);
        QVERIFY(dec <= loopy::test::kParityTolerance);
    }

    void loadsFloat16FolderAsFloat32() {
        loopy::TensorMap half;
        for (const auto& [k, v] : golden_.weights())
            half[k] = v.to(torch::kHalf);
        const auto dir =
            make_folder("fp16", folder_config(), half, "diffusion_pytorch_model.fp16.safetensors");
        auto vae = loopy::model::load_autoencoder_kl_folder(dir);
        for (const auto& p : vae->parameters())
            QCOMPARE(p.scalar_type(), torch::kFloat);
        const auto [enc, dec] = errors(vae);
        qInfo("fp16 folder: encoder mean %.3g, decoder %.3g", enc, dec);
        QVERIFY(enc <= 1e-2);
        QVERIFY(dec <= 1e-2);
    }

    void loadsLegacyAttentionNames() {
        // diffusers < 0.14 names, with the projections stored as 1x1 convolutions.
        const std::map<std::string, std::string> legacy{
            {"to_q", "query"}, {"to_k", "key"}, {"to_v", "value"}, {"to_out.0", "proj_attn"}};
        loopy::TensorMap old;
        for (const auto& [k, v] : golden_.weights()) {
            std::string key = k;
            torch::Tensor t = v;
            for (const auto& [now, before] : legacy) {
                const auto pos = key.find("attentions.0." + now + ".");
                if (pos == std::string::npos) continue;
                key.replace(pos + 13, now.size(), before);
                if (t.dim() == 2) t = t.reshape({t.size(0), t.size(1), 1, 1});
            }
            old[key] = t;
        }
        QVERIFY(old.count("encoder.mid_block.attentions.0.proj_attn.weight"));
        auto vae =
            loopy::model::load_autoencoder_kl_folder(make_folder("legacy", folder_config(), old));
        const auto [enc, dec] = errors(vae);
        QVERIFY(enc <= loopy::test::kParityTolerance);
        QVERIFY(dec <= loopy::test::kParityTolerance);
    }

    void missingTensorIsNamed() {
        auto w = golden_.weights();
        w.erase("decoder.up_blocks.1.resnets.0.conv_shortcut.bias");
        const auto dir = make_folder("missing", folder_config(), w);
        const auto msg = error_of([&] { loopy::model::load_autoencoder_kl_folder(dir); });
        qInfo("%s", msg.c_str());
        QVERIFY(contains(msg, "missing"));
        QVERIFY(contains(msg, "decoder.up_blocks.1.resnets.0.conv_shortcut.bias"));
    }

    void wrongShapeIsNamed() {
        auto w = golden_.weights();
        w["encoder.conv_in.weight"] = torch::zeros({16, 3, 1, 1});
        const auto dir = make_folder("shape", folder_config(), w);
        const auto msg = error_of([&] { loopy::model::load_autoencoder_kl_folder(dir); });
        QVERIFY(contains(msg, "wrong shape"));
        QVERIFY(contains(msg, "encoder.conv_in.weight"));
    }

    void unknownBlockTypeIsNamed() {
        auto config = folder_config();
        config["down_block_types"][1] = "AttnDownEncoderBlock2D";
        const auto dir = make_folder("blocktype", config, golden_.weights());
        const auto msg = error_of([&] { loopy::model::load_autoencoder_kl_folder(dir); });
        QVERIFY(contains(msg, "AttnDownEncoderBlock2D"));
        QVERIFY(contains(msg, "config.json"));

        auto up = folder_config();
        up["up_block_types"][0] = "AttnUpDecoderBlock2D";
        QVERIFY(contains(error_of([&] { AutoencoderKLConfig::from_json(up); }),
                         "AttnUpDecoderBlock2D"));
        auto act = folder_config();
        act["act_fn"] = "gelu";
        QVERIFY(contains(error_of([&] { AutoencoderKLConfig::from_json(act); }), "gelu"));
        auto groups = folder_config();
        groups["norm_num_groups"] = 5;
        QVERIFY(
            contains(error_of([&] { AutoencoderKLConfig::from_json(groups); }), "norm_num_groups"));
        auto type = folder_config();
        type["layers_per_block"] = "two";
        QVERIFY(
            contains(error_of([&] { AutoencoderKLConfig::from_json(type); }), "layers_per_block"));
    }

    void otherArchitectureIsRejected() {
        const auto unet = loopy::test::load_golden("unet2d_condition.safetensors");
        const auto dir = make_folder("unet", folder_config(), unet.weights());
        const auto msg = error_of([&] { loopy::model::load_autoencoder_kl_folder(dir); });
        QVERIFY(contains(msg, "missing"));
        QVERIFY(contains(msg, "unexpected"));
        QVERIFY(contains(msg, "decoder.conv_in.weight"));  // lists are sorted and capped

        auto config = unet.config;
        config["_class_name"] = "UNet2DConditionModel";
        const auto msg2 = error_of([&] { AutoencoderKLConfig::from_json(config); });
        QVERIFY(contains(msg2, "UNet2DConditionModel"));
    }

    void incompleteFolderIsReported() {
        const fs::path dir = fs::path(tmp_.path().toStdString()) / "empty";
        fs::create_directories(dir);
        QVERIFY(contains(error_of([&] { loopy::model::load_autoencoder_kl_folder(dir.string()); }),
                         "config.json"));
        write_text(dir / "config.json", folder_config().dump());
        QVERIFY(contains(error_of([&] { loopy::model::load_autoencoder_kl_folder(dir.string()); }),
                         "diffusion_pytorch_model"));
        write_text(dir / "config.json", "{ not json");
        write_text(dir / "diffusion_pytorch_model.safetensors", "");
        QVERIFY(contains(error_of([&] { loopy::model::load_autoencoder_kl_folder(dir.string()); }),
                         "invalid JSON"));
    }

    void badInputShapesAreReported() {
        AutoencoderKL vae(AutoencoderKLConfig::from_json(golden_.config));
        torch::NoGradGuard no_grad;
        QVERIFY(contains(error_of([&] { vae->encode(torch::zeros({1, 4, 16, 16})); }), "encode"));
        QVERIFY(contains(error_of([&] { vae->decode(torch::zeros({1, 3, 8, 8})); }), "decode"));
    }
};

QTEST_APPLESS_MAIN(VaeLoadingTest)
#include "test_vae_loading.moc"
