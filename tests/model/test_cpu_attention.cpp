// The engine's CPU kernels against LibTorch's operators: the attention kernel
// (model/cpu_attention.h) on every path (unrolled head widths, the scalar width, short and long
// key rows, masks, strided and broadcast inputs, keys in parts) and its refusal of inputs it must
// leave to LibTorch; the row-split Linear (model/cpu_linear.h); the narrow-row LayerNorm
// (model/cpu_layer_norm.h); GEGLU's gate (model/cpu_geglu.h); GroupNorm with its shift, SiLU and
// tokens' layout (model/cpu_group_norm.h); the attention modules' inference
// shortcuts (reference keys projected once, the one-token cross-attention) against their plain
// computation.
#include <torch/torch.h>
#include <QtTest>

#include <limits>
#include <string>

#include "core/system.h"
#include "model/attention.h"
#include "model/cpu_attention.h"
#include "model/cpu_dispatch.h"
#include "model/cpu_feed_forward.h"
#include "model/cpu_geglu.h"
#include "model/cpu_group_norm.h"
#include "model/cpu_layer_norm.h"
#include "model/cpu_linear.h"
#include "operator_calls.h"
#include "test_util.h"

using namespace loopy::model;

namespace {

// softmax(q k^T / sqrt(d) + mask) v in LibTorch's own operators, in double precision.
torch::Tensor reference(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const torch::Tensor& mask) {
    const auto qd = q.to(torch::kFloat64), kd = k.to(torch::kFloat64), vd = v.to(torch::kFloat64);
    auto scores = torch::matmul(qd, kd.transpose(-2, -1)) / std::sqrt(double(q.size(-1)));
    if (mask.defined())
        scores.masked_fill_(mask.logical_not().view({k.size(0), 1, 1, k.size(2)}),
                            -std::numeric_limits<double>::infinity());
    return torch::matmul(scores.softmax(-1), vd).to(torch::kFloat32);
}

// q/k/v as the model makes them: heads split out of [B, L, H*D] (strided, not contiguous).
torch::Tensor heads_view(int64_t b, int64_t l, int64_t h, int64_t d, double scale = 1.0) {
    return (torch::randn({b, l, h, d}) * scale).transpose(1, 2);
}

class Enabled {  // restores the switch whatever a test does
  public:
    explicit Enabled(bool on) : before_(cpu_attention_enabled()) { set_cpu_attention_enabled(on); }
    ~Enabled() { set_cpu_attention_enabled(before_); }

  private:
    bool before_;
};

}  // namespace

class CpuAttentionTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void initTestCase() {
        // The engine's setting (core/system.cpp), which the fused feed-forward requires: without
        // it a test run alone found OpenBLAS's default pool and the fused path refused.
        loopy::set_blas_threads(1);
    }

    void matchesLibTorch_data() {
        QTest::addColumn<int>("batch");
        QTest::addColumn<int>("heads");
        QTest::addColumn<int>("lq");
        QTest::addColumn<int>("lk");
        QTest::addColumn<int>("dim");
        QTest::addColumn<bool>("masked");
        // Temporal (12 frames, 20 motion frames + 12), spatial with reference keys, audio tokens,
        // a width without an unrolled loop (12), wide heads, rows not a whole number of vectors.
        QTest::newRow("intra-clip d8") << 48 << 2 << 12 << 12 << 8 << false;
        QTest::newRow("inter-clip d8 masked") << 48 << 2 << 12 << 32 << 8 << true;
        QTest::newRow("inter-clip d16 masked") << 12 << 2 << 12 << 32 << 16 << true;
        QTest::newRow("short rows, 9 queries d8") << 6 << 2 << 9 << 20 << 8 << false;
        QTest::newRow("short rows, 20 queries d16 masked") << 6 << 2 << 20 << 24 << 16 << true;
        QTest::newRow("spatial long rows d8") << 3 << 2 << 64 << 128 << 8 << false;
        QTest::newRow("spatial long rows d8 masked") << 3 << 2 << 32 << 300 << 8 << true;
        QTest::newRow("spatial long rows d16 masked") << 3 << 2 << 16 << 96 << 16 << true;
        QTest::newRow("spatial 16x16 + reference d8") << 2 << 2 << 40 << 512 << 8 << false;
        QTest::newRow("spatial long rows d16, not whole 16s") << 3 << 2 << 24 << 72 << 16 << false;
        QTest::newRow("audio one query") << 64 << 2 << 1 << 40 << 8 << false;
        QTest::newRow("scalar width 12") << 5 << 3 << 7 << 70 << 12 << true;
        QTest::newRow("d40 long rows") << 2 << 2 << 9 << 77 << 40 << false;
        QTest::newRow("d64 odd rows") << 2 << 1 << 5 << 13 << 64 << true;
        QTest::newRow("d32 long rows masked") << 2 << 2 << 9 << 100 << 32 << true;
    }

    void matchesLibTorch() {
        QFETCH(int, batch);
        QFETCH(int, heads);
        QFETCH(int, lq);
        QFETCH(int, lk);
        QFETCH(int, dim);
        QFETCH(bool, masked);
        torch::manual_seed(batch * 131 + lk);
        torch::NoGradGuard no_grad;
        // Scaled up so that the softmax is sharp, as trained attention is: most weights tiny.
        const auto q = heads_view(batch, lq, heads, dim, 3.0),
                   k = heads_view(batch, lk, heads, dim), v = heads_view(batch, lk, heads, dim);
        torch::Tensor mask;
        if (masked) {
            mask = torch::rand({batch, lk}) > 0.5;
            mask.select(1, lk - 1).fill_(true);  // every row keeps a key
        }
        QVERIFY(cpu_attention_applies(q, k, v));
        const auto expected = reference(q, k, v, mask);
        // The AVX-512 long rows where this CPU has them, and the AVX2 ones.
        for (const bool avx512 : {true, false}) {
            set_cpu_avx512_enabled(avx512);
            const auto got = cpu_attention(q, k, v, mask);
            set_cpu_avx512_enabled(true);
            QCOMPARE(got.sizes().vec(), q.sizes().vec());
            const double diff = (got - expected).abs().max().item<double>();
            QVERIFY2(diff < 2e-5, qPrintable(QString("max difference %1 (AVX-512 %2)")
                                                 .arg(diff)
                                                 .arg(avx512 ? "on" : "off")));
            // merge_heads of the result is free: it is [B, Lq, H, D] underneath.
            QVERIFY(got.transpose(1, 2).is_contiguous());
        }
    }

    void avx512LongRowsAreTakenWhereTheCpuHasThem() {
        // On a CPU with AVX-512F the comparison above covers both copies; say which ran here.
        qInfo("AVX-512 copies active: %s", cpu_avx512_active() ? "yes" : "no");
        set_cpu_avx512_enabled(false);
        QVERIFY(!cpu_avx512_active());
        set_cpu_avx512_enabled(true);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        QCOMPARE(cpu_avx512_active(), __builtin_cpu_supports("avx512f") != 0);
#else
        QVERIFY(!cpu_avx512_active());
#endif
    }

    void maskedKeysHaveNoInfluence() {
        torch::NoGradGuard no_grad;
        const auto q = heads_view(4, 12, 2, 8), k = heads_view(4, 80, 2, 8);
        auto v = heads_view(4, 80, 2, 8).contiguous();
        auto mask = torch::ones({4, 80}, torch::kBool);
        mask.narrow(1, 0, 50).fill_(false);
        const auto before = cpu_attention(q, k, v, mask);
        v.narrow(2, 0, 50).fill_(1e30);  // what the masked keys hold must not matter
        const auto after = cpu_attention(q, k, v, mask);
        QVERIFY(torch::equal(before, after));
        QVERIFY(torch::isfinite(after).all().item<bool>());
    }

    void rowsWithoutKeysAreZero() {
        torch::NoGradGuard no_grad;
        const auto q = heads_view(3, 5, 2, 8), k = heads_view(3, 70, 2, 8),
                   v = heads_view(3, 70, 2, 8);
        auto mask = torch::ones({3, 70}, torch::kBool);
        mask[1].fill_(false);
        const auto out = cpu_attention(q, k, v, mask);
        QVERIFY(torch::equal(out[1], torch::zeros_like(out[1])));
        QVERIFY((out[0] - reference(q, k, v, mask)[0]).abs().max().item<double>() < 2e-5);
    }

    void repeatToBatchReadsRowsModuloTheirCount() {
        const auto t = torch::arange(3).view({3, 1});
        const auto r = repeat_to_batch(t, 6).view({6});
        QVERIFY(torch::equal(r, torch::tensor({0, 1, 2, 0, 1, 2}, r.options())));
        QCOMPARE(repeat_to_batch(t.narrow(0, 0, 1), 4).stride(0), int64_t(0));  // a view
        QVERIFY_EXCEPTION_THROWN(repeat_to_batch(t, 4), std::exception);
    }

    void partsEqualTheirConcatenation_data() {
        QTest::addColumn<int>("own");
        QTest::addColumn<int>("shared");
        QTest::addColumn<bool>("masked");
        // Inter-clip (motion memory per position, shared by the videos; short rows) and the
        // reference attention (own tokens and the portrait's; long rows).
        QTest::newRow("memory, short rows") << 12 << 20 << true;
        QTest::newRow("reference, long rows") << 64 << 64 << false;
        QTest::newRow("reference, long rows, items without it") << 64 << 64 << true;
    }

    void partsEqualTheirConcatenation() {
        QFETCH(int, own);
        QFETCH(int, shared);
        QFETCH(bool, masked);
        torch::manual_seed(own + shared);
        torch::NoGradGuard no_grad;
        const int64_t b = 6;
        const auto q = heads_view(b, 12, 2, 8, 3.0);
        const auto k1 = heads_view(b, own, 2, 8), v1 = heads_view(b, own, 2, 8);
        const auto k2 = heads_view(3, shared, 2, 8),
                   v2 = heads_view(3, shared, 2, 8);                          // rows mod 3
        const auto k3 = heads_view(1, 5, 2, 8), v3 = heads_view(1, 5, 2, 8);  // every item's
        const int64_t lk = own + shared + 5;
        torch::Tensor mask;
        if (masked) {
            mask = torch::rand({b, lk}) > 0.3;
            mask.narrow(1, own, shared).select(0, 2).fill_(false);  // an item without a part
        }
        const KeyValueParts parts{{k1, k2, k3}, {v1, v2, v3}};
        QVERIFY(cpu_attention_applies(q, parts));
        const auto k = torch::cat({k1, repeat_to_batch(k2, b), repeat_to_batch(k3, b)}, 2);
        const auto v = torch::cat({v1, repeat_to_batch(v2, b), repeat_to_batch(v3, b)}, 2);
        const auto want = reference(q, k, v, mask);
        const double diff = (cpu_attention(q, parts, mask) - want).abs().max().item<double>();
        QVERIFY2(diff < 2e-5, qPrintable(QString("max difference %1").arg(diff)));
        Enabled off(false);  // LibTorch's path expands and concatenates
        QVERIFY((attention_product(q, parts, mask) - want).abs().max().item<double>() < 2e-5);
    }

    void referenceKeysProjectedOnceEqualTheTokens() {
        // attn1 over [own tokens ; reference tokens] as the denoiser computed it before (the
        // reference tokens through to_k/to_v for every frame), against forward_with_extra with the
        // reference's keys projected once, on the kernel and on LibTorch's path, with items that
        // drop the reference (plain self-attention for them).
        torch::manual_seed(11);
        torch::NoGradGuard no_grad;
        Attention attn(AttentionOptions(16, 2, 8));
        const int64_t b = 6, l = 64;
        const auto x = torch::randn({b, l, 16}) * 2, ref = torch::randn({1, l, 16}) * 2;
        auto item_mask = torch::ones({b}, torch::kBool);
        item_mask.narrow(0, 0, 2).fill_(false);
        std::vector<torch::Tensor> want;
        for (int64_t i = 0; i < b; ++i) {
            const auto xi = x.narrow(0, i, 1);
            want.push_back(i < 2 ? attn(xi) : attn(xi, torch::cat({xi, ref}, 1)));
        }
        const auto expected = torch::cat(want, 0);
        const auto keys = attn->split_heads(attn->to_k(ref)),
                   values = attn->split_heads(attn->to_v(ref));
        for (bool kernel : {true, false}) {
            Enabled on(kernel);
            const auto got = attn->forward_with_extra(x, keys, values, item_mask);
            const double diff = (got - expected).abs().max().item<double>();
            QVERIFY2(diff < 2e-5,
                     qPrintable(QString("kernel %1: max difference %2").arg(kernel).arg(diff)));
        }
    }

    void oneTokenCrossAttentionSkipsTheQueries() {
        // Inference skips norm2/to_q/to_k for a one-token context; training (autograd) runs the
        // full attention. Both must give the same block output.
        torch::manual_seed(5);
        BasicTransformerBlock block(BasicTransformerBlockOptions(16, 2, 8).cross_attention_dim(32));
        const auto x = torch::randn({4, 30, 16}), context = torch::randn({4, 1, 32});
        torch::Tensor full, fast;
        {
            torch::AutoGradMode grad(true);
            QVERIFY(!AttentionImpl::output_ignores_queries(context));
            full = block(x, context).detach();
        }
        {
            torch::NoGradGuard no_grad;
            QVERIFY(AttentionImpl::output_ignores_queries(context));
            QVERIFY(!AttentionImpl::output_ignores_queries(torch::randn({4, 2, 32})));
            fast = block(x, context);
        }
        const double diff = (full - fast).abs().max().item<double>();
        QVERIFY2(diff < 1e-5, qPrintable(QString("max difference %1").arg(diff)));
        QVERIFY(full.abs().max().item<double>() > 0.1);  // a real output, not zeros
    }

    void broadcastBatchIsRead() {
        torch::NoGradGuard no_grad;
        // Keys and values shared by every item (stride 0), as the motion memory is.
        const auto q = heads_view(6, 12, 2, 8);
        const auto k = heads_view(1, 20, 2, 8).expand({6, 2, 20, 8});
        const auto v = heads_view(1, 20, 2, 8).expand({6, 2, 20, 8});
        const double diff =
            (cpu_attention(q, k, v) - reference(q, k, v, {})).abs().max().item<double>();
        QVERIFY(diff < 2e-5);
    }

    void attentionProductTakesTheKernelOrLibTorch() {
        torch::NoGradGuard no_grad;
        const auto q = heads_view(8, 12, 2, 8), k = heads_view(8, 32, 2, 8),
                   v = heads_view(8, 32, 2, 8);
        torch::Tensor with_kernel, without;
        {
            Enabled on(true);
            with_kernel = attention_product(q, k, v);
        }
        {
            Enabled off(false);
            QVERIFY(!cpu_attention_applies(q, k, v));
            without = attention_product(q, k, v);
        }
        QVERIFY((with_kernel - without).abs().max().item<double>() < 2e-5);
    }

    void leavesAutogradAndOtherTypesToLibTorch() {
        Enabled on(true);
        auto q = heads_view(2, 12, 2, 8).detach().requires_grad_(true);
        const auto k = heads_view(2, 12, 2, 8), v = heads_view(2, 12, 2, 8);
        QVERIFY(!cpu_attention_applies(q, k, v));  // training: gradients must flow
        auto out = attention_product(q, k, v);
        out.sum().backward();
        QVERIFY(q.grad().defined());
        {
            torch::NoGradGuard no_grad;
            QVERIFY(cpu_attention_applies(q, k, v));
        }
        QVERIFY(!cpu_attention_applies(q.detach().to(torch::kFloat64), k.to(torch::kFloat64),
                                       v.to(torch::kFloat64)));
        // Wide heads over long rows (SD 1.5's VAE attention): BLAS does these better.
        const auto wide = torch::randn({1, 1, 1024, 512});
        QVERIFY(!cpu_attention_applies(wide, wide, wide));
        QVERIFY_EXCEPTION_THROWN(cpu_attention(wide, wide, wide), std::exception);
    }

    void rowSplitLinearMatchesTheLayer() {
        torch::manual_seed(3);
        loopy::set_num_threads(2);  // as the engine runs: 2 OpenMP threads, OpenBLAS at 1
        loopy::test::OperatorCalls calls;
        torch::nn::Linear with_bias(16, 128), no_bias(torch::nn::LinearOptions(64, 16).bias(false));
        const auto x = torch::randn({9216, 16});
        const auto tokens = torch::randn({48, 16, 12, 64}).permute({0, 2, 1, 3});  // strided
        c10::InferenceMode inference;  // the worker threads must run in it too
        // 600 rows: above the split's threshold, below its earlier 2048.
        for (auto [layer, input] : {std::pair{&with_bias, x}, std::pair{&no_bias, tokens},
                                    std::pair{&with_bias, x.narrow(0, 0, 600)}}) {
            set_parallel_linear_enabled(false);
            const auto plain = (*layer)(input);
            set_parallel_linear_enabled(true);
            const int64_t before = calls.count("loopy::linear");
            const auto split = forward_linear(*layer, input);
            QCOMPARE(calls.count("loopy::linear"), before + 1);
            QCOMPARE(split.sizes().vec(), plain.sizes().vec());
            const double diff = (split - plain).abs().max().item<double>();
            QVERIFY2(diff <= 1e-6, qPrintable(QString("max difference %1").arg(diff)));
        }
    }

    void layerNormMatchesLibTorch_data() {
        QTest::addColumn<int>("width");
        QTest::newRow("16") << 16;
        QTest::newRow("32") << 32;
        QTest::newRow("64") << 64;
        QTest::newRow("12, no unrolled loop") << 12;
    }

    void layerNormMatchesLibTorch() {
        QFETCH(int, width);
        torch::manual_seed(width);
        torch::nn::LayerNorm layer(torch::nn::LayerNormOptions({width}).eps(1e-5));
        {
            torch::NoGradGuard no_grad;
            layer->weight.uniform_(0.5, 1.5);
            layer->bias.uniform_(-0.5, 0.5);
        }
        // Strided (a permuted view, as the temporal layers pass), an offset mean, 3000 rows.
        const auto x = (torch::randn({width, 3000}) * 3 + 5).t();
        torch::Tensor want, got;
        {
            set_cpu_layer_norm_enabled(false);
            torch::NoGradGuard no_grad;
            want = layer(x);
            set_cpu_layer_norm_enabled(true);
            got = forward_layer_norm(layer, x);
        }
        const double diff = (got - want).abs().max().item<double>();
        QVERIFY2(diff < 2e-5, qPrintable(QString("max difference %1").arg(diff)));
        QVERIFY(want.abs().max().item<double>() > 1.0);
        // Training: the layer's own path, gradients flow.
        auto trained = forward_layer_norm(layer, x);
        QVERIFY(trained.requires_grad());
        trained.sum().backward();
        QVERIFY(layer->weight.grad().defined());
    }

    void gegluMatchesLibTorch_data() {
        QTest::addColumn<int>("width");
        QTest::newRow("64: whole vectors") << 64;
        QTest::newRow("12: a scalar tail") << 12;
        QTest::newRow("24: a vector and a tail") << 24;
    }

    void gegluMatchesLibTorch() {
        QFETCH(int, width);
        torch::manual_seed(width);
        // Gates across GELU's whole range, including far below zero (where it is tiny) and above.
        const auto x = torch::randn({3000, 2 * width}) * 4;
        const auto xd = x.to(torch::kFloat64);
        const auto want = xd.narrow(1, 0, width) * torch::gelu(xd.narrow(1, width, width));
        // The AVX-512 copy where this CPU has it, and the AVX2 one.
        for (const bool avx512 : {true, false}) {
            torch::Tensor got;
            {
                torch::NoGradGuard no_grad;
                QVERIFY(cpu_geglu_enabled());
                set_cpu_avx512_enabled(avx512);
                got = geglu_product(x);
                set_cpu_avx512_enabled(true);
            }
            QCOMPARE(got.sizes().vec(), (std::vector<int64_t>{3000, width}));
            const double diff =
                ((got.to(torch::kFloat64) - want).abs() / (want.abs() + 1)).max().item<double>();
            QVERIFY2(diff < 1e-5, qPrintable(QString("max relative difference %1 (AVX-512 %2)")
                                                 .arg(diff)
                                                 .arg(avx512 ? "on" : "off")));
        }
        // Training: LibTorch's operators, gradients flow.
        auto leaf = x.clone().requires_grad_(true);
        geglu_product(leaf).sum().backward();
        QVERIFY(leaf.grad().defined());
    }

    void groupNormMatchesLibTorch_data() {
        QTest::addColumn<int>("channels");
        QTest::addColumn<int>("groups");
        QTest::addColumn<int>("height");
        QTest::addColumn<int>("width");
        QTest::addColumn<int>("shiftItems");  // 0: no shift
        QTest::addColumn<bool>("silu");
        QTest::newRow("a ResNet block's norm2: 16/8 groups, 16x16, time shift, SiLU")
            << 16 << 8 << 16 << 16 << 36 << true;
        QTest::newRow("one shift for every item, 5x3: no whole vectors")
            << 32 << 8 << 5 << 3 << 1 << true;
        QTest::newRow("norm alone, 5 channels a group, 7x7") << 20 << 4 << 7 << 7 << 0 << false;
    }

    void groupNormMatchesLibTorch() {
        QFETCH(int, channels);
        QFETCH(int, groups);
        QFETCH(int, height);
        QFETCH(int, width);
        QFETCH(int, shiftItems);
        QFETCH(bool, silu);
        torch::manual_seed(channels * height);
        torch::nn::GroupNorm norm(torch::nn::GroupNormOptions(groups, channels).eps(1e-5));
        {
            torch::NoGradGuard no_grad;
            norm->weight.uniform_(0.5, 1.5);
            norm->bias.uniform_(-0.5, 0.5);
        }
        // An offset mean, and values far enough below zero to test SiLU's negative side.
        const auto x = torch::randn({36, channels, height, width}) * 3 + 2;
        const auto shift =
            shiftItems > 0 ? torch::randn({shiftItems, channels}) * 4 : torch::Tensor();
        auto xd = x.to(torch::kFloat64);
        if (shift.defined()) xd = xd + shift.to(torch::kFloat64).view({shiftItems, channels, 1, 1});
        auto want = torch::group_norm(xd, groups, norm->weight.to(torch::kFloat64),
                                      norm->bias.to(torch::kFloat64), 1e-5);
        if (silu) want = want * torch::sigmoid(want);
        for (const bool avx512 : {true, false}) {
            torch::Tensor got;
            loopy::test::OperatorCalls ops;
            {
                torch::NoGradGuard no_grad;
                QVERIFY(cpu_group_norm_enabled());
                set_cpu_avx512_enabled(avx512);
                got = forward_group_norm(norm, x, shift, silu);
                set_cpu_avx512_enabled(true);
            }
            QCOMPARE(ops.count("loopy::group_norm"), int64_t{1});
            QCOMPARE(got.sizes(), x.sizes());
            const double diff = (got.to(torch::kFloat64) - want).abs().max().item<double>();
            QVERIFY2(diff < 1e-5,
                     qPrintable(QString("max difference %1 (AVX-512 %2)").arg(diff).arg(avx512)));
        }
        QVERIFY(want.min().item<double>() < -0.2);  // SiLU's or the norm's negative side was met
        // Training: LibTorch's operators, gradients flow.
        auto leaf = x.clone().requires_grad_(true);
        forward_group_norm(norm, leaf, shift, silu).sum().backward();
        QVERIFY(leaf.grad().defined() && norm->weight.grad().defined());
    }

    void groupNormRefusesChannelsThatDoNotDivideIntoGroups() {
        torch::nn::GroupNorm norm(torch::nn::GroupNormOptions(3, 16));
        torch::NoGradGuard no_grad;
        const auto x = torch::randn({2, 16, 4, 4});
        QVERIFY(!cpu_group_norm_applies(*norm, x));
        const auto message = [&] {
            try {
                forward_group_norm(norm, x, {}, true);
            } catch (const std::exception& e) {
                return std::string(e.what());
            }
            return std::string();
        }();
        QVERIFY2(message.find("divisible") != std::string::npos, message.c_str());
    }

    void groupNormTokensMatchLibTorch_data() {
        QTest::addColumn<int>("frames");
        QTest::newRow("temporal: a group spans 12 frames") << 12;
        QTest::newRow("spatial: one frame") << 1;
    }

    void groupNormTokensMatchLibTorch() {
        QFETCH(int, frames);
        torch::manual_seed(frames);
        const int64_t videos = 3, channels = 16, height = 6, width = 5;
        torch::nn::GroupNorm norm(torch::nn::GroupNormOptions(8, channels).eps(1e-6));
        {
            torch::NoGradGuard no_grad;
            norm->weight.uniform_(0.5, 1.5);
            norm->bias.uniform_(-0.5, 0.5);
        }
        const auto x = torch::randn({videos * frames, channels, height, width}) * 2 - 1;
        // [B, C, F, h, w] normalised, then one token per (video, y, x) and frame.
        const auto xd =
            x.to(torch::kFloat64).view({videos, frames, channels, height, width}).transpose(1, 2);
        const auto want = torch::group_norm(xd, 8, norm->weight.to(torch::kFloat64),
                                            norm->bias.to(torch::kFloat64), 1e-6)
                              .permute({0, 3, 4, 2, 1})
                              .reshape({videos * height * width, frames, channels});
        for (const bool kernel : {true, false}) {
            torch::Tensor got;
            loopy::test::OperatorCalls ops;
            {
                torch::NoGradGuard no_grad;
                set_cpu_group_norm_enabled(kernel);
                got = group_norm_tokens(norm, x, frames);
                set_cpu_group_norm_enabled(true);
            }
            QCOMPARE(ops.count("loopy::group_norm"), int64_t{kernel ? 1 : 0});
            QCOMPARE(got.sizes(), want.sizes());
            const double diff = (got.to(torch::kFloat64) - want).abs().max().item<double>();
            QVERIFY2(diff < 1e-5,
                     qPrintable(QString("max difference %1 (kernel %2)").arg(diff).arg(kernel)));
        }
        const auto message = loopy::test::error_of([&] {
            torch::NoGradGuard no_grad;
            group_norm_tokens(norm, x, 7);
        });
        QVERIFY2(loopy::test::contains(message, "not whole videos"), message.c_str());
    }

    void ownProductMatchesBlas_data() {
        QTest::addColumn<int>("rows");
        QTest::addColumn<int>("in");
        QTest::addColumn<int>("out");
        QTest::addColumn<bool>("bias");
        // The tiny model's shapes, rows not a whole number of blocks, every remainder of 64
        // outputs (16, 32, 48), the largest widths taken.
        QTest::newRow("16 -> 128") << 1000 << 16 << 128 << true;
        QTest::newRow("64 -> 16, odd rows") << 301 << 64 << 16 << true;
        QTest::newRow("32 -> 48") << 203 << 32 << 48 << true;
        QTest::newRow("128 -> 32, no bias") << 130 << 128 << 32 << false;
        QTest::newRow("7 -> 256") << 257 << 7 << 256 << true;
    }

    void ownProductMatchesBlas() {
        QFETCH(int, rows);
        QFETCH(int, in);
        QFETCH(int, out);
        QFETCH(bool, bias);
        torch::manual_seed(rows + in);
        torch::nn::Linear layer(torch::nn::LinearOptions(in, out).bias(bias));
        const auto x = torch::randn({rows, in});
        torch::NoGradGuard no_grad;
        QCOMPARE(cpu_own_product_applies(layer, x), cpu_avx512_active());
        set_cpu_own_product_enabled(false);
        QVERIFY(!cpu_own_product_applies(layer, x));
        const auto want = forward_linear(layer, x);
        set_cpu_own_product_enabled(true);
        const auto got = forward_linear(layer, x);
        QCOMPARE(got.sizes().vec(), want.sizes().vec());
        const double diff = ((got - want).abs() / (want.abs() + 1)).max().item<double>();
        QVERIFY2(diff < 1e-5, qPrintable(QString("max relative difference %1").arg(diff)));
        // A strided input ([..., in] with other strides) is read through a copy, not misread.
        const auto strided = torch::randn({in, rows}).t();
        const double strided_diff =
            (forward_linear(layer, strided) - layer(strided)).abs().max().item<double>();
        QVERIFY2(strided_diff < 1e-4, qPrintable(QString("strided: %1").arg(strided_diff)));
    }

    void ownProductFollowsChangedWeights() {
        // A weight changed in place (an optimizer step, a checkpoint load) or a new layer must
        // never be read stale, should the transposed weights ever be kept between calls.
        if (!cpu_avx512_active()) QSKIP("no AVX-512: the own product is not used");
        torch::manual_seed(21);
        torch::NoGradGuard no_grad;
        const auto x = torch::randn({300, 32});
        for (int round = 0; round < 3; ++round) {
            torch::nn::Linear layer(32, 64);
            QVERIFY(cpu_own_product_applies(layer, x));
            const auto check = [&](const char* when) {
                const double diff =
                    (forward_linear(layer, x) - layer(x)).abs().max().item<double>();
                QVERIFY2(diff < 1e-4, qPrintable(QString("%1: %2").arg(when).arg(diff)));
            };
            check("new layer");
            layer->weight.mul_(-2);  // in place: same tensor, same storage
            check("after mul_");
            layer->weight.copy_(torch::randn({64, 32}));
            check("after copy_");
            layer->weight.set_data(torch::randn({64, 32}));  // other storage
            check("after set_data");
        }
        const auto w = torch::randn({16, 48}).t();  // [48, 16], strided
        std::vector<float> wt;
        transpose_weight(w, wt);
        QVERIFY(torch::equal(torch::from_blob(wt.data(), {16, 48}), w.t()));
    }

    void linearPlusResidualMatchesTheSum() {
        // forward_linear_plus starts the own product's sums from the residual; elsewhere (no
        // AVX-512, autograd, a residual it cannot read) it adds it after. Same values every way.
        torch::manual_seed(17);
        torch::nn::Linear layer(32, 48);
        const auto x = torch::randn({6, 50, 32});
        const auto residual = torch::randn({6, 50, 48});
        const auto strided_residual = torch::randn({48, 50, 6}).permute({2, 1, 0});
        torch::Tensor want;
        {
            torch::NoGradGuard no_grad;
            want = layer(x) + residual;
            QCOMPARE(cpu_own_product_applies(layer, x), cpu_avx512_active());
            for (const auto& r : {residual, strided_residual.copy_(residual)}) {
                const auto got = forward_linear_plus(layer, x, r);
                QCOMPARE(got.sizes().vec(), want.sizes().vec());
                const double diff = (got - want).abs().max().item<double>();
                QVERIFY2(diff < 1e-5, qPrintable(QString("max difference %1").arg(diff)));
            }
            set_cpu_own_product_enabled(false);
            const double blas_diff =
                (forward_linear_plus(layer, x, residual) - want).abs().max().item<double>();
            set_cpu_own_product_enabled(true);
            QVERIFY2(blas_diff < 1e-5, qPrintable(QString("BLAS: %1").arg(blas_diff)));
        }
        auto y = forward_linear_plus(layer, x, residual);  // autograd: the layer, then the add
        QVERIFY(y.requires_grad());
        QVERIFY((y.detach() - want).abs().max().item<double>() < 1e-5);
        y.sum().backward();
        QVERIFY(torch::allclose(layer->bias.grad(), torch::full({48}, 300.0)));
    }

    void fusedFeedForwardMatchesTheLayers_data() {
        QTest::addColumn<int>("dim");
        QTest::addColumn<int>("tokens");
        QTest::newRow("16 channels, 256 tokens (several tiles)") << 16 << 256;
        QTest::newRow("32 channels, 77 tokens") << 32 << 77;
        QTest::newRow("24 channels (BLAS for the fused products)") << 24 << 50;
    }

    void fusedFeedForwardMatchesTheLayers() {
        QFETCH(int, dim);
        QFETCH(int, tokens);
        torch::manual_seed(dim * 7 + tokens);
        FeedForward ff(dim);
        torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({dim}));
        torch::NoGradGuard no_grad;
        norm->weight.uniform_(0.5, 1.5);
        norm->bias.uniform_(-0.5, 0.5);
        const auto h = torch::randn({12, tokens, dim});
        const auto want = ff(norm(h)) + h;  // LibTorch's layers
        for (const bool avx512 : {true, false}) {
            set_cpu_avx512_enabled(avx512);
            const auto got = fused_feed_forward(norm, ff->proj, ff->out, h);
            set_cpu_avx512_enabled(true);
            QVERIFY(got.defined());
            QCOMPARE(got.sizes().vec(), h.sizes().vec());
            const double diff = ((got - want).abs() / (want.abs() + 1)).max().item<double>();
            QVERIFY2(diff < 2e-5, qPrintable(QString("max relative difference %1 (AVX-512 %2)")
                                                 .arg(diff)
                                                 .arg(avx512 ? "on" : "off")));
        }
        set_cpu_fused_feed_forward_enabled(false);
        QVERIFY(!fused_feed_forward(norm, ff->proj, ff->out, h).defined());
        set_cpu_fused_feed_forward_enabled(true);
    }

    void fusedFeedForwardLeavesAutogradToTheLayers() {
        FeedForward ff(16);
        torch::nn::LayerNorm norm(torch::nn::LayerNormOptions({16}));
        const auto h = torch::randn({2, 300, 16}, torch::requires_grad());
        QVERIFY(!fused_feed_forward(norm, ff->proj, ff->out, h).defined());
    }

    void fusedBiasLinearMatchesTheLayer() {
        // Below the row split: the bias goes into one addmm instead of a second pass (add_).
        torch::manual_seed(4);
        torch::nn::Linear layer(24, 40);
        const auto tokens = torch::randn({3, 50, 24});
        const auto strided = torch::randn({2, 24, 5, 7}).permute({0, 2, 3, 1});
        for (const auto& input : {tokens, strided}) {
            loopy::test::OperatorCalls calls;
            const auto plain = layer(input);  // LibTorch's frontend: matmul, then add_
            const int64_t fused_before = calls.count("aten::addmm");
            const int64_t adds_before = calls.count("aten::add_");
            const auto fused = forward_linear(layer, input);
            QCOMPARE(calls.count("aten::addmm"), fused_before + 1);
            QCOMPARE(calls.count("aten::add_"), adds_before);
            QCOMPARE(fused.sizes().vec(), plain.sizes().vec());
            const double diff = (fused - plain).abs().max().item<double>();
            QVERIFY2(diff <= 1e-5, qPrintable(QString("max difference %1").arg(diff)));
        }
        auto y = forward_linear(layer, tokens);  // under autograd too
        y.sum().backward();
        QVERIFY(layer->bias.grad().defined());
        QVERIFY(torch::allclose(layer->bias.grad(), torch::full({40}, 150.0)));
    }

    void rowSplitLinearLeavesAutogradToTheLayer() {
        torch::nn::Linear layer(16, 32);
        const auto x = torch::randn({4096, 16});
        auto y = forward_linear(layer, x);  // parameters record gradients: the layer's own path
        QVERIFY(y.requires_grad());
        y.sum().backward();
        QVERIFY(layer->weight.grad().defined());
    }
};

QTEST_APPLESS_MAIN(CpuAttentionTest)
#include "test_cpu_attention.moc"
