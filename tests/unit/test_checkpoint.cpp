// Tensors to and from safetensors, and strict loading of a module tree by name.
#include <torch/torch.h>
#include <QtTest>

#include "core/checkpoint.h"
#include "core/error.h"
#include "test_util.h"

using loopy::test::error_of;

namespace {

struct TinyImpl : torch::nn::Module {
    TinyImpl() {
        proj = register_module("proj", torch::nn::Linear(3, 2));
        norm = register_module("norm", torch::nn::BatchNorm1d(2));
    }
    torch::nn::Linear proj{nullptr};
    torch::nn::BatchNorm1d norm{nullptr};
};
TORCH_MODULE(Tiny);

}  // namespace

class CheckpointTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void roundTripEveryDtype() {
        QTemporaryDir dir;
        const std::string path = dir.filePath("t.safetensors").toStdString();
        loopy::TensorMap in;
        for (auto type :
             {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16, torch::kLong,
              torch::kInt, torch::kShort, torch::kChar, torch::kByte, torch::kBool}) {
            auto t = (torch::arange(12, torch::kDouble).reshape({3, 4}) - 5).to(type);
            in[std::string("t_") + c10::toString(type)] = t;
        }
        in["noncontig"] = torch::arange(6, torch::kFloat).reshape({2, 3}).t();
        loopy::save_safetensors(path, in, {{"who", "test"}});
        loopy::Metadata meta;
        const loopy::TensorMap out = loopy::load_safetensors(path, &meta);
        QCOMPARE(meta.at("who"), std::string("test"));
        QCOMPARE(out.size(), in.size());
        for (const auto& [name, t] : in) {
            QVERIFY2(out.count(name), name.c_str());
            QCOMPARE(out.at(name).scalar_type(), t.scalar_type());
            QVERIFY2(torch::equal(out.at(name), t.contiguous()), name.c_str());
        }
    }

    void loadedTensorsAreWritableWithoutTouchingTheFile() {
        QTemporaryDir dir;
        const std::string path = dir.filePath("cow.safetensors").toStdString();
        loopy::save_safetensors(path, {{"x", torch::ones({4})}});
        {
            auto t = loopy::load_safetensors(path).at("x");
            t.mul_(3);  // copy-on-write mapping: must not crash nor change the file
            QCOMPARE(t.sum().item<float>(), 12.f);
        }
        QCOMPARE(loopy::load_safetensors(path).at("x").sum().item<float>(), 4.f);
    }

    void strictLoadCopiesAndConvertsDtype() {
        Tiny src, dst;
        torch::NoGradGuard g;
        src->proj->weight.uniform_(-1, 1);
        src->norm->running_mean.fill_(0.5);
        loopy::TensorMap half;
        for (auto& [k, v] : loopy::state_dict(*src, "m."))
            half[k] = v.to(torch::kHalf);
        loopy::LoadOptions options;
        options.prefix = "m.";
        const auto report = loopy::load_state_dict(*dst, half, options);
        QVERIFY(report.ok());
        QCOMPARE(report.loaded, std::size_t(7));  // weight, bias, norm weight/bias, 3 buffers
        QCOMPARE(dst->proj->weight.scalar_type(), torch::kFloat);
        QVERIFY(torch::allclose(dst->proj->weight, src->proj->weight, 1e-3, 1e-3));
        QCOMPARE(dst->norm->running_mean[0].item<float>(), 0.5f);
    }

    void strictLoadReportsEverythingAtOnce() {
        Tiny src, dst;
        auto sd = loopy::state_dict(*src);
        sd.erase("proj.bias");                     // missing
        sd["proj.weight"] = torch::zeros({5, 3});  // wrong shape
        sd["extra.weight"] = torch::zeros({1});    // unexpected
        const std::string msg =
            error_of([&] { loopy::load_state_dict(*dst, sd, {}, "ckpt.safetensors"); });
        QVERIFY2(msg.find("ckpt.safetensors: ") == 0, msg.c_str());
        QVERIFY2(msg.find("1 missing, 1 unexpected, 1 wrong shape") != std::string::npos,
                 msg.c_str());
        QVERIFY(msg.find("proj.bias") != std::string::npos);
        QVERIFY(msg.find("extra.weight") != std::string::npos);
        QVERIFY(msg.find("proj.weight: file [5, 3] vs model [2, 3]") != std::string::npos);

        loopy::LoadOptions lenient;
        lenient.strict = false;
        const auto report = loopy::load_state_dict(*dst, sd, lenient);
        QCOMPARE(report.missing.size(), std::size_t(1));
        QCOMPARE(report.unexpected.size(), std::size_t(1));
        QCOMPARE(report.mismatched.size(), std::size_t(1));

        loopy::LoadOptions ignore;
        ignore.strict = false;
        ignore.ignore_unexpected_prefixes = {"extra."};
        QVERIFY(loopy::load_state_dict(*dst, sd, ignore).unexpected.empty());
    }

    void canonicalKeysMapUpstreamVariants() {
        QCOMPARE(loopy::canonical_key("wav2vec2.encoder.pos_conv_embed.conv.parametrizations."
                                      "weight.original0"),
                 std::string("wav2vec2.encoder.pos_conv_embed.conv.weight_g"));
        QCOMPARE(loopy::canonical_key("encoder.mid_block.attentions.0.proj_attn.bias"),
                 std::string("encoder.mid_block.attentions.0.to_out.0.bias"));
        QCOMPARE(loopy::canonical_key("decoder.mid_block.attentions.0.query.weight"),
                 std::string("decoder.mid_block.attentions.0.to_q.weight"));
        QCOMPARE(loopy::canonical_key("a.key.weight"), std::string("a.key.weight"));
    }

    void unsupportedDtypeNamesTheTensor() {
        QTemporaryDir dir;
        const std::string path = dir.filePath("u16.safetensors").toStdString();
        const uint16_t v[2] = {1, 2};
        loopy::safetensors::write(path, {{"w", loopy::safetensors::DType::U16, {2}, v, 4}});
        const std::string msg = error_of([&] { loopy::load_safetensors(path); });
        QVERIFY2(msg.find("tensor 'w': dtype U16 is not supported") != std::string::npos,
                 msg.c_str());
    }
};

QTEST_APPLESS_MAIN(CheckpointTest)
#include "test_checkpoint.moc"
