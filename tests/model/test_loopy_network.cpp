// The Loopy network on the `tiny` config with random weights: config schema, bank shapes, the
// new layers starting as the identity, and what every condition and drop flag does.
#include <QtTest>

#include <algorithm>
#include <array>
#include <chrono>
#include <fstream>

#include "core/error.h"
#include "model/attention.h"
#include "model/golden.h"
#include "model/loopy_model.h"
#include "model/motion_features.h"
#include "operator_calls.h"

using namespace loopy;
using model::DenoiseInputs;

namespace {

struct Fixture {
    model::LoopyConfig config = model::LoopyConfig::preset("tiny");
    model::ReferenceNet reference{nullptr};
    model::LoopyDenoisingUNet denoiser{nullptr};
    Fixture() {
        torch::manual_seed(0);
        reference = model::ReferenceNet(config);
        denoiser = model::LoopyDenoisingUNet(config);
        reference->eval();
        denoiser->eval();
    }
};

// Moves every parameter off its initial value (zero-initialised layers included) so that the
// tests below see layers that actually compute something.
void randomise(torch::nn::Module& module, double scale = 0.05) {
    torch::NoGradGuard no_grad;
    for (auto& p : module.parameters())
        p.add_(torch::randn_like(p) * scale);
}

int64_t count_parameters(const torch::nn::Module& module) {
    int64_t n = 0;
    for (const auto& p : module.parameters())
        n += p.numel();
    return n;
}

std::vector<std::vector<int64_t>> shapes_of(const std::vector<torch::Tensor>& tensors) {
    std::vector<std::vector<int64_t>> out;
    for (const auto& t : tensors)
        out.push_back(t.sizes().vec());
    return out;
}

torch::Tensor run(model::LoopyDenoisingUNet& net, DenoiseInputs in) {
    torch::NoGradGuard no_grad;
    return net->forward(in);
}

// Runs `load` and checks that it throws a loopy::Error whose message names `needle`.
template <typename Load>
void expect_config_error(Load&& load, const std::string& needle) {
    try {
        load();
    } catch (const Error& e) {
        QVERIFY2(std::string(e.what()).find(needle) != std::string::npos, e.what());
        return;
    }
    QFAIL(("accepted a config with a bad " + needle).c_str());
}

}  // namespace

class LoopyNetwork : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void config_round_trip();
    void config_rejects_mistakes();
    void config_from_a_file();
    void tiny_sizes();
    void spatial_positions_locate_tokens();
    void reference_latent_input();
    void bank_shapes_match_real_forward();
    void fresh_layers_are_identity();
    void conditions_change_the_output();
    void drop_flags_equal_missing_conditions();
    void per_item_drops_in_one_batch();
    void prepared_motion_equals_computed_motion();
    void motion_feature_cache_equals_encode_motion();
    void motion_batch_padding_keeps_the_features();
    void audio_to_latents_conditions();
    void audio_helpers();
    void full_model_end_to_end();
};

void LoopyNetwork::config_round_trip() {
    for (const auto& name : model::LoopyConfig::preset_names()) {
        const auto config = model::LoopyConfig::preset(name);
        const auto json = config.to_json();
        QCOMPARE(model::LoopyConfig::from_json(json).to_json(), json);
        QCOMPARE(QString::fromStdString(json["name"].get<std::string>()),
                 QString::fromStdString(name));
    }
    auto sd15 = model::LoopyConfig::preset("sd15");
    QCOMPARE(sd15.latent_size(), int64_t{64});
    QCOMPARE(sd15.time_embed_dim(), int64_t{1280});
    QCOMPARE(sd15.audio_layers(), int64_t{12});
    QCOMPARE(sd15.motion_frames(), int64_t{20});
    QCOMPARE(sd15.history_frames(), int64_t{124});
    QCOMPARE(sd15.audio_projection.context_tokens * sd15.audio_projection.token_dim,
             int64_t{32 * 768});
}

void LoopyNetwork::config_rejects_mistakes() {
    const auto good = model::LoopyConfig::preset("tiny").to_json();
    auto expect_error = [](const nlohmann::json& j, const std::string& needle) {
        expect_config_error([&] { model::LoopyConfig::from_json(j); }, needle);
    };
    auto j = good;
    j["temporal"]["num_heads"] = 4;  // typo
    expect_error(j, "temporal.num_heads");
    j = good;
    j["num_frames"] = "12";
    expect_error(j, "num_frames");
    j = good;
    j.erase("unet");
    expect_error(j, "unet");
    j = good;
    j["temporal"]["num_attention_heads"] = 5;  // 16 channels do not split into 5 heads
    expect_error(j, "temporal.num_attention_heads");
    j = good;
    j["temporal_segment"]["sampling"] = "median";
    expect_error(j, "median");
    j = good;
    j["unet"]["block_out_channels"] = {16, 32};  // fewer widths than block types
    expect_error(j, "unet");
    j = good;
    j["num_frames"] = 40;  // more than the temporal positions
    expect_error(j, "num_frames");
    j = good;
    j["spatial_positions"] = "yes";
    expect_error(j, "spatial_positions");
    j = good;
    j["unet"]["block_out_channels"] = {18, 36, 36};  // positions need multiples of 4
    j["unet"]["norm_num_groups"] = 2;
    j["temporal"]["num_attention_heads"] = 2;
    expect_error(j, "spatial_positions");
    QVERIFY_EXCEPTION_THROWN(model::LoopyConfig::preset("sdxl"), Error);
}

// `--config` takes a preset's name or a config file: what a trainer of another network size writes.
void LoopyNetwork::config_from_a_file() {
    QCOMPARE(model::LoopyConfig::preset_or_file("tiny").to_json(),
             model::LoopyConfig::preset("tiny").to_json());
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const auto path = dir.filePath("wide.json").toStdString();
    auto wide = model::LoopyConfig::preset("tiny").to_json();
    wide["unet"]["block_out_channels"] = {32, 64, 64};
    std::ofstream(path) << wide.dump(1);
    const auto read = model::LoopyConfig::preset_or_file(path);
    QCOMPARE(read.unet_config().block_out_channels, (std::vector<int64_t>{32, 64, 64}));
    QCOMPARE(read.to_json(), wide);
    auto expect_error = [](const std::string& name_or_path, const std::string& needle) {
        expect_config_error([&] { model::LoopyConfig::preset_or_file(name_or_path); }, needle);
    };
    expect_error("sdxl", "neither a Loopy configuration");
    expect_error(dir.path().toStdString(), "neither a Loopy configuration");  // a folder
    std::ofstream(path) << "{\"unet\": ";
    expect_error(path, "not JSON");
    wide["temporal"]["num_heads"] = 2;  // a typo in the file: named, not ignored
    std::ofstream(path) << wide.dump();
    expect_error(path, "temporal.num_heads");
}

// Attention alone cannot tell where a token is: rolling the image rolls the output. With the
// positions it can (what the reference attention needs to copy the portrait place by place).
void LoopyNetwork::spatial_positions_locate_tokens() {
    QVERIFY(model::LoopyConfig::preset("tiny").spatial_positions);
    QVERIFY(!model::LoopyConfig::preset("sd15").spatial_positions);
    auto old = model::LoopyConfig::preset("tiny").to_json();
    old.erase("spatial_positions");  // checkpoints written before the option
    QVERIFY(!model::LoopyConfig::from_json(old).spatial_positions);
    QVERIFY(model::LoopyConfig::preset("tiny").unet_config().spatial_positions);

    const auto table = model::spatial_positions(4, 5, 8, torch::kFloat32);
    QCOMPARE(table.sizes().vec(), (std::vector<int64_t>{1, 20, 8}));
    const auto distances = torch::cdist(table[0], table[0]);
    const auto off_diagonal = distances + torch::eye(20) * 1e9;
    QVERIFY2(off_diagonal.min().item<double>() > 0.1, "two places share a position code");
    QVERIFY_EXCEPTION_THROWN(model::spatial_positions(4, 4, 6, torch::kFloat32), Error);

    torch::NoGradGuard no_grad;
    for (bool positions : {false, true}) {
        torch::manual_seed(1);
        model::Transformer2DModel block(model::Transformer2DModelOptions(16, 2, 8)
                                            .cross_attention_dim(8)
                                            .norm_num_groups(4)
                                            .spatial_positions(positions));
        block->eval();
        const auto x = torch::randn({1, 16, 6, 6});
        const auto context = torch::randn({1, 3, 8});
        const auto rolled_output = block(x, context).roll({2, 1}, {2, 3});
        const auto output_of_rolled = block(x.roll({2, 1}, {2, 3}), context);
        const double error = (rolled_output - output_of_rolled).abs().max().item<double>();
        qInfo("spatial_positions %d: |roll(f(x)) - f(roll(x))| = %.3g", positions, error);
        if (positions)
            QVERIFY2(error > 1e-3, "the positions change nothing");
        else
            QVERIFY2(error < 1e-5, "plain attention should not know where a token is");
    }
}

// The tiny config also feeds the reference latent to the denoising U-Net's conv_in; the
// ReferenceNet and SD configs keep 4 input channels; old checkpoints' configs load without it.
void LoopyNetwork::reference_latent_input() {
    QVERIFY(model::LoopyConfig::preset("tiny").reference_latent_input);
    QVERIFY(!model::LoopyConfig::preset("sd15").reference_latent_input);
    auto old = model::LoopyConfig::preset("tiny").to_json();
    old.erase("reference_latent_input");
    QVERIFY(!model::LoopyConfig::from_json(old).reference_latent_input);
    auto bad = model::LoopyConfig::preset("tiny").to_json();
    bad["reference_latent_input"] = 1;
    QVERIFY_EXCEPTION_THROWN(model::LoopyConfig::from_json(bad), Error);

    Fixture f;
    QCOMPARE(f.denoiser->conv_in->weight.size(1), int64_t{8});
    QCOMPARE(f.reference->conv_in->weight.size(1), int64_t{4});
    randomise(*f.reference);
    randomise(*f.denoiser);
    torch::NoGradGuard no_grad;
    DenoiseInputs in;
    in.latents = torch::randn({2, 3, 4, 16, 16});
    in.timestep = torch::tensor({500});
    in.reference = f.reference->encode_reference(torch::randn({1, 4, 16, 16}));
    const auto with_latent = run(f.denoiser, in);
    // Same attention bank, another latent: only the input channels see the difference.
    auto other = in;
    other.reference.latent = torch::randn({1, 4, 16, 16});
    const double d = test::relative_error(run(f.denoiser, other), with_latent);
    qInfo("another reference latent under the same bank changes the output by %.3g", d);
    QVERIFY2(d > 1e-3, "the reference latent input changes nothing");
    // Dropping item 1's reference zeroes only item 1's latent input (and its attention).
    auto dropped = in;
    dropped.drop.reference = torch::tensor({false, true});
    const auto out = run(f.denoiser, dropped);
    QVERIFY(test::relative_error(out[0], with_latent[0]) < 1e-6);
    auto none = in;
    none.reference = {};
    QVERIFY(test::relative_error(out[1], run(f.denoiser, none)[1]) < 1e-5);
    // A bank without its latent, or one of another size, is refused by name.
    auto missing = in;
    missing.reference.latent = torch::Tensor();
    QVERIFY_EXCEPTION_THROWN(run(f.denoiser, missing), Error);
    missing.reference.latent = torch::randn({1, 4, 8, 8});
    QVERIFY_EXCEPTION_THROWN(run(f.denoiser, missing), Error);
}

void LoopyNetwork::tiny_sizes() {
    Fixture f;
    QCOMPARE(f.config.latent_size(), int64_t{16});
    QCOMPARE(f.config.resolution, int64_t{128});
    torch::manual_seed(0);
    model::LoopyModel m(f.config);
    const int64_t total = count_parameters(*m);
    qInfo(
        "tiny parameters: total %lld = vae %lld + reference_unet %lld + denoising_unet %lld + "
        "audio_encoder %lld + audio_proj %lld + audio_to_latents %lld",
        (long long)total, (long long)count_parameters(*m->vae),
        (long long)count_parameters(*m->reference_unet),
        (long long)count_parameters(*m->denoising_unet),
        (long long)count_parameters(*m->audio_encoder), (long long)count_parameters(*m->audio_proj),
        (long long)count_parameters(*m->audio_to_latents));
    QVERIFY(total < 5'000'000);  // "really small": trains and runs on two CPU cores
    const auto keys = state_dict(*m);
    for (const char* key :
         {"vae.encoder.conv_in.weight", "reference_unet.null_context",
          "reference_unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
          "denoising_unet.down_blocks.0.inter_clip_temporal.0.type_embedding",
          "denoising_unet.mid_block.audio_attentions.0.attn.to_k.weight",
          "denoising_unet.up_blocks.2.motion_modules.1.proj_out.weight",
          "audio_encoder.encoder.layers.1.attention.q_proj.weight", "audio_proj.proj3.weight",
          "audio_to_latents.embeddings"})
        QVERIFY2(keys.count(key), key);
    // No Loopy layers in the ReferenceNet, which only needs the spatial U-Net.
    for (const auto& [key, t] : keys)
        QVERIFY2(key.rfind("reference_unet.", 0) != 0 || key.find("temporal") == std::string::npos,
                 key.c_str());
}

void LoopyNetwork::bank_shapes_match_real_forward() {
    Fixture f;
    torch::NoGradGuard no_grad;
    const auto& unet = f.reference->config;
    for (auto [h, w] : {std::pair<int64_t, int64_t>{16, 16}, {9, 7}}) {
        auto ref = f.reference->encode_reference(torch::randn({2, 4, h, w}));
        auto mask = torch::tensor({true, false, true, false, false, true}).view({2, 3});
        auto motion = f.reference->encode_motion(torch::randn({2, 3, 4, h, w}), mask);
        const auto expected = model::bank_shapes(unet, 2, 3, h, w);
        QCOMPARE(shapes_of(ref.layers), expected.reference);
        QCOMPARE(shapes_of(motion.sites), expected.motion);
        QCOMPARE(ref.layers.size(), model::unet_attention_layers(unet).size());
        QCOMPARE(motion.sites.size(), model::unet_layer_sites(unet).size());
        // Frames that do not exist are not run: their features are zero.
        QCOMPARE(motion.sites[0][0][1].abs().sum().item<float>(), 0.0f);
        QVERIFY(motion.sites[0][0][0].abs().sum().item<float>() > 0);
    }
    QCOMPARE(model::unet_layer_sites(unet).size(), size_t{1 + 1 + 1 + 1 + 2 + 2 + 2});
}

// Fresh Loopy layers (zero output projections) leave the SD U-Net's output unchanged, whatever
// motion frames, audio and motion latent they are given.
void LoopyNetwork::fresh_layers_are_identity() {
    Fixture f;
    torch::NoGradGuard no_grad;
    auto x = torch::randn({2, 3, 4, 16, 16});
    auto t = torch::tensor({10, 700});
    DenoiseInputs in;
    in.latents = x;
    in.timestep = t;
    in.motion = f.reference->encode_motion(torch::randn({2, 20, 4, 16, 16}));
    in.audio_tokens = torch::randn({2, 3, 8, 32});
    in.motion_latent = torch::zeros({2, 3, f.config.time_embed_dim()});
    auto out = run(f.denoiser, in);

    auto& plain = static_cast<model::UNet2DConditionModelImpl&>(*f.denoiser);
    auto ctx = f.denoiser->null_context.expand({6, 1, 32});
    // No reference: the tiny config's reference-latent input channels are zero.
    auto input = torch::cat({x.reshape({6, 4, 16, 16}), torch::zeros({6, 4, 16, 16})}, 1);
    auto ref = plain.forward(input, t.repeat_interleave(3), ctx);
    const double err = test::relative_error(out.reshape({6, 4, 16, 16}), ref);
    qInfo("fresh Loopy layers vs plain U-Net: relative error %.3g", err);
    QVERIFY2(err <= 1e-6, qPrintable(QString::number(err)));
}

void LoopyNetwork::conditions_change_the_output() {
    Fixture f;
    randomise(*f.reference);
    randomise(*f.denoiser);
    torch::NoGradGuard no_grad;
    DenoiseInputs base;
    base.latents = torch::randn({1, 4, 4, 16, 16});
    base.timestep = torch::tensor({500});
    const auto plain = run(f.denoiser, base);
    auto differs = [&](const DenoiseInputs& in, const char* what) {
        const double d = test::relative_error(run(f.denoiser, in), plain);
        qInfo("%s changes the output by %.3g (relative)", what, d);
        QVERIFY2(d > 1e-3, what);
    };
    auto in = base;
    in.reference = f.reference->encode_reference(torch::randn({1, 4, 16, 16}));
    differs(in, "reference attention");
    in = base;
    in.motion = f.reference->encode_motion(torch::randn({1, 20, 4, 16, 16}));
    differs(in, "motion frames");
    in = base;
    in.audio_tokens = torch::randn({1, 4, 8, 32});
    differs(in, "audio tokens");
    in = base;
    in.motion_latent = torch::randn({1, 4, f.config.time_embed_dim()});
    differs(in, "motion latent");

    // A masked motion frame's content does not matter; a present one's does.
    auto frames = torch::randn({1, 20, 4, 16, 16});
    auto mask = torch::ones({1, 20}, torch::kBool);
    mask[0][3] = false;
    in = base;
    in.motion = f.reference->encode_motion(frames, mask);
    const auto with_motion = run(f.denoiser, in);
    auto changed = frames.clone();
    changed[0][3].normal_();
    in.motion = f.reference->encode_motion(changed, mask);
    QVERIFY(test::relative_error(run(f.denoiser, in), with_motion) < 1e-6);
    changed[0][4].normal_();
    in.motion = f.reference->encode_motion(changed, mask);
    QVERIFY(test::relative_error(run(f.denoiser, in), with_motion) > 1e-4);

    // The inter-clip attention itself ignores masked frames, whatever features they hold.
    auto bank = f.reference->encode_motion(frames);
    bank.mask = mask;
    in.motion = bank;
    const auto masked = run(f.denoiser, in);
    for (auto& site : bank.sites)
        site.select(1, 3).normal_();
    in.motion = bank;
    const double err = test::relative_error(run(f.denoiser, in), masked);
    QVERIFY2(err < 1e-6, qPrintable(QString::number(err)));
}

void LoopyNetwork::drop_flags_equal_missing_conditions() {
    Fixture f;
    randomise(*f.reference);
    randomise(*f.denoiser);
    torch::NoGradGuard no_grad;
    DenoiseInputs bare;
    bare.latents = torch::randn({1, 3, 4, 16, 16});
    bare.timestep = torch::tensor({250});
    auto full = bare;
    full.reference = f.reference->encode_reference(torch::randn({1, 4, 16, 16}));
    full.motion = f.reference->encode_motion(torch::randn({1, 20, 4, 16, 16}));
    full.audio_tokens = torch::randn({1, 3, 8, 32});
    full.motion_latent = torch::randn({1, 3, f.config.time_embed_dim()});
    auto yes = torch::tensor({true});

    auto check = [&](DenoiseInputs dropped, DenoiseInputs missing, const char* what) {
        const double err = test::relative_error(run(f.denoiser, dropped), run(f.denoiser, missing));
        qInfo("%s: dropped vs missing, relative error %.3g", what, err);
        QVERIFY2(err <= 1e-5, what);
    };
    auto dropped = full;
    dropped.drop.audio = yes;
    auto missing = full;
    missing.audio_tokens = torch::Tensor();
    missing.motion_latent = torch::Tensor();
    check(dropped, missing, "audio");
    dropped = full;
    dropped.drop.motion = yes;
    missing = full;
    missing.motion = {};
    check(dropped, missing, "motion");
    dropped = full;
    dropped.drop.reference = yes;  // also drops the motion frames
    missing = full;
    missing.reference = {};
    missing.motion = {};
    check(dropped, missing, "reference");
}

// The three classifier-free-guidance passes (nothing / reference / reference + audio) as one
// batch give what three separate runs give.
void LoopyNetwork::per_item_drops_in_one_batch() {
    Fixture f;
    randomise(*f.reference);
    randomise(*f.denoiser);
    torch::NoGradGuard no_grad;
    auto x = torch::randn({1, 12, 4, 16, 16});
    auto reference = f.reference->encode_reference(torch::randn({1, 4, 16, 16}));
    auto mask = torch::ones({1, 20}, torch::kBool);
    mask.narrow(1, 0, 8).fill_(false);
    auto motion = f.reference->encode_motion(torch::randn({1, 20, 4, 16, 16}), mask);
    auto audio = torch::randn({1, 12, 8, 32});
    auto latent = torch::randn({1, 12, f.config.time_embed_dim()});

    DenoiseInputs batch;
    batch.latents = x.expand({3, 12, 4, 16, 16});
    batch.timestep = torch::tensor({600});
    batch.reference = reference;  // batch 1: shared by all three
    batch.motion = motion;
    batch.audio_tokens = audio;
    batch.motion_latent = latent.expand({3, 12, latent.size(2)});
    batch.drop.reference = torch::tensor({true, false, false});
    batch.drop.audio = torch::tensor({true, true, false});
    const auto start = std::chrono::steady_clock::now();
    auto together = run(f.denoiser, batch);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    qInfo("tiny denoiser, 3 CFG passes x 12 frames in one batch: %.3f s", seconds);

    DenoiseInputs single;
    single.latents = x;
    single.timestep = torch::tensor({600});
    const auto none = run(f.denoiser, single);
    single.reference = reference;
    single.motion = motion;
    const auto ref = run(f.denoiser, single);
    single.audio_tokens = audio;
    single.motion_latent = latent;
    const auto ref_audio = run(f.denoiser, single);
    const double e0 = test::relative_error(together[0], none[0]);
    const double e1 = test::relative_error(together[1], ref[0]);
    const double e2 = test::relative_error(together[2], ref_audio[0]);
    qInfo("batched vs separate: %.3g %.3g %.3g", e0, e1, e2);
    QVERIFY(e0 <= 1e-5 && e1 <= 1e-5 && e2 <= 1e-5);
    QVERIFY(test::relative_error(ref, none) > 1e-3 && test::relative_error(ref_audio, ref) > 1e-3);
}

// prepare_motion (the motion frames' keys and values once per clip) gives what computing them in
// every forward gives: for a bank shared by the batch and for one bank per item, with masked
// frames and the guidance drops. A bank prepared from other frames must show.
void LoopyNetwork::prepared_motion_equals_computed_motion() {
    Fixture f;
    randomise(*f.reference);
    randomise(*f.denoiser);
    torch::NoGradGuard no_grad;
    auto mask = torch::ones({3, 20}, torch::kBool);
    mask.narrow(1, 0, 8).fill_(false);
    mask[1][12] = false;
    DenoiseInputs in;
    in.latents = torch::randn({3, 12, 4, 16, 16});
    in.timestep = torch::tensor({700});
    in.reference = f.reference->encode_reference(torch::randn({1, 4, 16, 16}));
    in.audio_tokens = torch::randn({1, 12, 8, 32});
    in.drop.reference = torch::tensor({true, false, false});
    in.drop.audio = torch::tensor({true, true, false});
    for (const int64_t bank_batch : {1, 3}) {
        const auto frames = torch::randn({bank_batch, 20, 4, 16, 16});
        in.motion = f.reference->encode_motion(frames, mask.narrow(0, 0, bank_batch));
        const auto computed = run(f.denoiser, in);
        auto plain_bank = in.motion;
        in.motion = f.denoiser->prepare_motion(plain_bank);
        QCOMPARE(in.motion.prepared.size(), f.denoiser->sites.size());
        const double err = test::relative_error(run(f.denoiser, in), computed);
        qInfo("motion bank of batch %lld: prepared vs computed, relative error %.3g",
              static_cast<long long>(bank_batch), err);
        QVERIFY2(err <= 1e-5, qPrintable(QString::number(err)));

        auto stale = plain_bank;
        stale.prepared =
            f.denoiser->prepare_motion(f.reference->encode_motion(torch::randn_like(frames)))
                .prepared;
        in.motion = stale;
        QVERIFY(test::relative_error(run(f.denoiser, in), computed) > 1e-4);
    }
}

// encode_motion's batches padded to a multiple (as on a GPU): the same features, and the
// convolutions really see the padded batch.
void LoopyNetwork::motion_batch_padding_keeps_the_features() {
    Fixture f;
    randomise(*f.reference);
    torch::NoGradGuard no_grad;
    const auto latents = torch::randn({1, 20, 4, 16, 16});
    auto mask = torch::zeros({1, 20}, torch::kBool);
    for (int64_t i : {1, 4, 5, 9, 13, 17, 19})
        mask[0][i] = true;
    for (const auto& [m, wanted] :
         {std::pair{mask, std::array<int64_t, 3>{7, 8, 8}},
          std::pair{torch::ones({1, 20}, torch::kBool), std::array<int64_t, 3>{20, 20, 24}}}) {
        std::vector<model::MotionBank> banks;
        const std::array<int64_t, 3> multiples{1, 4, 8};
        for (size_t i = 0; i < multiples.size(); ++i) {
            f.reference->motion_batch_multiple = multiples[i];
            test::OperatorCalls ops(true);
            banks.push_back(f.reference->encode_motion(latents.clone(), m));
            QCOMPARE(ops.widest_first_input("aten::convolution"), wanted[i]);
        }
        for (size_t i = 1; i < banks.size(); ++i)
            for (size_t s = 0; s < banks[0].sites.size(); ++s) {
                QCOMPARE(banks[i].sites[s].sizes(), banks[0].sites[s].sizes());
                const double err =
                    (banks[i].sites[s] - banks[0].sites[s]).abs().max().item<double>();
                QVERIFY2(err <= 1e-5 * (1 + banks[0].sites[s].abs().max().item<double>()),
                         qPrintable(
                             QString("multiple %1 site %2: %3").arg(multiples[i]).arg(s).arg(err)));
            }
    }
    f.reference->motion_batch_multiple = 0;
}

// MotionFeatureCache gives encode_motion's bank clip after clip while the history fills and rolls
// on (14 clips of 12 frames > 124), running each frame through the ReferenceNet at most once and
// keeping only the frames a later clip samples.
void LoopyNetwork::motion_feature_cache_equals_encode_motion() {
    Fixture f;
    randomise(*f.reference);
    torch::NoGradGuard no_grad;
    const auto& tsm = f.config.temporal_segment;
    const int64_t frames_per_clip = 12;
    model::MotionHistory history(tsm, 1, {4, 16, 16});
    model::MotionFeatureCache cache, keeps_everything;
    int64_t present = 0, most_stored = 0;
    for (int64_t clip = 0; clip < 14; ++clip) {
        const int64_t first_frame = clip * frames_per_clip;
        const auto motion = history.abstract();
        const auto ids = model::motion_frame_ids(tsm, first_frame);
        QCOMPARE(static_cast<int64_t>(ids.size()), model::num_motion_frames(tsm));
        const auto cached = cache.encode(*f.reference, motion.frames, motion.mask, ids);
        const auto direct = f.reference->encode_motion(motion.frames, motion.mask);
        QVERIFY(torch::equal(cached.mask, direct.mask));
        QCOMPARE(cached.sites.size(), direct.sites.size());
        for (size_t s = 0; s < direct.sites.size(); ++s) {
            QCOMPARE(cached.sites[s].sizes(), direct.sites[s].sizes());
            const double err = (cached.sites[s] - direct.sites[s]).abs().max().item<double>();
            QVERIFY2(err <= 1e-5 * (1 + direct.sites[s].abs().max().item<double>()),
                     qPrintable(QString("clip %1 site %2: %3").arg(clip).arg(s).arg(err)));
        }
        keeps_everything.encode(*f.reference, motion.frames, motion.mask, ids);
        present += motion.mask.sum().item<int64_t>();
        history.push(torch::randn({1, frames_per_clip, 4, 16, 16}));
        cache.forget_unneeded(tsm, first_frame + frames_per_clip, frames_per_clip);
        most_stored = std::max(most_stored, cache.stored_frames());
    }
    qInfo(
        "motion frames present over 14 clips: %lld, run through the ReferenceNet: %lld, "
        "at most %lld kept",
        static_cast<long long>(present), static_cast<long long>(cache.encoded_frames()),
        static_cast<long long>(most_stored));
    QVERIFY(present > 150);
    QVERIFY(cache.encoded_frames() < present * 3 / 4);
    // Forgetting never made a frame run twice, and it kept fewer than two clips' motion frames.
    QCOMPARE(cache.encoded_frames(), keeps_everything.encoded_frames());
    QVERIFY(most_stored < 2 * model::num_motion_frames(tsm));
    QVERIFY(keeps_everything.stored_frames() > 2 * model::num_motion_frames(tsm));
    // Other samplings are not one frame per motion frame: no ids, the caller encodes directly.
    auto mean = tsm;
    mean.sampling = model::SegmentSampling::Mean;
    QVERIFY(model::motion_frame_ids(mean, 24).empty());
}

void LoopyNetwork::audio_to_latents_conditions() {
    torch::manual_seed(0);
    model::AudioToLatents a2l(model::AudioToLatentsOptions(16, 32));
    randomise(*a2l);
    torch::NoGradGuard no_grad;
    model::MotionConditionInputs in;
    in.type = torch::tensor({0, 1, 2});
    in.audio = torch::randn({3, 5, 16});
    in.head_variance = torch::rand({3, 1});
    in.expression_variance = torch::rand({3, 1});
    auto out = a2l(in);
    QCOMPARE(out.sizes().vec(), (std::vector<int64_t>{3, 5, 32}));
    // Item 0 reads audio, item 1 the head variance, item 2 the expression variance.
    auto changed = in;
    changed.audio = torch::randn({3, 5, 16});
    auto out2 = a2l(changed);
    QVERIFY(!torch::allclose(out2[0], out[0]));
    QVERIFY(torch::equal(out2[1], out[1]) && torch::equal(out2[2], out[2]));
    QVERIFY(torch::allclose(out[1][0], out[1][4]));  // a clip-level condition: same every frame
    changed = in;
    changed.head_variance = torch::rand({3, 1});
    out2 = a2l(changed);
    QVERIFY(!torch::allclose(out2[1], out[1]) && torch::equal(out2[2], out[2]));
    // A fresh module adds nothing to the timestep embedding.
    model::AudioToLatents fresh(model::AudioToLatentsOptions(16, 32));
    QCOMPARE(fresh(in).abs().max().item<float>(), 0.0f);
    auto bad = in;
    bad.head_variance = torch::Tensor();
    QVERIFY_EXCEPTION_THROWN(a2l(bad), Error);
    bad = in;
    bad.type = torch::tensor({0, 3, 1});
    QVERIFY_EXCEPTION_THROWN(a2l(bad), Error);
}

void LoopyNetwork::audio_helpers() {
    auto feats = torch::arange(4, torch::kFloat32).view({4, 1, 1}).expand({4, 2, 3}).contiguous();
    auto windows = model::audio_windows(feats, 2);
    QCOMPARE(windows.sizes().vec(), (std::vector<int64_t>{4, 5, 2, 3}));
    auto centre = windows.select(3, 0).select(2, 0);  // [T, 5]
    QVERIFY(torch::equal(centre[0].to(torch::kLong), torch::tensor({0, 0, 0, 1, 2})));
    QVERIFY(torch::equal(centre[3].to(torch::kLong), torch::tensor({1, 2, 3, 3, 3})));
    auto video = model::resample_to_frames(feats, 7);  // 4 audio frames -> 7 video frames
    QCOMPARE(video.sizes().vec(), (std::vector<int64_t>{7, 2, 3}));
    QCOMPARE(video[0][0][0].item<float>(), 0.0f);
    QCOMPARE(video[6][1][2].item<float>(), 3.0f);
    QVERIFY(std::abs(video[3][0][0].item<float>() - 1.5f) < 1e-6);
}

// Waveform, portrait and history through every module of the tiny model.
void LoopyNetwork::full_model_end_to_end() {
    torch::manual_seed(0);
    auto config = model::LoopyConfig::preset("tiny");
    model::LoopyModel m(config);
    m->eval();
    randomise(*m->denoising_unet, 0.02);
    randomise(*m->audio_to_latents, 0.5);
    torch::NoGradGuard no_grad;
    const int64_t frames = config.num_frames;
    auto audio = m->audio_encoder(torch::randn({1, 16000}) * 0.1);
    auto per_frame = model::resample_to_frames(model::stack_layer_features(audio), frames);
    auto windows = model::audio_windows(per_frame, config.audio_projection.window).unsqueeze(0);
    auto tokens = m->audio_proj(windows);
    QCOMPARE(tokens.sizes().vec(), (std::vector<int64_t>{1, frames, 8, 32}));

    auto portrait = torch::rand({1, 3, 128, 128}) * 2 - 1;
    auto ref_latent = m->vae->encode(portrait).mode() * config.vae_config().scaling_factor;
    QCOMPARE(ref_latent.sizes().vec(), (std::vector<int64_t>{1, 4, 16, 16}));
    model::MotionHistory history(config.temporal_segment, 1, {4, 16, 16});
    history.push(torch::randn({1, 30, 4, 16, 16}));
    auto motion_frames = history.abstract();
    QCOMPARE(motion_frames.mask.sum().item<int64_t>(), int64_t{12});  // of 20: sources >= 94 exist

    model::LoopyInputs in;
    in.latents = torch::randn({1, frames, 4, 16, 16});
    in.timestep = torch::tensor({999});
    in.reference = m->reference_unet->encode_reference(ref_latent);
    in.motion = m->reference_unet->encode_motion(motion_frames.frames, motion_frames.mask);
    in.audio_tokens = tokens;
    auto eps = m->predict_noise(in);
    QCOMPARE(eps.sizes().vec(), in.latents.sizes().vec());
    QVERIFY(torch::isfinite(eps).all().item<bool>());
    // Audio also reaches the timestep embedding through audio-to-latents.
    auto without_a2l = in;
    without_a2l.motion_condition.audio = torch::zeros({1, frames, 32});
    QVERIFY(test::relative_error(m->predict_noise(without_a2l), eps) > 1e-5);
}

QTEST_APPLESS_MAIN(LoopyNetwork)
#include "test_loopy_network.moc"
