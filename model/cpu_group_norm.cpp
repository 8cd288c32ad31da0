#include "model/cpu_group_norm.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/cpu_dispatch.h"
#include "model/cpu_vec16.h"
#include "model/cpu_vec8.h"

namespace loopy::model {

namespace {

using namespace simd;
namespace F = torch::nn::functional;

EnvironmentSwitch& enabled_switch() {
    static EnvironmentSwitch on_off{"LOOPY_CPU_GROUP_NORM"};
    return on_off;
}

// x viewed as [items, frames, channels, positions]: a group's statistics span its channels at
// every frame and position of one item.
struct Layout {
    int64_t items, frames, channels, positions, groups;
};

struct StatisticsArgs {
    const float* x;
    const float* shift;  // [shift_items, channels] or null
    int64_t shift_items;
    const float* gamma;
    const float* beta;
    float eps;
    Layout l;
    float* scale;   // [items, channels]: y = x * scale + offset
    float* offset;  // [items, channels]
};

LOOPY_INLINE float row_sum(const float* __restrict x, int64_t n) {
    Vec8 acc[2] = {};
    const int64_t whole = n / (2 * kLanes) * (2 * kLanes);
    for (int64_t i = 0; i < whole; i += 2 * kLanes) {
        acc[0] += load8(x + i);
        acc[1] += load8(x + i + kLanes);
    }
    float sum = sum8(acc[0] + acc[1]);
    for (int64_t i = whole; i < n; ++i)
        sum += x[i];
    return sum;
}

LOOPY_INLINE float row_squares(const float* __restrict x, int64_t n, float centre) {
    Vec8 acc[2] = {};
    const Vec8 c = splat8(centre);
    const int64_t whole = n / (2 * kLanes) * (2 * kLanes);
    for (int64_t i = 0; i < whole; i += 2 * kLanes) {
        const Vec8 a = load8(x + i) - c, b = load8(x + i + kLanes) - c;
        acc[0] += a * a;
        acc[1] += b * b;
    }
    float sum = sum8(acc[0] + acc[1]);
    for (int64_t i = whole; i < n; ++i)
        sum += (x[i] - centre) * (x[i] - centre);
    return sum;
}

// Groups [begin, end) of items x groups: the mean, then the variance around it (two passes, as
// LibTorch; the tiny model's groups are at most a few hundred KB, so the second pass reads from
// cache), turned into each channel's scale and offset. Rows sum in float vectors, the group in
// double.
LOOPY_INLINE void group_statistics(const StatisticsArgs& a, int64_t begin, int64_t end) {
    const Layout& l = a.l;
    const int64_t per_group = l.channels / l.groups, s = l.positions;
    const double count = static_cast<double>(l.frames * per_group * s);
    for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / l.groups, c0 = task % l.groups * per_group;
        auto shift_of = [&](int64_t c) {
            return a.shift ? a.shift[(n % a.shift_items) * l.channels + c] : 0.0f;
        };
        auto row = [&](int64_t f, int64_t c) {
            return a.x + ((n * l.frames + f) * l.channels + c) * s;
        };
        double sum = 0.0;
        for (int64_t f = 0; f < l.frames; ++f)
            for (int64_t c = c0; c < c0 + per_group; ++c)
                sum += static_cast<double>(row_sum(row(f, c), s)) +
                       static_cast<double>(s) * shift_of(c);
        const float mean = static_cast<float>(sum / count);
        double squares = 0.0;
        for (int64_t f = 0; f < l.frames; ++f)
            for (int64_t c = c0; c < c0 + per_group; ++c)
                squares += row_squares(row(f, c), s, mean - shift_of(c));
        const float rstd = 1.0f / std::sqrt(static_cast<float>(squares / count) + a.eps);
        for (int64_t c = c0; c < c0 + per_group; ++c) {
            const float scale = rstd * a.gamma[c];
            a.scale[n * l.channels + c] = scale;
            a.offset[n * l.channels + c] = a.beta[c] + (shift_of(c) - mean) * scale;
        }
    }
}

LOOPY_INLINE float silu_scalar(float y) {
    return y / (1.0f + std::exp(-y));
}

// y * sigmoid(y) from exp(-|y|), which never overflows: y / (1 + e) above zero, y e / (1 + e)
// below.
LOOPY_INLINE Vec8 silu8(Vec8 y) {
    const Vec8 e = exp_nonpositive(y < 0.0f ? y : -y);
    return (y < 0.0f ? y * e : y) / (e + 1.0f);
}

struct ApplyArgs {
    const float* x;
    float* y;
    const float* scale;
    const float* offset;
    int64_t positions;
    bool silu;
};

// Rows [begin, end) of [items * channels, positions]: x * scale + offset, SiLU after if asked.
LOOPY_INLINE void apply_rows(const ApplyArgs& a, int64_t begin, int64_t end) {
    const int64_t n = a.positions, whole = n / kLanes * kLanes;
    for (int64_t r = begin; r < end; ++r) {
        const float* __restrict x = a.x + r * n;
        float* __restrict y = a.y + r * n;
        const Vec8 scale = splat8(a.scale[r]), offset = splat8(a.offset[r]);
        if (a.silu) {
            for (int64_t i = 0; i < whole; i += kLanes)
                store8(y + i, silu8(load8(x + i) * scale + offset));
            for (int64_t i = whole; i < n; ++i)
                y[i] = silu_scalar(x[i] * a.scale[r] + a.offset[r]);
        } else {
            for (int64_t i = 0; i < whole; i += kLanes)
                store8(y + i, load8(x + i) * scale + offset);
            for (int64_t i = whole; i < n; ++i)
                y[i] = x[i] * a.scale[r] + a.offset[r];
        }
    }
}

#if LOOPY_HAVE_AVX2_KERNEL
// silu8 sixteen lanes at a time, the division by a reciprocal estimate and a Newton step: the
// division and the exponential were most of the time of a ResNet block's norms.
LOOPY_AVX512 inline Vec16 silu16(Vec16 y) {
    const Vec16 zero = splat16(0.0f);
    const Vec16 e = exp_nonpositive16(y < zero ? y : -y);
    return (y < zero ? y * e : y) * reciprocal16(e + splat16(1.0f));
}

LOOPY_AVX512 __attribute__((noinline)) void apply_rows_silu_avx512(const ApplyArgs& a,
                                                                   int64_t begin, int64_t end) {
    const int64_t n = a.positions, whole = n / 16 * 16;
    for (int64_t r = begin; r < end; ++r) {
        const float* x = a.x + r * n;
        float* y = a.y + r * n;
        const Vec16 scale = splat16(a.scale[r]), offset = splat16(a.offset[r]);
        for (int64_t i = 0; i < whole; i += 16)
            storeu16(y + i, silu16(loadu16(x + i) * scale + offset));
        for (int64_t i = whole; i < n; ++i)
            y[i] = silu_scalar(x[i] * a.scale[r] + a.offset[r]);
    }
}
#endif

using ApplyRows = void (*)(const ApplyArgs&, int64_t, int64_t);

ApplyRows apply_kernel(bool silu) {
    static const ApplyRows portable_or_avx2 = CpuKernel<apply_rows>::pick();
#if LOOPY_HAVE_AVX2_KERNEL
    if (silu && cpu_avx512_active()) return apply_rows_silu_avx512;
#endif
    (void)silu;
    return portable_or_avx2;
}

struct TokenArgs {
    const float* x;  // [items, frames, channels, positions]
    float* y;        // [items, positions, frames, channels]
    const float* scale;
    const float* offset;
    Layout l;
};

// Frames [begin, end) of items x frames into the tokens' layout: each output row of C channels
// is written whole, reading one float from each channel's row.
LOOPY_INLINE void apply_tokens(const TokenArgs& a, int64_t begin, int64_t end) {
    const Layout& l = a.l;
    const int64_t c_n = l.channels, s_n = l.positions, f_n = l.frames;
    for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / f_n, f = task % f_n;
        const float* __restrict x = a.x + task * c_n * s_n;
        const float* __restrict scale = a.scale + n * c_n;
        const float* __restrict offset = a.offset + n * c_n;
        for (int64_t s = 0; s < s_n; ++s) {
            float* __restrict y = a.y + ((n * s_n + s) * f_n + f) * c_n;
            for (int64_t c = 0; c < c_n; ++c)
                y[c] = x[c * s_n + s] * scale[c] + offset[c];
        }
    }
}

// The statistics of every group of x (contiguous), as per-channel scales and offsets.
std::pair<torch::Tensor, torch::Tensor> statistics(const torch::nn::GroupNormImpl& norm,
                                                   const torch::Tensor& x, const Layout& l,
                                                   const torch::Tensor& shift) {
    auto scale = torch::empty({l.items, l.channels}, x.options());
    auto offset = torch::empty_like(scale);
    const StatisticsArgs args{x.data_ptr<float>(),
                              shift.defined() ? shift.data_ptr<float>() : nullptr,
                              shift.defined() ? shift.size(0) : 1,
                              norm.weight.data_ptr<float>(),
                              norm.bias.data_ptr<float>(),
                              static_cast<float>(norm.options.eps()),
                              l,
                              scale.data_ptr<float>(),
                              offset.data_ptr<float>()};
    static const auto kernel = CpuKernel<group_statistics>::pick();
    const int64_t per_group = l.frames * l.channels / l.groups * l.positions;
    at::parallel_for(0, l.items * l.groups, std::max<int64_t>(1, 32768 / per_group),
                     [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
    return {scale, offset};
}

torch::Tensor libtorch_group_norm(torch::nn::GroupNorm& norm, const torch::Tensor& x,
                                  const torch::Tensor& shift, bool silu) {
    auto h = x;
    if (shift.defined()) {
        std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
        shape[0] = shift.size(0);
        shape[1] = shift.size(1);
        h = x + shift.view(shape);
    }
    h = norm(h);
    return silu ? F::silu(h) : h;
}

}  // namespace

void set_cpu_group_norm_enabled(bool enabled) {
    enabled_switch().set(enabled);
}

bool cpu_group_norm_enabled() {
    return enabled_switch().on();
}

bool cpu_group_norm_applies(const torch::nn::GroupNormImpl& norm, const torch::Tensor& x) {
    if (!cpu_group_norm_enabled() || !norm.options.affine() || x.dim() < 3 || x.numel() == 0)
        return false;
    for (const auto* t : {&x, &norm.weight, &norm.bias})
        if (!t->defined() || !t->device().is_cpu() || t->scalar_type() != torch::kFloat32)
            return false;
    // Channels that do not divide into the groups: LibTorch's operator says so.
    const int64_t groups = norm.options.num_groups();
    if (x.size(1) != norm.options.num_channels() || groups <= 0 || x.size(1) % groups != 0)
        return false;
    if (!norm.weight.is_contiguous() || !norm.bias.is_contiguous()) return false;
    return !(torch::GradMode::is_enabled() &&
             (x.requires_grad() || norm.weight.requires_grad() || norm.bias.requires_grad()));
}

torch::Tensor forward_group_norm(torch::nn::GroupNorm& norm, const torch::Tensor& x_in,
                                 const torch::Tensor& shift_in, bool silu) {
    const bool shift_fits =
        !shift_in.defined() ||
        (shift_in.dim() == 2 && shift_in.size(1) == x_in.size(1) &&
         (shift_in.size(0) == 1 || shift_in.size(0) == x_in.size(0)) &&
         shift_in.device().is_cpu() && shift_in.scalar_type() == torch::kFloat32 &&
         !(torch::GradMode::is_enabled() && shift_in.requires_grad()));
    if (!shift_fits || !cpu_group_norm_applies(*norm, x_in))
        return libtorch_group_norm(norm, x_in, shift_in, silu);
    RECORD_FUNCTION("loopy::group_norm", std::vector<c10::IValue>({x_in}));
    const auto x = x_in.contiguous();
    const auto shift = shift_in.defined() ? shift_in.contiguous() : shift_in;
    const Layout l{x.size(0), 1, x.size(1), x.numel() / (x.size(0) * x.size(1)),
                   norm->options.num_groups()};
    const auto [scale, offset] = statistics(*norm, x, l, shift);
    auto y = torch::empty_like(x);
    const ApplyArgs args{x.data_ptr<float>(),      y.data_ptr<float>(), scale.data_ptr<float>(),
                         offset.data_ptr<float>(), l.positions,         silu};
    const auto kernel = apply_kernel(silu);
    at::parallel_for(0, l.items * l.channels, std::max<int64_t>(1, 16384 / l.positions),
                     [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
    return y;
}

torch::Tensor group_norm_tokens(torch::nn::GroupNorm& norm, const torch::Tensor& x_in,
                                int64_t num_frames) {
    const int64_t bf = x_in.size(0), c = x_in.size(1);
    if (num_frames <= 0 || bf % num_frames != 0)
        throw Error("group_norm_tokens: " + std::to_string(bf) +
                    " frames are not whole videos of " + std::to_string(num_frames));
    const int64_t b = bf / num_frames, positions = x_in.numel() / std::max<int64_t>(1, bf * c);
    if (!cpu_group_norm_applies(*norm, x_in)) {
        auto shape = x_in.sizes().vec();
        shape[0] = num_frames;
        shape.insert(shape.begin(), b);                      // [B, F, C, *]
        auto h = norm(x_in.reshape(shape).transpose(1, 2));  // [B, C, F, *]
        return h.reshape({b, c, num_frames, positions})
            .permute({0, 3, 2, 1})
            .reshape({b * positions, num_frames, c});
    }
    RECORD_FUNCTION("loopy::group_norm", std::vector<c10::IValue>({x_in}));
    const auto x = x_in.contiguous();
    const Layout l{b, num_frames, c, positions, norm->options.num_groups()};
    const auto [scale, offset] = statistics(*norm, x, l, torch::Tensor());
    auto y = torch::empty({b * positions, num_frames, c}, x.options());
    const TokenArgs args{x.data_ptr<float>(), y.data_ptr<float>(), scale.data_ptr<float>(),
                         offset.data_ptr<float>(), l};
    static const auto kernel = CpuKernel<apply_tokens>::pick();
    at::parallel_for(0, b * num_frames, std::max<int64_t>(1, 16384 / (c * positions)),
                     [&](int64_t begin, int64_t end) { kernel(args, begin, end); });
    return y;
}

}  // namespace loopy::model
