#include "model/cpu_layer_norm.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>

#include "model/cpu_dispatch.h"
#include "model/cpu_vec8.h"

namespace loopy::model {

namespace {

EnvironmentSwitch& enabled_switch() {
    static EnvironmentSwitch on_off{"LOOPY_CPU_LAYER_NORM"};
    return on_off;
}

struct NormArgs {
    const float* x;
    float* y;
    const float* weight;
    const float* bias;
    int64_t width;
    float eps;
};

// Rows [begin, end) of any width. Two passes over the row, as LibTorch: the mean, then the
// variance around it.
LOOPY_INLINE void normalise_rows(const NormArgs& a, int64_t begin, int64_t end) {
    const int64_t n = a.width;
    for (int64_t r = begin; r < end; ++r) {
        const float* __restrict x = a.x + r * n;
        float* __restrict y = a.y + r * n;
        float sum = 0.0f;
        for (int64_t c = 0; c < n; ++c)
            sum += x[c];
        const float mean = sum / static_cast<float>(n);
        float squares = 0.0f;
        for (int64_t c = 0; c < n; ++c)
            squares += (x[c] - mean) * (x[c] - mean);
        const float rstd = 1.0f / std::sqrt(squares / static_cast<float>(n) + a.eps);
        for (int64_t c = 0; c < n; ++c)
            y[c] = (x[c] - mean) * rstd * a.weight[c] + a.bias[c];
    }
}

// The same for C a multiple of 8 in whole vectors: the row's sums in vector lanes, then across
// them. The loops above add one element after another (the compiler may not reorder float
// additions), a chain of 2C dependent additions per row that left the CPU waiting.
template <int C>
LOOPY_INLINE void normalise_rows_by_vector(const NormArgs& a, int64_t begin, int64_t end) {
    using namespace simd;
    static_assert(C % kLanes == 0, "whole vectors");
    constexpr int V = C / kLanes;
    constexpr float inv_n = 1.0f / C;
    for (int64_t r = begin; r < end; ++r) {
        const float* x = a.x + r * C;
        float* y = a.y + r * C;
        Vec8 xs[V];
        for (int v = 0; v < V; ++v)
            xs[v] = load8(x + v * kLanes);
        Vec8 sum = xs[0];
        for (int v = 1; v < V; ++v)
            sum += xs[v];
        const Vec8 mean = splat8(sum8(sum) * inv_n);
        Vec8 squares = {};
        for (int v = 0; v < V; ++v)
            squares += (xs[v] - mean) * (xs[v] - mean);
        const Vec8 rstd = splat8(1.0f / std::sqrt(sum8(squares) * inv_n + a.eps));
        for (int v = 0; v < V; ++v)
            store8(y + v * kLanes, (xs[v] - mean) * rstd * load8(a.weight + v * kLanes) +
                                       load8(a.bias + v * kLanes));
    }
}

LOOPY_INLINE void normalise_by_width(const NormArgs& a, int64_t begin, int64_t end) {
    switch (a.width) {
        case 16:
            return normalise_rows_by_vector<16>(a, begin, end);
        case 32:
            return normalise_rows_by_vector<32>(a, begin, end);
        case 64:
            return normalise_rows_by_vector<64>(a, begin, end);
        default:
            return normalise_rows(a, begin, end);
    }
}

bool applies(const torch::nn::LayerNormImpl& layer, const torch::Tensor& x) {
    const auto& o = layer.options;
    if (!cpu_layer_norm_enabled() || !o.elementwise_affine() || o.normalized_shape().size() != 1)
        return false;
    const int64_t width = o.normalized_shape()[0];
    if (width > 64 || x.dim() < 1 || x.size(-1) != width || x.numel() == 0) return false;
    for (const auto* t : {&x, &layer.weight, &layer.bias})
        if (!t->defined() || !t->device().is_cpu() || t->scalar_type() != torch::kFloat32)
            return false;
    // The loop reads the weights where they are (they always are contiguous, being 1-D).
    if (!layer.weight.is_contiguous() || !layer.bias.is_contiguous()) return false;
    return !(torch::GradMode::is_enabled() &&
             (x.requires_grad() || layer.weight.requires_grad() || layer.bias.requires_grad()));
}

}  // namespace

void set_cpu_layer_norm_enabled(bool enabled) {
    enabled_switch().set(enabled);
}

bool cpu_layer_norm_enabled() {
    return enabled_switch().on();
}

bool cpu_layer_norm_applies(const torch::nn::LayerNormImpl& layer, const torch::Tensor& x) {
    return applies(layer, x);
}

void layer_norm_rows_cpu(const torch::nn::LayerNormImpl& layer, const float* x, float* y,
                         int64_t rows) {
    const NormArgs args{x,
                        y,
                        layer.weight.data_ptr<float>(),
                        layer.bias.data_ptr<float>(),
                        layer.weight.size(0),
                        static_cast<float>(layer.options.eps())};
    static const auto normalise = CpuKernel<normalise_by_width>::pick();
    normalise(args, 0, rows);
}

torch::Tensor forward_layer_norm(torch::nn::LayerNorm& layer, const torch::Tensor& x_in) {
    if (!applies(*layer, x_in)) return layer(x_in);
    RECORD_FUNCTION("loopy::layer_norm", std::vector<c10::IValue>({x_in}));
    const auto x = x_in.contiguous();
    auto y = torch::empty_like(x);
    const int64_t width = x.size(-1);
    const float* xs = x.data_ptr<float>();
    float* ys = y.data_ptr<float>();
    at::parallel_for(0, x.numel() / width, 512, [&](int64_t begin, int64_t end) {
        layer_norm_rows_cpu(*layer, xs + begin * width, ys + begin * width, end - begin);
    });
    return y;
}

}  // namespace loopy::model
