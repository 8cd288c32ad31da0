#include "model/cpu_attention.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/torch_compat.h"

// An AVX2/FMA copy of the kernel next to the portable one, chosen by what the CPU supports:
// Debian builds for every x86-64, most CPUs have AVX2.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define LOOPY_HAVE_AVX2_KERNEL 1
#define LOOPY_AVX2_FMA __attribute__((target("avx2,fma")))
#else
#define LOOPY_HAVE_AVX2_KERNEL 0
#endif
#if defined(__GNUC__)
#define LOOPY_INLINE inline __attribute__((always_inline))  // compiled into each copy
#else
#define LOOPY_INLINE inline
#endif

namespace loopy::model {

namespace {

std::atomic<bool>& enabled_flag() {
    static std::atomic<bool> flag{[] {
        const char* env = std::getenv("LOOPY_CPU_ATTENTION");
        return !(env && std::string(env) == "0");
    }()};
    return flag;
}

// One (item, head) matrix: strides in floats; rows of q, k, v have unit stride along D.
struct MatrixView {
    const float* q;
    const float* k;
    const float* v;
    float* out;            // row i at out + i * out_row
    const bool* key_mask;  // [Lk] or null
    int64_t q_row, k_row, v_row, out_row;
};

struct Shape {
    int64_t lq, lk, d;
    float scale;
};

// The vectors never cross a non-inlined call, so the ABI of passing them does not matter.
#pragma GCC diagnostic ignored "-Wpsabi"

// Eight floats: GCC/Clang vector extensions, lowered to AVX2 in the AVX2 copy and to SSE pairs
// in the portable one.
typedef float Vec8 __attribute__((vector_size(32)));
typedef int32_t Int8 __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

LOOPY_INLINE Vec8 load8(const float* p) {
    Vec8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
LOOPY_INLINE void store8(float* p, Vec8 v) {
    std::memcpy(p, &v, sizeof v);
}
LOOPY_INLINE Vec8 splat8(float x) {
    return Vec8{x, x, x, x, x, x, x, x};
}
LOOPY_INLINE float sum8(Vec8 v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}
LOOPY_INLINE float max8(Vec8 v) {
    float m = v[0];
    for (int i = 1; i < kLanes; ++i)
        m = std::max(m, v[i]);
    return m;
}

// Below this a probability is 0: exp(-64) is 1.6e-28 of the row's largest, far under float
// precision, and the products of smaller ones with the values would be denormal numbers, which
// cost x86 CPUs a hundred cycles each (trained attention is sharp: it happens all the time).
constexpr float kExpCutoff = -64.0f;

// exp(x) for x <= 0 (or -inf), 0 below kExpCutoff: Cephes' polynomial on x - n ln 2, and 2^n
// built in the exponent bits. Relative error about 2e-7.
LOOPY_INLINE Vec8 exp_nonpositive(Vec8 x) {
    const Vec8 xi = x < splat8(kExpCutoff) ? splat8(kExpCutoff) : x;
    Vec8 fx = xi * 1.44269504088896341f;
    fx = (fx + 12582912.0f) - 12582912.0f;  // round to nearest without a library call
    const Vec8 r = xi - fx * 0.693359375f - fx * -2.12194440e-4f;
    Vec8 y = splat8(1.9875691500e-4f);
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    const Int8 bits = (__builtin_convertvector(fx, Int8) + 127) << 23;
    Vec8 two_n;
    std::memcpy(&two_n, &bits, sizeof two_n);
    return x < splat8(kExpCutoff) ? splat8(0.0f) : y * two_n;
}

// From this many keys on, p.v runs along the keys (values transposed), like q.k^T: eight
// independent sums per row instead of one pass over every value row per query.
constexpr int64_t kLongKeys = 64;

// Scratch of one thread, padded to whole vectors: keys (and for long rows values) transposed
// [D, Lk], so that products run along contiguous keys; one row of scores; the key mask as
// 0 / -inf.
struct Scratch {
    int64_t lk_padded;
    std::vector<float> keys_t, values_t, scores, mask_add;
    explicit Scratch(const Shape& s)
        : lk_padded((s.lk + kLanes - 1) / kLanes * kLanes),
          keys_t(static_cast<size_t>(s.d * lk_padded), 0.0f),
          values_t(s.lk >= kLongKeys ? static_cast<size_t>(s.d * lk_padded) : 0, 0.0f),
          scores(static_cast<size_t>(lk_padded)),
          mask_add(static_cast<size_t>(lk_padded), kMinusInf) {}
};

// Scores of query row qi against every key, masked and turned into unnormalised probabilities;
// returns their sum.
template <int D>
LOOPY_INLINE float row_probabilities(const float* qi, const Shape& s, Scratch& scratch) {
    const int64_t d = D > 0 ? D : s.d, n = scratch.lk_padded;
    float* __restrict p = scratch.scores.data();
    const float* __restrict kt = scratch.keys_t.data();
    const float* __restrict madd = scratch.mask_add.data();
    Vec8 max = splat8(kMinusInf);
    for (int64_t j = 0; j < n; j += kLanes) {
        Vec8 acc = load8(madd + j);  // -inf for masked and padding keys
        for (int64_t c = 0; c < d; ++c)
            acc += (qi[c] * s.scale) * load8(kt + c * n + j);
        store8(p + j, acc);
        max = max > acc ? max : acc;
    }
    const Vec8 row_max = splat8(max8(max));
    Vec8 sum[2] = {};  // two chains of additions
    for (int64_t j = 0; j < n; j += kLanes) {
        const Vec8 e = exp_nonpositive(load8(p + j) - row_max);
        store8(p + j, e);
        sum[(j / kLanes) & 1] += e;
    }
    return sum8(sum[0] + sum[1]);
}

// out_i = sum_j p_j v_j / sum, the head width D a multiple of 8 (or 0: scalar, any s.d). Narrow
// heads sum into several independent accumulators: one would make every key wait for the
// previous key's addition (4 cycles each).
template <int D>
LOOPY_INLINE void weighted_values(const MatrixView& m, const Shape& s, const float* p, float inv,
                                  float* out) {
    if constexpr (D > 0 && D % kLanes == 0) {
        constexpr int kVectors = D / kLanes;
        constexpr int kChains = kVectors >= 4 ? 1 : 4 / kVectors;
        Vec8 acc[kChains][kVectors] = {};
        int64_t j = 0;
        for (; j + kChains <= s.lk; j += kChains)
            for (int a = 0; a < kChains; ++a) {
                const Vec8 pj = splat8(p[j + a]);
                const float* vj = m.v + (j + a) * m.v_row;
                for (int c = 0; c < kVectors; ++c)
                    acc[a][c] += pj * load8(vj + c * kLanes);
            }
        for (; j < s.lk; ++j) {
            const Vec8 pj = splat8(p[j]);
            const float* vj = m.v + j * m.v_row;
            for (int c = 0; c < kVectors; ++c)
                acc[0][c] += pj * load8(vj + c * kLanes);
        }
        for (int c = 0; c < kVectors; ++c) {
            Vec8 total = acc[0][c];
            for (int a = 1; a < kChains; ++a)
                total += acc[a][c];
            store8(out + c * kLanes, total * inv);
        }
    } else {
        for (int64_t c = 0; c < s.d; ++c)
            out[c] = 0.0f;
        for (int64_t j = 0; j < s.lk; ++j)
            for (int64_t c = 0; c < s.d; ++c)
                out[c] += p[j] * m.v[j * m.v_row + c];
        for (int64_t c = 0; c < s.d; ++c)
            out[c] *= inv;
    }
}

// The same over the transposed values (D a multiple of 8): out_c = p . v_c along the keys, eight
// channels at a time.
template <int D>
LOOPY_INLINE void weighted_values_t(const Scratch& scratch, float inv, float* out) {
    static_assert(D > 0 && D % kLanes == 0, "whole vectors of channels");
    const int64_t n = scratch.lk_padded;
    const float* __restrict p = scratch.scores.data();
    for (int c0 = 0; c0 < D; c0 += kLanes) {
        const float* __restrict vt = scratch.values_t.data() + c0 * n;
        Vec8 acc[kLanes] = {};
        for (int64_t j = 0; j < n; j += kLanes) {
            const Vec8 pj = load8(p + j);
            for (int c = 0; c < kLanes; ++c)
                acc[c] += pj * load8(vt + c * n + j);
        }
        for (int c = 0; c < kLanes; ++c)
            out[c0 + c] = sum8(acc[c]) * inv;
    }
}

template <int D>
LOOPY_INLINE void attend_rows(const MatrixView& m, const Shape& s, Scratch& scratch) {
    const int64_t d = D > 0 ? D : s.d, n = scratch.lk_padded;
    float* kt = scratch.keys_t.data();
    for (int64_t j = 0; j < s.lk; ++j)
        for (int64_t c = 0; c < d; ++c)
            kt[c * n + j] = m.k[j * m.k_row + c];
    for (int64_t j = 0; j < s.lk; ++j)
        scratch.mask_add[static_cast<size_t>(j)] = !m.key_mask || m.key_mask[j] ? 0.0f : kMinusInf;
    constexpr bool kWholeVectors = D > 0 && D % kLanes == 0;
    const bool transposed = kWholeVectors && s.lk >= kLongKeys;
    if (transposed) {
        float* vt = scratch.values_t.data();
        for (int64_t j = 0; j < s.lk; ++j)
            for (int64_t c = 0; c < d; ++c)
                vt[c * n + j] = m.v[j * m.v_row + c];
    }
    for (int64_t i = 0; i < s.lq; ++i) {
        const float sum = row_probabilities<D>(m.q + i * m.q_row, s, scratch);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // no key kept: zeros, not NaN
        float* out = m.out + i * m.out_row;
        if constexpr (kWholeVectors) {
            if (transposed) {
                weighted_values_t<D>(scratch, inv, out);
                continue;
            }
        }
        weighted_values<D>(m, s, scratch.scores.data(), inv, out);
    }
}

// The head widths of the tiny configuration (8, 16), AnimateDiff and SD 1.5's first level (40)
// and 32/64 get unrolled loops; any other width the scalar path.
LOOPY_INLINE void attend_by_width(const MatrixView& m, const Shape& s, Scratch& scratch) {
    switch (s.d) {
        case 8:
            return attend_rows<8>(m, s, scratch);
        case 16:
            return attend_rows<16>(m, s, scratch);
        case 32:
            return attend_rows<32>(m, s, scratch);
        case 40:
            return attend_rows<40>(m, s, scratch);
        case 64:
            return attend_rows<64>(m, s, scratch);
        default:
            return attend_rows<0>(m, s, scratch);
    }
}

void attend_matrix_portable(const MatrixView& m, const Shape& s, Scratch& scratch) {
    attend_by_width(m, s, scratch);
}

#if LOOPY_HAVE_AVX2_KERNEL
LOOPY_AVX2_FMA void attend_matrix_avx2(const MatrixView& m, const Shape& s, Scratch& scratch) {
    attend_by_width(m, s, scratch);
}
#endif

using AttendFn = void (*)(const MatrixView&, const Shape&, Scratch&);

AttendFn pick_kernel() {
#if LOOPY_HAVE_AVX2_KERNEL
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return attend_matrix_avx2;
#endif
    return attend_matrix_portable;
}

// [..., D] with unit stride along D (a copy only when it is not).
torch::Tensor unit_last_stride(const torch::Tensor& t) {
    return t.stride(-1) == 1 ? t : t.contiguous();
}

}  // namespace

void set_cpu_attention_enabled(bool enabled) {
    enabled_flag().store(enabled);
}

bool cpu_attention_enabled() {
    return enabled_flag().load();
}

bool cpu_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
    if (!cpu_attention_enabled()) return false;
    for (const auto* t : {&q, &k, &v})
        if (!t->defined() || !t->device().is_cpu() || t->scalar_type() != torch::kFloat32 ||
            t->dim() != 4 || t->is_mkldnn() || t->is_sparse())
            return false;
    if (torch::GradMode::is_enabled() &&
        (q.requires_grad() || k.requires_grad() || v.requires_grad()))
        return false;
    if (!(q.size(0) == k.size(0) && q.size(0) == v.size(0) && q.size(1) == k.size(1) &&
          q.size(1) == v.size(1) && k.size(2) == v.size(2) && q.size(3) == k.size(3) &&
          q.size(3) == v.size(3) && k.size(2) > 0))
        return false;
    // Measured on a 2-core AVX2 machine: 3-13x faster than LibTorch 1.13 for narrow heads
    // (the temporal, audio and tiny spatial attentions); wide heads over long sequences (SD 1.5's
    // VAE, 512 channels over 4096 tokens) stay with BLAS.
    const int64_t d = q.size(3), products = q.size(2) * k.size(2);
    const bool unrolled = d % 8 == 0 && d <= 64;
    return (unrolled && (d <= 16 || products <= 65536)) || products * d < 65536;
}

torch::Tensor cpu_attention(const torch::Tensor& q_in, const torch::Tensor& k_in,
                            const torch::Tensor& v_in, const torch::Tensor& key_mask) {
    if (!cpu_attention_applies(q_in, k_in, v_in))
        throw Error("cpu_attention: needs CPU float32 [B, H, L, D] tensors without autograd, got " +
                    c10::str(q_in.sizes()) + ", " + c10::str(k_in.sizes()) + ", " +
                    c10::str(v_in.sizes()));
    // Named for `bench render --profile` and the FLOP counter (core/flop_counter.cpp).
    RECORD_FUNCTION("loopy::cpu_attention", std::vector<c10::IValue>({q_in, k_in, v_in}));
    const auto q = unit_last_stride(q_in), k = unit_last_stride(k_in), v = unit_last_stride(v_in);
    const int64_t b = q.size(0), h = q.size(1);
    const Shape shape{q.size(2), k.size(2), q.size(3),
                      static_cast<float>(1.0 / std::sqrt(static_cast<double>(q.size(3))))};
    torch::Tensor mask;
    if (key_mask.defined()) {
        if (key_mask.numel() != b * shape.lk)
            throw Error("cpu_attention: key mask must be [" + std::to_string(b) + ", " +
                        std::to_string(shape.lk) + "], got " + c10::str(key_mask.sizes()));
        mask = key_mask.to(torch::kCPU, torch::kBool).reshape({b, shape.lk}).contiguous();
    }
    auto out = torch::empty({b, shape.lq, h, shape.d}, q.options());
    const float* qp = q.data_ptr<float>();
    const float* kp = k.data_ptr<float>();
    const float* vp = v.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
    const int64_t work = std::max<int64_t>(1, shape.lq * shape.lk * shape.d);
    const int64_t grain = std::max<int64_t>(1, 32768 / work);  // enough work per thread
    static const AttendFn attend_matrix = pick_kernel();
    at::parallel_for(0, b * h, grain, [&](int64_t begin, int64_t end) {
        Scratch scratch(shape);
        for (int64_t task = begin; task < end; ++task) {
            const int64_t bi = task / h, hi = task % h;
            MatrixView m;
            m.q = qp + bi * q.stride(0) + hi * q.stride(1);
            m.k = kp + bi * k.stride(0) + hi * k.stride(1);
            m.v = vp + bi * v.stride(0) + hi * v.stride(1);
            m.out = op + (bi * shape.lq * h + hi) * shape.d;
            m.key_mask = mp ? mp + bi * shape.lk : nullptr;
            m.q_row = q.stride(2);
            m.k_row = k.stride(2);
            m.v_row = v.stride(2);
            m.out_row = h * shape.d;
            attend_matrix(m, shape, scratch);
        }
    });
    return out.transpose(1, 2);
}

torch::Tensor attention_product(const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& key_mask) {
    if (cpu_attention_applies(q, k, v)) return cpu_attention(q, k, v, key_mask);
    if (!key_mask.defined()) return compat::scaled_dot_product_attention(q, k, v);
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    auto scores = torch::matmul(q * scale, k.transpose(-2, -1));  // scaled first: fp16 range
    scores.masked_fill_(key_mask.to(torch::kBool).logical_not().view({k.size(0), 1, 1, k.size(2)}),
                        -std::numeric_limits<float>::infinity());
    return torch::matmul(scores.softmax(-1), v);
}

}  // namespace loopy::model
