#pragma once
// Counts the floating-point work of the matrix products and convolutions that LibTorch runs on
// this thread (2 FLOP per multiply-add), by observing ATen operator calls. Elementwise ops,
// norms and softmax are not counted: they are small next to the products in these networks.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace at {
struct RecordFunction;
struct ObserverContext;
}  // namespace at

namespace loopy {

class FlopCounter {
  public:
    FlopCounter();  // starts counting immediately
    ~FlopCounter();
    FlopCounter(const FlopCounter&) = delete;
    FlopCounter& operator=(const FlopCounter&) = delete;

    double flops() const;
    void reset();

    struct State;

  private:
    static std::unique_ptr<at::ObserverContext> on_operator(const at::RecordFunction& fn);
    std::unique_ptr<State> state_;
};

// The FLOPs one observed operator call does (0 for those not counted), for per-operator profiles;
// the observer must have asked for the inputs (RecordFunctionCallback::needsInputs).
double operator_flops(const at::RecordFunction& fn);

// Median wall time in seconds of `repeat` calls after `warmup` calls.
double median_seconds(int warmup, int repeat, const std::function<void()>& fn);

// Measured float32 GEMM throughput of this machine (n x n matmul), GFLOP/s.
double measure_matmul_gflops(int64_t n = 2048, int repeat = 5);

// The same on the device and dtype a model runs in ("cuda", "float16", ...): the GPU's peak for
// "% of matmul". On the CPU in float32 this is measure_matmul_gflops().
double measure_matmul_gflops(const std::string& device, const std::string& dtype);

}  // namespace loopy
