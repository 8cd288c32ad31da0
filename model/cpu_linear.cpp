#include "model/cpu_linear.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/record_function.h>

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/system.h"
#include "model/cpu_dispatch.h"
#include "model/cpu_vec16.h"

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

torch::Tensor fused_bias_linear(const torch::Tensor& weight, const torch::Tensor& bias,
                                const torch::Tensor& x) {
    if (x.dim() <= 2 || !bias.defined() || !fused_bias_enabled())
        return torch::nn::functional::linear(x, weight, bias);
    const int64_t in = x.size(-1);
    return in_leading_dims(torch::addmm(bias, x.reshape({-1, in}), weight.t()), x);
}

// LOOPY_CPU_OWN_PRODUCT=0 leaves every product to BLAS.
EnvironmentSwitch& own_product_switch() {
    static EnvironmentSwitch on_off{"LOOPY_CPU_OWN_PRODUCT"};
    return on_off;
}
constexpr int64_t kOwnProductMaxInputs = 128, kOwnProductMaxOutputs = 256;
// Below this many rows transposing the weights costs more than the loop saves (~2 us).
constexpr int64_t kOwnProductMinRows = 128;

// y [rows, n] = bias + add + x [rows, k] (rows ldx floats apart) . wt [k, n].
struct ProductArgs {
    const float* x;
    int64_t ldx;
    const float* wt;
    const float* bias;  // [n] or null
    float* y;
    int64_t k, n;
    const float* add = nullptr;  // [rows, n] (a residual) or null
};

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

#if LOOPY_HAVE_AVX2_KERNEL
using namespace simd;

// Products with few input channels (the tiny model's 16-128) and whole vectors of outputs, for
// CPUs with AVX-512F: OpenBLAS reached 36-80 GFLOP/s on one core for these shapes (16 -> 16 to
// 128 -> 32 over 2304-9216 rows), packing its panels for a product this short. Here a block of R
// rows x V vectors of outputs stays in registers over all of K, the weights in cache (K x N
// floats: at most 128 KB, the tiny model's at most 32 KB).
template <int V, int R>
LOOPY_AVX512 inline void product_block(const ProductArgs& a, int64_t col, int64_t begin,
                                       int64_t end) {
    Vec16 bias[V];
    for (int v = 0; v < V; ++v)
        bias[v] = a.bias ? loadu16(a.bias + col + 16 * v) : splat16(0.0f);
    int64_t r = begin;
    for (; r + R <= end; r += R) {
        Vec16 acc[R][V];
        for (int i = 0; i < R; ++i)
            for (int v = 0; v < V; ++v)
                acc[i][v] =
                    a.add ? bias[v] + loadu16(a.add + (r + i) * a.n + col + 16 * v) : bias[v];
        for (int64_t k = 0; k < a.k; ++k) {
            Vec16 w[V];
            for (int v = 0; v < V; ++v)
                w[v] = loadu16(a.wt + k * a.n + col + 16 * v);
            for (int i = 0; i < R; ++i) {
                const Vec16 xi = splat16(a.x[(r + i) * a.ldx + k]);
                for (int v = 0; v < V; ++v)
                    acc[i][v] += xi * w[v];
            }
        }
        for (int i = 0; i < R; ++i)
            for (int v = 0; v < V; ++v)
                storeu16(a.y + (r + i) * a.n + col + 16 * v, acc[i][v]);
    }
    for (; r < end; ++r) {
        Vec16 acc[V];
        for (int v = 0; v < V; ++v)
            acc[v] = a.add ? bias[v] + loadu16(a.add + r * a.n + col + 16 * v) : bias[v];
        for (int64_t k = 0; k < a.k; ++k) {
            const Vec16 xr = splat16(a.x[r * a.ldx + k]);
            for (int v = 0; v < V; ++v)
                acc[v] += xr * loadu16(a.wt + k * a.n + col + 16 * v);
        }
        for (int v = 0; v < V; ++v)
            storeu16(a.y + r * a.n + col + 16 * v, acc[v]);
    }
}

// Rows [begin, end): 64 outputs at a time, then the rest (16, 32 or 48). More rows a block
// where fewer vectors leave registers free: each accumulator is a chain of K dependent FMAs.
LOOPY_AVX512 __attribute__((noinline)) void product_rows_avx512(const ProductArgs& a, int64_t begin,
                                                                int64_t end) {
    int64_t col = 0;
    for (; col + 64 <= a.n; col += 64)
        product_block<4, 4>(a, col, begin, end);
    switch ((a.n - col) / 16) {
        case 3:
            return product_block<3, 4>(a, col, begin, end);
        case 2:
            return product_block<2, 6>(a, col, begin, end);
        case 1:
            return product_block<1, 8>(a, col, begin, end);
        default:
            return;
    }
}
#endif

// The engine's own product takes these weights over this many rows: AVX-512 active, CPU float32,
// outputs in whole vectors, few inputs.
bool own_product_fits(const torch::Tensor& weight, const torch::Tensor& bias, int64_t rows) {
#if LOOPY_HAVE_AVX2_KERNEL
    if (!cpu_avx512_active() || !own_product_switch().on() || at::in_parallel_region())
        return false;
    if (weight.scalar_type() != torch::kFloat32 || !weight.device().is_cpu() || weight.dim() != 2 ||
        (bias.defined() && bias.scalar_type() != torch::kFloat32))
        return false;
    const int64_t n = weight.size(0), k = weight.size(1);
    return k > 0 && k <= kOwnProductMaxInputs && n % 16 == 0 && n <= kOwnProductMaxOutputs &&
           rows >= kOwnProductMinRows;
#else
    (void)weight, (void)bias, (void)rows;
    return false;
#endif
}

// ... and x [..., K]: a CPU float32 input, no autograd recording.
bool own_product_applies(const torch::Tensor& weight, const torch::Tensor& bias,
                         const torch::Tensor& x) {
    if (!x.device().is_cpu() || x.scalar_type() != torch::kFloat32 || x.dim() < 2 ||
        weight.dim() != 2 || x.size(-1) != weight.size(1) || x.size(-1) == 0)
        return false;
    if (torch::GradMode::is_enabled() &&
        (x.requires_grad() || weight.requires_grad() || (bias.defined() && bias.requires_grad())))
        return false;
    return own_product_fits(weight, bias, x.numel() / x.size(-1));
}

// x [..., K] . weight^T + bias (+ residual, [..., N] or undefined) by product_rows_avx512, rows
// split over the threads.
torch::Tensor own_product(const torch::Tensor& weight, const torch::Tensor& bias,
                          const torch::Tensor& x, const torch::Tensor& residual = {}) {
    const int64_t k = x.size(-1), n = weight.size(0);
    const auto rows = x.reshape({-1, k}).contiguous();
    RECORD_FUNCTION("loopy::linear", std::vector<c10::IValue>({rows, weight}));
    std::vector<float> wt;
    transpose_weight(weight, wt);  // [K, N]
    const auto b = bias.defined() ? bias.contiguous() : torch::Tensor();
    const auto add = residual.defined() ? residual.reshape({-1, n}).contiguous() : torch::Tensor();
    auto y = torch::empty({rows.size(0), n}, x.options());
    const ProductArgs args{
        rows.data_ptr<float>(), k, wt.data(), b.defined() ? b.data_ptr<float>() : nullptr,
        y.data_ptr<float>(),    k, n,         add.defined() ? add.data_ptr<float>() : nullptr};
    const int64_t threads = at::get_num_threads();
    const int64_t grain =
        rows.size(0) < kMinRows ? rows.size(0) : (rows.size(0) + threads - 1) / threads;
#if LOOPY_HAVE_AVX2_KERNEL
    at::parallel_for(0, rows.size(0), grain,
                     [&](int64_t begin, int64_t end) { product_rows_avx512(args, begin, end); });
#else
    (void)args, (void)grain;  // never called: own_product_applies is false without AVX-512
#endif
    return in_leading_dims(y, x);
}

}  // namespace

void transpose_weight(const torch::Tensor& weight, std::vector<float>& out) {
    if (weight.dim() != 2 || weight.scalar_type() != torch::kFloat32 || !weight.device().is_cpu())
        throw std::invalid_argument("transpose_weight: needs a CPU float32 matrix");
    const int64_t n = weight.size(0), k = weight.size(1);
    const auto w = weight.accessor<float, 2>();  // any strides
    out.resize(static_cast<size_t>(n * k));
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < k; ++j)
            out[static_cast<size_t>(j * n + i)] = w[i][j];
}

void product_rows_cpu(const float* x, int64_t rows, const float* wt, const float* bias, float* y,
                      int64_t k, int64_t n, const float* add) {
#if LOOPY_HAVE_AVX2_KERNEL
    product_rows_avx512(ProductArgs{x, k, wt, bias, y, k, n, add}, 0, rows);
#else
    (void)x, (void)rows, (void)wt, (void)bias, (void)y, (void)k, (void)n, (void)add;
    throw std::logic_error("product_rows_cpu: no AVX-512 copy in this build");
#endif
}

void set_cpu_own_product_enabled(bool enabled) {
    own_product_switch().set(enabled);
}

bool cpu_own_product_applies(const torch::nn::Linear& layer, const torch::Tensor& x) {
    return own_product_applies(layer->weight, layer->bias, x);
}

bool cpu_own_product_fits(const torch::nn::Linear& layer, int64_t rows) {
    return own_product_fits(layer->weight, layer->bias, rows);
}

void set_parallel_linear_enabled(bool enabled) {
    enabled_switch().set(enabled);
}

bool parallel_linear_enabled() {
    return enabled_switch().on();
}

torch::Tensor forward_linear_plus(torch::nn::Linear& layer, const torch::Tensor& x,
                                  const torch::Tensor& residual) {
    const auto& weight = layer->weight;
    const auto& bias = layer->bias;
    const bool fits = own_product_applies(weight, bias, x) && residual.device().is_cpu() &&
                      residual.scalar_type() == torch::kFloat32 &&
                      !(torch::GradMode::is_enabled() && residual.requires_grad()) &&
                      residual.dim() == x.dim() &&
                      residual.sizes().slice(0, x.dim() - 1) == x.sizes().slice(0, x.dim() - 1) &&
                      residual.size(-1) == weight.size(0);
    if (fits) return own_product(weight, bias, x, residual);
    return forward_linear(weight, bias, x) + residual;
}

torch::Tensor forward_linear(torch::nn::Linear& layer, const torch::Tensor& x) {
    return forward_linear(layer->weight, layer->bias, x);
}

torch::Tensor forward_linear(const torch::Tensor& weight_in, const torch::Tensor& bias_in,
                             const torch::Tensor& x) {
    if (own_product_applies(weight_in, bias_in, x)) return own_product(weight_in, bias_in, x);
    if (!splits(weight_in, x)) return fused_bias_linear(weight_in, bias_in, x);
    const auto weight = weight_in.detach();  // no autograd is recording (splits())
    const auto bias = bias_in.defined() ? bias_in.detach() : torch::Tensor();
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
