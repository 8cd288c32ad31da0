#include "model/cpu_geglu.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>

#include "model/cpu_dispatch.h"
#include "model/cpu_vec16.h"
#include "model/cpu_vec8.h"

namespace loopy::model {

namespace {

using namespace simd;

EnvironmentSwitch& enabled_switch() {
    static EnvironmentSwitch on_off{"LOOPY_CPU_GEGLU"};
    return on_off;
}

// Abramowitz & Stegun 7.1.26: 1 - erf(z) = (a1 t + ... + a5 t^5) exp(-z^2), t = 1 / (1 + p z),
// z >= 0, absolute error 1.5e-7.
constexpr float kP = 0.3275911f, kA1 = 0.254829592f, kA2 = -0.284496736f, kA3 = 1.421413741f,
                kA4 = -1.453152027f, kA5 = 1.061405429f;

// gelu(x) = x (1 + erf(x / sqrt 2)) / 2 = x (1 - q/2) for x >= 0 and x q / 2 below, with
// q = 1 - erf(|x| / sqrt 2): the negative side keeps its relative precision.
LOOPY_INLINE Vec8 gelu8(Vec8 x) {
    const Vec8 z = (x < 0.0f ? -x : x) * 0.70710678118654752f;
    const Vec8 t = 1.0f / (z * kP + 1.0f);
    Vec8 poly = splat8(kA5);
    poly = poly * t + kA4;
    poly = poly * t + kA3;
    poly = poly * t + kA2;
    poly = poly * t + kA1;
    const Vec8 q = poly * t * exp_nonpositive(-(z * z));
    return x < 0.0f ? x * q * 0.5f : x - x * q * 0.5f;
}

// value * gelu(gate) for one element: the rows' tails after the last whole vector.
LOOPY_INLINE float geglu_scalar(float value, float gate) {
    return value * 0.5f * gate * (1.0f + std::erf(gate * 0.70710678118654752f));
}

struct Rows {
    const float* x;  // [rows, 2n]
    float* y;        // [rows, n]
    int64_t n;
};

LOOPY_INLINE void geglu_rows(const Rows& a, int64_t begin, int64_t end) {
    const int64_t whole = a.n / kLanes * kLanes;
    for (int64_t r = begin; r < end; ++r) {
        const float* value = a.x + r * 2 * a.n;
        const float* gate = value + a.n;
        float* y = a.y + r * a.n;
        for (int64_t c = 0; c < whole; c += kLanes)
            store8(y + c, load8(value + c) * gelu8(load8(gate + c)));
        for (int64_t c = whole; c < a.n; ++c)
            y[c] = geglu_scalar(value[c], gate[c]);
    }
}

#if LOOPY_HAVE_AVX2_KERNEL
// gelu8 sixteen lanes at a time, its division by a reciprocal estimate and a Newton step, for
// CPUs with AVX-512F: the division and the exponential were most of GEGLU's time (0.97 ms for
// the tiny model's 9216 x 128 on one core).
LOOPY_AVX512 inline Vec16 gelu16(Vec16 x) {
    const Vec16 z = (x < splat16(0.0f) ? -x : x) * splat16(0.70710678118654752f);
    const Vec16 t = reciprocal16(z * splat16(kP) + splat16(1.0f));
    Vec16 poly = splat16(kA5);
    poly = poly * t + splat16(kA4);
    poly = poly * t + splat16(kA3);
    poly = poly * t + splat16(kA2);
    poly = poly * t + splat16(kA1);
    const Vec16 half_q = poly * t * exp_nonpositive16(-(z * z)) * splat16(0.5f);
    return x < splat16(0.0f) ? x * half_q : x - x * half_q;
}

LOOPY_AVX512 __attribute__((noinline)) void geglu_rows_avx512(const Rows& a, int64_t begin,
                                                              int64_t end) {
    const int64_t whole = a.n / 16 * 16;
    for (int64_t r = begin; r < end; ++r) {
        const float* value = a.x + r * 2 * a.n;
        const float* gate = value + a.n;
        float* y = a.y + r * a.n;
        for (int64_t c = 0; c < whole; c += 16)
            storeu16(y + c, loadu16(value + c) * gelu16(loadu16(gate + c)));
        for (int64_t c = whole; c < a.n; ++c)
            y[c] = geglu_scalar(value[c], gate[c]);
    }
}
#endif

using GegluRows = void (*)(const Rows&, int64_t, int64_t);

// The AVX-512 copy where the CPU has it and LOOPY_CPU_AVX512 is not 0, else CpuKernel's pick.
GegluRows geglu_kernel() {
    static const GegluRows portable_or_avx2 = CpuKernel<geglu_rows>::pick();
#if LOOPY_HAVE_AVX2_KERNEL
    if (cpu_avx512_active()) return geglu_rows_avx512;
#endif
    return portable_or_avx2;
}

bool applies(const torch::Tensor& x) {
    return cpu_geglu_enabled() && x.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
           x.dim() >= 1 && x.size(-1) % 2 == 0 && x.numel() > 0 &&
           !(torch::GradMode::is_enabled() && x.requires_grad());
}

}  // namespace

void set_cpu_geglu_enabled(bool enabled) {
    enabled_switch().set(enabled);
}

bool cpu_geglu_enabled() {
    return enabled_switch().on();
}

void geglu_rows_cpu(const float* x, float* y, int64_t n, int64_t rows) {
    geglu_kernel()(Rows{x, y, n}, 0, rows);
}

torch::Tensor geglu_product(const torch::Tensor& x_in) {
    if (!applies(x_in)) {
        auto parts = x_in.chunk(2, -1);
        // The gate is a strided half; LibTorch 1.13's CPU gelu is scalar on strided input. GPUs
        // read it through strides at full speed: no copy of half the FF's widest tensor there.
        return parts[0] * torch::gelu(x_in.is_cpu() ? parts[1].contiguous() : parts[1]);
    }
    RECORD_FUNCTION("loopy::geglu", std::vector<c10::IValue>({x_in}));
    const auto x = x_in.contiguous();
    const int64_t n = x.size(-1) / 2;
    auto shape = x.sizes().vec();
    shape.back() = n;
    auto y = torch::empty(shape, x.options());
    const Rows rows{x.data_ptr<float>(), y.data_ptr<float>(), n};
    const auto geglu = geglu_kernel();
    at::parallel_for(0, x.numel() / (2 * n), std::max<int64_t>(1, 16384 / n),
                     [&](int64_t begin, int64_t end) { geglu(rows, begin, end); });
    return y;
}

}  // namespace loopy::model
