// Building the U-Net from diffusers configs and loading diffusers model folders.
#include <QtTest>

#include <fstream>

#include "core/error.h"
#include "model/golden.h"
#include "model/unet2d_condition.h"

using namespace loopy;

namespace {

// runwayml/stable-diffusion-v1-5 unet/config.json
const char* kSd15Config = R"({
  "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0", "act_fn": "silu",
  "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false, "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                       "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
})";

// A diffusers model folder holding `config` and `weights` (as `file_name`).
void write_folder(const QString& dir, const nlohmann::json& config, const TensorMap& weights,
                  const std::string& file_name = "diffusion_pytorch_model.safetensors") {
    std::ofstream(QDir(dir).filePath("config.json").toStdString()) << config.dump(2);
    save_safetensors(QDir(dir).filePath(QString::fromStdString(file_name)).toStdString(), weights);
}

std::string load_error(const QString& dir) {
    try {
        model::load_unet2d_condition_folder(dir.toStdString());
    } catch (const Error& e) {
        qInfo("expected error: %s", e.what());
        return e.what();
    }
    return {};
}

double golden_error(model::UNet2DConditionModel& unet, const test::Golden& golden) {
    torch::NoGradGuard no_grad;
    auto out = unet->forward(golden.at("in.sample"), golden.at("in.timestep"),
                             golden.at("in.encoder_hidden_states"));
    return test::relative_error(out, golden.at("out.sample"));
}

}  // namespace

class UNetLoading : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void sd15_parameter_count();
    void loads_folder();
    void loads_fp16_variant();
    void missing_tensor();
    void wrong_shape();
    void unknown_block_type();
    void unsupported_config_keys();
    void other_architecture();
};

void UNetLoading::sd15_parameter_count() {
    auto config = model::UNet2DConditionConfig::parse(nlohmann::json::parse(kSd15Config));
    QCOMPARE(config.num_attention_heads, (std::vector<int64_t>{8, 8, 8, 8}));
    int64_t count = 0;
    {
        torch::NoGradGuard no_grad;
        model::UNet2DConditionModel unet(config);  // ~3.4 GB of float32, freed at scope end
        for (const auto& p : unet->parameters())
            count += p.numel();
        auto keys = state_dict(*unet);
        QVERIFY(
            keys.count("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight"));
        QVERIFY(keys.count("mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"));
        QVERIFY(keys.count("up_blocks.3.attentions.2.proj_out.weight"));
        QCOMPARE(keys.size(), size_t{686});
    }
    qInfo("SD 1.5 U-Net parameters: %lld", static_cast<long long>(count));
    QCOMPARE(count, int64_t{859520964});
}

void UNetLoading::loads_folder() {
    auto golden = test::load_golden("unet2d_condition.safetensors");
    QTemporaryDir dir;
    write_folder(dir.path(), golden.config, golden.weights());
    auto unet = model::load_unet2d_condition_folder(dir.path().toStdString());
    const double err = golden_error(unet, golden);
    qInfo("unet folder (float32) relative error: %.3g", err);
    QVERIFY(err <= test::kParityTolerance);
}

void UNetLoading::loads_fp16_variant() {
    auto golden = test::load_golden("unet2d_condition.safetensors");
    TensorMap half;
    for (const auto& [key, t] : golden.weights())
        half[key] = t.to(torch::kHalf);
    QTemporaryDir dir;
    write_folder(dir.path(), golden.config, half, "diffusion_pytorch_model.fp16.safetensors");
    auto unet = model::load_unet2d_condition_folder(dir.path().toStdString());
    QCOMPARE(unet->parameters().front().scalar_type(), torch::kFloat32);
    const double err = golden_error(unet, golden);
    qInfo("unet folder (fp16 weights) relative error: %.3g", err);
    QVERIFY(err <= 1e-2);
}

void UNetLoading::missing_tensor() {
    auto golden = test::load_golden("unet2d_condition.safetensors");
    auto weights = golden.weights();
    weights.erase("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    QTemporaryDir dir;
    write_folder(dir.path(), golden.config, weights);
    const auto error = load_error(dir.path());
    QVERIFY2(error.find("mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight") !=
                 std::string::npos,
             error.c_str());
}

void UNetLoading::wrong_shape() {
    auto golden = test::load_golden("unet2d_condition.safetensors");
    auto weights = golden.weights();
    weights["conv_out.weight"] = torch::zeros({4, 32, 1, 1});
    QTemporaryDir dir;
    write_folder(dir.path(), golden.config, weights);
    const auto error = load_error(dir.path());
    QVERIFY2(error.find("conv_out.weight") != std::string::npos, error.c_str());
}

void UNetLoading::unknown_block_type() {
    auto golden = test::load_golden("unet2d_condition.safetensors");
    auto config = golden.config;
    config["down_block_types"][1] = "AttnDownBlock2D";
    QTemporaryDir dir;
    write_folder(dir.path(), config, golden.weights());
    const auto error = load_error(dir.path());
    QVERIFY2(error.find("down_block_types") != std::string::npos &&
                 error.find("AttnDownBlock2D") != std::string::npos,
             error.c_str());
}

void UNetLoading::unsupported_config_keys() {
    auto config = test::load_golden("unet2d_condition.safetensors").config;
    for (const auto& [key, value] :
         std::vector<std::pair<std::string, nlohmann::json>>{{"class_embed_type", "timestep"},
                                                             {"mid_block_type", "UNetMidBlock2D"},
                                                             {"_class_name", "AutoencoderKL"},
                                                             {"layers_per_block", {1, 2}}}) {
        auto c = config;
        c[key] = value;
        try {
            model::UNet2DConditionConfig::parse(c);
            QFAIL(("accepted " + key).c_str());
        } catch (const Error& e) {
            QVERIFY2(std::string(e.what()).find(key) != std::string::npos, e.what());
        }
    }
}

void UNetLoading::other_architecture() {
    auto unet_golden = test::load_golden("unet2d_condition.safetensors");
    auto vae_golden = test::load_golden("autoencoder_kl.safetensors");
    QTemporaryDir dir;
    write_folder(dir.path(), unet_golden.config, vae_golden.weights());
    const auto error = load_error(dir.path());
    QVERIFY2(error.find("not a UNet2DConditionModel checkpoint") != std::string::npos,
             error.c_str());
}

QTEST_APPLESS_MAIN(UNetLoading)
#include "test_unet_loading.moc"
