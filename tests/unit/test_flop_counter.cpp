// The FLOP counter behind `loopy bench` counts matrix products and convolutions exactly.
#include <torch/torch.h>
#include <QtTest>

#include "core/flop_counter.h"

class FlopCounterTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void countsMatmulAndLinear() {
        torch::InferenceMode guard;
        const auto a = torch::randn({7, 5});
        const auto b = torch::randn({5, 3});
        loopy::FlopCounter counter;
        (void)torch::mm(a, b);
        QCOMPARE(counter.flops(), 2.0 * 7 * 5 * 3);
        counter.reset();
        torch::nn::Linear linear(5, 11);
        (void)linear(torch::randn({2, 4, 5}));  // batched linear: 8 rows
        QCOMPARE(counter.flops(), 2.0 * 8 * 5 * 11);
        counter.reset();
        (void)torch::bmm(torch::randn({4, 6, 2}), torch::randn({4, 2, 9}));
        QCOMPARE(counter.flops(), 2.0 * 4 * 6 * 2 * 9);
    }

    void countsConvolutionWithStrideAndGroups() {
        torch::InferenceMode guard;
        torch::nn::Conv2d conv(torch::nn::Conv2dOptions(4, 8, 3).stride(2).padding(1).groups(2));
        loopy::FlopCounter counter;
        (void)conv(torch::randn({1, 4, 10, 10}));
        // output 8 x 5 x 5, each (4/2) * 3 * 3 multiply-adds
        QCOMPARE(counter.flops(), 2.0 * 8 * 5 * 5 * 2 * 3 * 3);
    }

    void stopsCountingWhenDestroyed() {
        torch::InferenceMode guard;
        double counted = 0;
        {
            loopy::FlopCounter counter;
            (void)torch::mm(torch::randn({2, 2}), torch::randn({2, 2}));
            counted = counter.flops();
        }
        QCOMPARE(counted, 16.0);
        loopy::FlopCounter fresh;
        QCOMPARE(fresh.flops(), 0.0);
    }

    void medianAndMatmulThroughputArePositive() {
        int calls = 0;
        const double t = loopy::median_seconds(2, 3, [&] { ++calls; });
        QCOMPARE(calls, 5);
        QVERIFY(t >= 0);
        QVERIFY(loopy::measure_matmul_gflops(128, 2) > 0);
    }
};

QTEST_APPLESS_MAIN(FlopCounterTest)
#include "test_flop_counter.moc"
