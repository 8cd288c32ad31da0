// `loopy convert` on the goldens' tiny SD U-Net / VAE / wav2vec2: what is copied, what is fresh,
// the converted network against diffusers' U-Net output, and the checkpoint format.
#include <QtTest>

#include <fstream>

#include "core/error.h"
#include "core/safetensors.h"
#include "model/convert.h"
#include "model/golden.h"

using namespace loopy;

namespace {

void write_folder(const QString& dir, const nlohmann::json& config, const TensorMap& weights,
                  const std::string& file) {
    QDir().mkpath(dir);
    std::ofstream(QDir(dir).filePath("config.json").toStdString()) << config.dump(2);
    save_safetensors(QDir(dir).filePath(QString::fromStdString(file)).toStdString(), weights);
}

struct Sources {
    QTemporaryDir tmp;
    test::Golden unet = test::load_golden("unet2d_condition.safetensors");
    test::Golden vae = test::load_golden("autoencoder_kl.safetensors");
    test::Golden audio = test::load_golden("wav2vec2.safetensors");
    QString sd() const { return tmp.filePath("sd"); }
    QString w2v() const { return tmp.filePath("wav2vec2"); }

    Sources() {
        const std::string diffusers = "diffusion_pytorch_model.safetensors";
        write_folder(tmp.filePath("sd/unet"), unet.config, unet.weights(), diffusers);
        write_folder(tmp.filePath("sd/vae"), vae.config, vae.weights(), diffusers);
        write_folder(w2v(), audio.config, audio.weights(), "model.safetensors");
    }
    model::ConvertOptions options() const {
        model::ConvertOptions o;
        o.sd_dir = sd().toStdString();
        o.wav2vec2_dir = w2v().toStdString();
        o.preset = "tiny";
        return o;
    }
};

std::string error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const Error& e) {
        qInfo("expected error: %s", e.what());
        return e.what();
    }
    return "(no error)";
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

void randomise_fresh(model::LoopyModelImpl& m) {
    torch::NoGradGuard no_grad;
    for (auto& item : m.named_parameters())
        if (model::is_loopy_only_tensor(item.key()))
            item.value().add_(torch::randn_like(item.value()) * 0.05);
}

// Everything the model can be given, for the round trip.
model::LoopyInputs all_conditions(model::LoopyModelImpl& m) {
    torch::manual_seed(3);
    model::LoopyInputs in;
    in.latents = torch::randn({2, 3, 4, 8, 8});
    in.timestep = torch::tensor({100, 900});
    in.reference = m.reference_unet->encode_reference(torch::randn({2, 4, 8, 8}));
    auto mask = torch::rand({2, 20}) > 0.3;
    in.motion = m.reference_unet->encode_motion(torch::randn({2, 20, 4, 8, 8}), mask);
    in.audio_tokens = torch::randn({2, 3, 8, 32});
    in.drop.audio = torch::tensor({false, true});
    return in;
}

}  // namespace

class ConvertParity : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void copies_and_reports_fresh_tensors();
    void converted_matches_diffusers_unet();
    void null_context_matches_plain_unet();
    void checkpoint_round_trip();
    void checkpoint_errors();
    void conversion_errors();
};

void ConvertParity::copies_and_reports_fresh_tensors() {
    Sources src;
    model::ConvertReport report;
    int64_t last = -1, total = 0;
    bool monotonic = true;
    auto m = model::convert_to_loopy(src.options(), &report,
                                     [&](const std::string&, int64_t done, int64_t all) {
                                         monotonic = monotonic && done >= last;
                                         last = done;
                                         total = all;
                                     });
    QVERIFY(monotonic);
    QCOMPARE(last, total);
    const auto ours = state_dict(*m);
    QCOMPARE(report.copied.size() + report.fresh.size(), ours.size());
    // The SD U-Net is in both U-Nets, the VAE and wav2vec2 under their prefixes, value for value.
    for (const auto& [key, t] : src.unet.weights()) {
        QVERIFY2(torch::equal(ours.at("reference_unet." + key), t), key.c_str());
        QVERIFY2(torch::equal(ours.at("denoising_unet." + key), t), key.c_str());
    }
    for (const auto& [key, t] : src.vae.weights())
        QVERIFY2(torch::equal(ours.at("vae." + key), t), key.c_str());
    for (const auto& [key, t] : src.audio.weights()) {
        const std::string name = "audio_encoder." + key.substr(std::string("wav2vec2.").size());
        QVERIFY2(torch::equal(ours.at(name), t), name.c_str());
    }
    QCOMPARE(report.copied.size(),
             2 * src.unet.weights().size() + src.vae.weights().size() + src.audio.weights().size());
    // Fresh: exactly the Loopy-only tensors; every new output projection starts at zero.
    for (const auto& name : report.fresh)
        QVERIFY2(model::is_loopy_only_tensor(name), name.c_str());
    std::set<std::string> zero(report.zero.begin(), report.zero.end());
    int zero_projections = 0;
    for (const auto& [name, t] : ours) {
        const bool projection =
            contains(name, "motion_modules") || contains(name, "inter_clip")
                ? contains(name, ".proj_out.")
                : contains(name, "audio_attentions") && contains(name, ".to_out.");
        if (projection || name == "audio_to_latents.proj_out.weight" ||
            contains(name, "null_context")) {
            QVERIFY2(zero.count(name), name.c_str());
            ++zero_projections;
        }
    }
    const auto sites = model::unet_layer_sites(m->config.unet_config()).size();
    QCOMPARE(zero_projections, int(sites * 6 + 1 + 2));
    const auto text = report.describe();
    qInfo("%s", text.c_str());
    QVERIFY(contains(text, "denoising_unet.*.inter_clip_temporal.*") &&
            contains(text, "audio_to_latents.*") && contains(text, "not reused for audio"));
}

// New layers at zero, no audio, no reference: the converted denoiser is diffusers' U-Net, per
// frame. The attn2 context is overridden with the golden's text states to compare with
// diffusers' own output.
void ConvertParity::converted_matches_diffusers_unet() {
    Sources src;
    auto m = model::convert_to_loopy(src.options());
    torch::NoGradGuard no_grad;
    const auto& sample = src.unet.at("in.sample");  // [2, 4, 8, 8]
    model::LoopyInputs in;
    in.timestep = src.unet.at("in.timestep");
    in.context = src.unet.at("in.encoder_hidden_states");
    for (int64_t frames : {1, 3}) {
        in.latents = sample.unsqueeze(1).expand({2, frames, 4, 8, 8}).contiguous();
        auto out = m->predict_noise(in);
        for (int64_t f = 0; f < frames; ++f) {
            const double err = test::relative_error(out.select(1, f), src.unet.at("out.sample"));
            qInfo("converted Loopy U-Net (F=%lld, frame %lld) vs diffusers: %.3g",
                  (long long)frames, (long long)f, err);
            QVERIFY2(err <= test::kParityTolerance, qPrintable(QString::number(err)));
        }
    }
}

// With its own (zero) null context, the denoiser equals the plain SD U-Net fed that context.
void ConvertParity::null_context_matches_plain_unet() {
    Sources src;
    auto m = model::convert_to_loopy(src.options());
    auto plain = model::load_unet2d_condition_folder(src.sd().toStdString() + "/unet");
    torch::NoGradGuard no_grad;
    auto x = torch::randn({2, 4, 4, 8, 8});
    auto t = torch::tensor({30, 870});
    model::LoopyInputs in;
    in.latents = x;
    in.timestep = t;
    auto out = m->predict_noise(in);
    auto ref =
        plain->forward(x.reshape({8, 4, 8, 8}), t.repeat_interleave(4), torch::zeros({8, 1, 24}));
    const double err = test::relative_error(out.reshape({8, 4, 8, 8}), ref);
    qInfo("converted Loopy (null context) vs plain U-Net: %.3g", err);
    QVERIFY(err <= test::kParityTolerance);
}

void ConvertParity::checkpoint_round_trip() {
    Sources src;
    const std::string path = src.tmp.filePath("init.safetensors").toStdString();
    auto report = model::convert_checkpoint(src.options(), path);
    auto m = model::load_loopy_checkpoint(path);
    randomise_fresh(*m);  // so that the new layers matter for the comparison
    const std::string path2 = src.tmp.filePath("trained.safetensors").toStdString();
    model::save_loopy_checkpoint(path2, *m);
    auto loaded = model::load_loopy_checkpoint(path2);
    QCOMPARE(loaded->config.to_json(), m->config.to_json());
    QCOMPARE(model::read_loopy_config(path2).to_json(), m->config.to_json());
    const auto a = state_dict(*m), b = state_dict(*loaded);
    QCOMPARE(a.size(), b.size());
    for (const auto& [key, t] : a)
        QVERIFY2(torch::equal(t, b.at(key)), key.c_str());
    torch::NoGradGuard no_grad;
    auto out_a = m->predict_noise(all_conditions(*m));
    auto out_b = loaded->predict_noise(all_conditions(*loaded));
    QVERIFY(torch::equal(out_a, out_b));
    // The metadata a reader needs, and nothing else required.
    safetensors::File file = safetensors::File::open(path);
    QCOMPARE(QString::fromStdString(file.header.metadata.at(model::kFormatVersionKey)),
             QString("1"));
    QCOMPARE(file.header.tensors.size(), report.copied.size() + report.fresh.size());
}

void ConvertParity::checkpoint_errors() {
    Sources src;
    const std::string good = src.tmp.filePath("good.safetensors").toStdString();
    model::convert_checkpoint(src.options(), good);
    Metadata metadata;
    auto tensors = load_safetensors(good, &metadata);
    auto write = [&](const std::string& name, const TensorMap& t, const Metadata& md) {
        const std::string path = src.tmp.filePath(QString::fromStdString(name)).toStdString();
        save_safetensors(path, t, md);
        return path;
    };
    auto not_loopy = write("plain.safetensors", src.unet.weights(), {});
    QVERIFY(contains(error_of([&] { model::load_loopy_checkpoint(not_loopy); }),
                     "not a Loopy checkpoint"));
    auto md = metadata;
    md[model::kFormatVersionKey] = "2";
    auto v2 = write("v2.safetensors", tensors, md);
    auto e = error_of([&] { model::load_loopy_checkpoint(v2); });
    QVERIFY(contains(e, "format version '2'") && contains(e, "v2.safetensors"));
    md = metadata;
    md[model::kConfigKey] = "{\"name\": ";
    auto broken = write("broken.safetensors", tensors, md);
    QVERIFY(contains(error_of([&] { model::load_loopy_checkpoint(broken); }), "loopy.config"));
    md = metadata;
    auto config = nlohmann::json::parse(metadata.at(model::kConfigKey));
    config["audio_projection"]["context_tokens"] = 4;  // the file's proj3 holds 8 tokens
    md[model::kConfigKey] = config.dump();
    auto mismatch = write("mismatch.safetensors", tensors, md);
    QVERIFY(contains(error_of([&] { model::load_loopy_checkpoint(mismatch); }),
                     "audio_proj.proj3.weight"));
    auto fewer = tensors;
    fewer.erase("denoising_unet.mid_block.inter_clip_temporal.0.type_embedding");
    auto missing = write("missing.safetensors", fewer, metadata);
    QVERIFY(contains(error_of([&] { model::load_loopy_checkpoint(missing); }),
                     "denoising_unet.mid_block.inter_clip_temporal.0.type_embedding"));
}

void ConvertParity::conversion_errors() {
    Sources src;
    auto o = src.options();
    o.sd_dir = src.tmp.filePath("sd/unet").toStdString();  // the U-Net folder, not the pipeline
    QVERIFY(contains(error_of([&] { model::convert_to_loopy(o); }), "unet/"));
    o = src.options();
    o.wav2vec2_dir = src.sd().toStdString() + "/vae";  // a folder without model.safetensors
    QVERIFY(contains(error_of([&] { model::convert_to_loopy(o); }), "model.safetensors"));
    o = src.options();
    o.preset = "sd21";
    QVERIFY(contains(error_of([&] { model::convert_to_loopy(o); }), "sd21"));
    // A U-Net file missing one tensor: named, under both U-Nets.
    auto weights = src.unet.weights();
    weights.erase("down_blocks.0.resnets.0.conv1.weight");
    write_folder(src.tmp.filePath("sd/unet"), src.unet.config, weights,
                 "diffusion_pytorch_model.safetensors");
    auto e = error_of([&] { model::convert_to_loopy(src.options()); });
    QVERIFY(contains(e, "reference_unet.down_blocks.0.resnets.0.conv1.weight") &&
            contains(e, "denoising_unet.down_blocks.0.resnets.0.conv1.weight"));
    // wav2vec2 weights that are not wav2vec2.
    write_folder(src.w2v(), src.audio.config, src.vae.weights(), "model.safetensors");
    write_folder(src.tmp.filePath("sd/unet"), src.unet.config, src.unet.weights(),
                 "diffusion_pytorch_model.safetensors");
    QVERIFY(contains(error_of([&] { model::convert_to_loopy(src.options()); }),
                     "not a wav2vec2 checkpoint"));
}

QTEST_APPLESS_MAIN(ConvertParity)
#include "test_convert_parity.moc"
