// The FLOP counter behind `loopy bench` counts matrix products and convolutions exactly; the
// engine's thread policy keeps OpenBLAS's pool at one thread (core/system.cpp).
#include <torch/torch.h>
#include <QtTest>

#include "core/flop_counter.h"
#include "core/system.h"

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

    // Two thread pools on the same cores spun against each other (3.5x slower denoising step
    // at 2 threads); the engine sets OpenBLAS to 1 whatever the intra-op count.
    void engineKeepsOpenBlasAtOneThread() {
        if (loopy::blas_threads() == 0) QSKIP("the loaded BLAS is not OpenBLAS");
        QCOMPARE(loopy::set_num_threads(2), 2);
        QCOMPARE(loopy::blas_threads(), 1);
        (void)loopy::measure_matmul_gflops(256, 1);  // measures with every thread ...
        QCOMPARE(loopy::blas_threads(), 1);          // ... and puts the pool back
        qputenv("LOOPY_BLAS_THREADS", "2");
        loopy::set_num_threads(2);
        QCOMPARE(loopy::blas_threads(), 2);
        qunsetenv("LOOPY_BLAS_THREADS");
        loopy::set_num_threads(2);
        QCOMPARE(loopy::blas_threads(), 1);
    }

    // OpenBLAS runs an older family's kernel on CPUs newer than its release (AVX2 on a Zen 5):
    // the description says which one, since "% of matmul" is measured against it.
    void blasDescriptionNamesOpenBlasKernel() {
        if (loopy::blas_threads() == 0) QSKIP("the loaded BLAS is not OpenBLAS");
        const std::string blas = loopy::system_info().blas;
        const std::string label = "(OpenBLAS kernel ";
        const auto at = blas.find(label);
        QVERIFY2(at != std::string::npos, blas.c_str());
        const auto end = blas.find(')', at);
        QVERIFY2(end != std::string::npos && end > at + label.size(), blas.c_str());  // a name
        qInfo("%s", blas.c_str());
    }

    // The policy changes speed, not results: one product with 1 and with 2 OpenBLAS threads.
    void blasThreadCountKeepsProducts() {
        if (loopy::blas_threads() == 0) QSKIP("the loaded BLAS is not OpenBLAS");
        torch::InferenceMode guard;
        torch::manual_seed(3);
        const auto a = torch::randn({512, 384});
        const auto b = torch::randn({384, 640});
        const int before = loopy::set_blas_threads(1);
        const auto one = torch::mm(a, b);
        loopy::set_blas_threads(2);
        const auto two = torch::mm(a, b);
        loopy::set_blas_threads(before);
        const double rel = ((one - two).norm() / one.norm()).item<double>();
        QVERIFY2(rel < 1e-6, qPrintable(QString("relative difference %1").arg(rel)));
    }
};

QTEST_APPLESS_MAIN(FlopCounterTest)
#include "test_flop_counter.moc"
