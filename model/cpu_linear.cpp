#include "model/cpu_linear.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/record_function.h>

#include <cstdlib>
#include <string>

#include "core/system.h"
#include "model/cpu_dispatch.h"

namespace loopy::model {

namespace {

// Below this many rows one BLAS call is cheaper than waking the second thread (a micro-benchmark
// of the tiny model's shapes: 576 rows of 32 -> 32 or 256 columns gain ~20 %, 256 rows lose).
constexpr int64_t kMinRows = 512;

EnvironmentSwitch& enabled_switch() {
    static EnvironmentSwitch on_off{"LOOPY_PARALLEL_LINEAR"};
    return on_off;
}

// LOOPY_FUSED_LINEAR_BIAS=0 turns fused_bias_linear off, for comparisons.
bool fused_bias_enabled() {
    static const EnvironmentSwitch on_off{"LOOPY_FUSED_LINEAR_BIAS"};
    return on_off.on();
}

// LibTorch's C++ frontend (torch::nn::functional::linear) fuses the bias into the product only
// for 2-D inputs: the model's [B, L, C] tokens got a product and then a second pass over the
// output for the bias (~340 of them per SD 1.5 denoising step, 59 of its 467 ms in session 8's
// GPU profile). One addmm over the rows adds the bias in the product (cuBLASLt's epilogue on
// CUDA, the output's initial value for BLAS on the CPU).
// A product over x's rows, y [rows, out], back in x's leading dims: [..., out].
torch::Tensor in_leading_dims(const torch::Tensor& y, const torch::Tensor& x) {
    auto shape = x.sizes().vec();
    shape.back() = y.size(1);
    return y.view(shape);
}

torch::Tensor fused_bias_linear(torch::nn::Linear& layer, const torch::Tensor& x) {
    if (x.dim() <= 2 || !layer->bias.defined() || !fused_bias_enabled()) return layer(x);
    const int64_t in = x.size(-1);
    return in_leading_dims(torch::addmm(layer->bias, x.reshape({-1, in}), layer->weight.t()), x);
}

bool splits(const torch::Tensor& weight, const torch::Tensor& x) {
    if (!parallel_linear_enabled() || at::get_num_threads() < 2 || at::in_parallel_region())
        return false;
    // Only with OpenBLAS on one thread (the engine's default): a larger pool would serialise the
    // blocks' calls and fight the OpenMP threads.
    if (blas_threads() > 1) return false;
    if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32 || x.dim() < 2 ||
        weight.scalar_type() != torch::kFloat32 || !weight.device().is_cpu())
        return false;
    if (torch::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad()))
        return false;
    return x.size(-1) > 0 && x.numel() / x.size(-1) >= kMinRows;
}

}  // namespace

void set_parallel_linear_enabled(bool enabled) {
    enabled_switch().set(enabled);
}

bool parallel_linear_enabled() {
    return enabled_switch().on();
}

torch::Tensor forward_linear(torch::nn::Linear& layer, const torch::Tensor& x) {
    if (!splits(layer->weight, x)) return fused_bias_linear(layer, x);
    const auto weight = layer->weight.detach();  // no autograd is recording (splits())
    const auto bias = layer->bias.defined() ? layer->bias.detach() : torch::Tensor();
    const int64_t in = x.size(-1), out_features = weight.size(0);
    const auto rows = x.reshape({-1, in});
    // One record in the calling thread for `--profile` and the FLOP counter, whose callbacks are
    // per thread; the blocks' own products are not recorded, or the caller's would count twice.
    RECORD_FUNCTION("loopy::linear", std::vector<c10::IValue>({rows, weight}));
    auto y = torch::empty({rows.size(0), out_features}, x.options());
    const auto wt = weight.t();
    const int64_t threads = at::get_num_threads();
    const int64_t grain = (rows.size(0) + threads - 1) / threads;
    // OpenMP's threads do not inherit the caller's thread-local state (inference mode, grad mode):
    // the blocks run with the caller's.
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, rows.size(0), grain, [&](int64_t begin, int64_t end) {
        at::ThreadLocalStateGuard same_state(caller_state);
        at::RecordFunctionGuard unrecorded(false);
        auto block = y.narrow(0, begin, end - begin);
        const auto input = rows.narrow(0, begin, end - begin);
        if (bias.defined())
            at::addmm_out(block, bias, input, wt);
        else
            at::mm_out(block, input, wt);
    });
    return in_leading_dims(y, x);
}

}  // namespace loopy::model
