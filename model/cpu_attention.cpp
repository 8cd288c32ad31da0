#include "model/cpu_attention.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/torch_compat.h"
#include "model/cpu_dispatch.h"
#include "model/cpu_vec16.h"
#include "model/cpu_vec8.h"

namespace loopy::model {

namespace {

using namespace simd;

EnvironmentSwitch& enabled_switch() {
    static EnvironmentSwitch on_off{"LOOPY_CPU_ATTENTION"};
    return on_off;
}

// LOOPY_FUSED_MASKED_ATTENTION=1: masked attention by LibTorch 2.x's SDPA instead of its math
// operators (compat::scaled_dot_product_attention). Off: on an H200 (LibTorch 2.11, float16,
// SD 1.5's inter-clip shapes, 12 queries over 32 keys) SDPA took cuDNN's kernel at ~34 ms a step
// against ~22 ms for the math, and the step went 303 -> 326 ms (bench/results/README.md).
bool fused_masked_attention() {
    static const EnvironmentSwitch on_off{"LOOPY_FUSED_MASKED_ATTENTION", false};
    return on_off.on();
}

// Up to this many key/value parts per call (KeyValueParts).
constexpr int kMaxParts = 4;

// One part of one (item, head) matrix's keys and values: strides in floats, unit stride along D.
struct KeyPart {
    const float* k;
    const float* v;
    int64_t k_row, v_row, len;
};

// One (item, head) matrix.
struct MatrixView {
    const float* q;
    float* out;            // row i at out + i * out_row
    const bool* key_mask;  // [all keys] or null
    int64_t q_row, out_row;
    KeyPart parts[kMaxParts];
    int num_parts;
};

struct Shape {
    int64_t lq, lk, d;  // lk: all keys of all parts
    float scale;
};

// From this many kept keys on, p.v runs along the keys (values transposed), like q.k^T: eight
// independent sums per row instead of one pass over every value row per query.
constexpr int64_t kLongKeys = 64;

// Floats on whole cache lines: std::vector's 16-byte alignment split every other vector load of
// the scratch rows across two lines.
class AlignedFloats {
  public:
    AlignedFloats(size_t n, float fill)
        : data_(static_cast<float*>(::operator new[](n * sizeof(float), kAlignment))) {
        std::fill_n(data_.get(), n, fill);
    }
    float* data() { return data_.get(); }
    const float* data() const { return data_.get(); }
    float& operator[](size_t i) { return data_[i]; }

  private:
    static constexpr std::align_val_t kAlignment{64};
    struct Free {
        void operator()(float* p) const { ::operator delete[](p, kAlignment); }
    };
    std::unique_ptr<float[], Free> data_;
};

// Keys are padded to whole vectors of this many: the widest vectors the kernels use (AVX-512).
constexpr int64_t kKeyPadding = 16;

// Scratch of one thread. The matrix's kept keys (masked ones are left out) transposed [D, keys],
// rows `stride` floats apart, so that products run along contiguous keys; the values the same way
// for long rows, else as contiguous rows [keys, D]; one row of scores; 0 for kept keys and -inf
// for the padding up to whole vectors. Short rows taken eight or sixteen queries at a time read
// one key channel at a time: for them, pointers to the kept rows where they are instead.
struct Scratch {
    int64_t stride;
    int64_t keys = 0, padded = 0;  // this matrix's kept keys, and rounded up to whole vectors
    bool transposed = false;       // values transposed (long rows of whole vectors of channels)
    bool by_query = false;         // short rows, queries in the lanes: key_rows, value_rows
    bool avx512 = cpu_avx512_active();  // long rows of 8 or 16 channels by long_rows_avx512
    AlignedFloats keys_t, values, scores, mask_add;
    // Short rows taken by query read the kept keys' and values' rows where they are.
    std::vector<const float*> key_rows, value_rows;
    explicit Scratch(const Shape& s)
        // One vector more than the padded length: rows 2 KB apart (512 keys) would all fall
        // into the same L1 sets, and the D streams of q.k and p.v evicted each other.
        : stride((s.lk + kKeyPadding - 1) / kKeyPadding * kKeyPadding + kKeyPadding),
          keys_t(static_cast<size_t>(s.d * stride), 0.0f),
          values(static_cast<size_t>(s.d * stride), 0.0f),
          // One row of scores, or [keys, 8 or 16 queries].
          scores(static_cast<size_t>(kKeyPadding * stride), 0.0f),
          mask_add(static_cast<size_t>(stride), kMinusInf),
          key_rows(static_cast<size_t>(s.lk)),
          value_rows(static_cast<size_t>(s.lk)) {}
};

// Copies the kept keys (and values) of matrix m into the scratch, or notes where their rows are
// (short rows taken by query).
template <int D>
LOOPY_INLINE void gather_keys(const MatrixView& m, const Shape& s, Scratch& scratch) {
    const int64_t d = D > 0 ? D : s.d, stride = scratch.stride;
    int64_t kept = s.lk;
    if (m.key_mask) {
        kept = 0;
        for (int64_t j = 0; j < s.lk; ++j)
            kept += m.key_mask[j] ? 1 : 0;
    }
    scratch.keys = kept;
    scratch.padded = (kept + kKeyPadding - 1) / kKeyPadding * kKeyPadding;
    scratch.transposed = D > 0 && D % kLanes == 0 && kept >= kLongKeys;
    scratch.by_query = D > 0 && D % kLanes == 0 && !scratch.transposed && s.lq >= kLanes / 2;
    float* kt = scratch.keys_t.data();
    float* vs = scratch.values.data();
    int64_t n = 0, g = 0;
    for (int p = 0; p < m.num_parts; ++p) {
        const KeyPart& part = m.parts[p];
        for (int64_t j = 0; j < part.len; ++j, ++g) {
            if (m.key_mask && !m.key_mask[g]) continue;
            const float* kj = part.k + j * part.k_row;
            const float* vj = part.v + j * part.v_row;
            if (scratch.by_query) {  // rows where they are: no copy
                scratch.key_rows[static_cast<size_t>(n)] = kj;
                scratch.value_rows[static_cast<size_t>(n)] = vj;
                ++n;
                continue;
            }
            for (int64_t c = 0; c < d; ++c)
                kt[c * stride + n] = kj[c];
            if (scratch.transposed) {
                for (int64_t c = 0; c < d; ++c)
                    vs[c * stride + n] = vj[c];
            } else {
                for (int64_t c = 0; c < d; ++c)
                    vs[n * d + c] = vj[c];
            }
            ++n;
        }
    }
    if (scratch.by_query) return;  // no padding: the keys are whole rows
    for (int64_t j = 0; j < scratch.padded; ++j)
        scratch.mask_add[static_cast<size_t>(j)] = j < kept ? 0.0f : kMinusInf;
}

// Scores of query row qi against every kept key into scratch.scores (-inf for the padding);
// returns their maximum.
template <int D>
LOOPY_INLINE float row_scores(const float* qi, const Shape& s, Scratch& scratch) {
    const int64_t d = D > 0 ? D : s.d, n = scratch.padded, stride = scratch.stride;
    float* __restrict p = scratch.scores.data();
    const float* __restrict kt = scratch.keys_t.data();
    const float* __restrict madd = scratch.mask_add.data();
    Vec8 max = splat8(kMinusInf);
    if constexpr (D > 0) {
        // The scaled query in registers: stores to p might alias qi for all the compiler
        // knows, so it scaled and broadcast every channel again for every eight keys.
        Vec8 qs[D];
        for (int c = 0; c < D; ++c)
            qs[c] = splat8(qi[c] * s.scale);
        for (int64_t j = 0; j < n; j += kLanes) {
            Vec8 acc = load8(madd + j);  // -inf for the padding
            for (int c = 0; c < D; ++c)
                acc += qs[c] * load8(kt + c * stride + j);
            store8(p + j, acc);
            max = max > acc ? max : acc;
        }
        return max8(max);
    }
    for (int64_t j = 0; j < n; j += kLanes) {
        Vec8 acc = load8(madd + j);  // -inf for the padding
        for (int64_t c = 0; c < d; ++c)
            acc += (qi[c] * s.scale) * load8(kt + c * stride + j);
        store8(p + j, acc);
        max = max > acc ? max : acc;
    }
    return max8(max);
}

// The row's scores turned into unnormalised probabilities; returns their sum.
template <int D>
LOOPY_INLINE float row_probabilities(const float* qi, const Shape& s, Scratch& scratch) {
    const int64_t n = scratch.padded;
    const Vec8 row_max = splat8(row_scores<D>(qi, s, scratch));
    float* __restrict p = scratch.scores.data();
    Vec8 sum[2] = {};  // two chains of additions
    for (int64_t j = 0; j < n; j += kLanes) {
        const Vec8 e = exp_nonpositive(load8(p + j) - row_max);
        store8(p + j, e);
        sum[(j / kLanes) & 1] += e;
    }
    return sum8(sum[0] + sum[1]);
}

// out_i = sum_j p_j v_j / sum over the value rows, the head width D a multiple of 8 (or 0:
// scalar, any s.d). Narrow heads sum into several independent accumulators: one would make every
// key wait for the previous key's addition (4 cycles each).
template <int D>
LOOPY_INLINE void weighted_values(const Scratch& scratch, const Shape& s, float inv, float* out) {
    const float* p = scratch.scores.data();
    const float* values = scratch.values.data();
    const int64_t keys = scratch.keys;
    if constexpr (D > 0 && D % kLanes == 0) {
        constexpr int kVectors = D / kLanes;
        constexpr int kChains = kVectors >= 4 ? 1 : 4 / kVectors;
        Vec8 acc[kChains][kVectors] = {};
        int64_t j = 0;
        for (; j + kChains <= keys; j += kChains)
            for (int a = 0; a < kChains; ++a) {
                const Vec8 pj = splat8(p[j + a]);
                const float* vj = values + (j + a) * D;
                for (int c = 0; c < kVectors; ++c)
                    acc[a][c] += pj * load8(vj + c * kLanes);
            }
        for (; j < keys; ++j) {
            const Vec8 pj = splat8(p[j]);
            const float* vj = values + j * D;
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
        const int64_t d = s.d;
        for (int64_t c = 0; c < d; ++c)
            out[c] = 0.0f;
        for (int64_t j = 0; j < keys; ++j)
            for (int64_t c = 0; c < d; ++c)
                out[c] += p[j] * values[j * d + c];
        for (int64_t c = 0; c < d; ++c)
            out[c] *= inv;
    }
}

// The same over the transposed values (D a multiple of 8): out_c = p . v_c along the keys, eight
// channels at a time.
template <int D>
LOOPY_INLINE void weighted_values_t(const Scratch& scratch, float inv, float* out) {
    static_assert(D > 0 && D % kLanes == 0, "whole vectors of channels");
    const int64_t n = scratch.padded, stride = scratch.stride;
    const float* __restrict p = scratch.scores.data();
    for (int c0 = 0; c0 < D; c0 += kLanes) {
        const float* __restrict vt = scratch.values.data() + c0 * stride;
        Vec8 acc[kLanes] = {};
        for (int64_t j = 0; j < n; j += kLanes) {
            const Vec8 pj = load8(p + j);
            for (int c = 0; c < kLanes; ++c)
                acc[c] += pj * load8(vt + c * stride + j);
        }
        for (int c = 0; c < kLanes; ++c)
            out[c0 + c] = sum8(acc[c]) * inv;
    }
}

// One long row of eight channels in two passes: the scores and their maximum, then the
// exponentials going straight into their sum and p.v (nine accumulators, no second pass over
// stored probabilities). Half of the time of the tiny model's spatial attention went to exp and
// p.v over stored probabilities.
LOOPY_INLINE void long_row_8(const float* qi, const Shape& s, Scratch& scratch, float* out) {
    constexpr int D = 8;
    const int64_t n = scratch.padded, stride = scratch.stride;
    const Vec8 row_max = splat8(row_scores<D>(qi, s, scratch));
    const float* __restrict p = scratch.scores.data();
    const float* __restrict vt = scratch.values.data();
    Vec8 sum = {}, acc[D] = {};
    for (int64_t j = 0; j < n; j += kLanes) {
        const Vec8 e = exp_nonpositive(load8(p + j) - row_max);
        sum += e;
        for (int c = 0; c < D; ++c)
            acc[c] += e * load8(vt + c * stride + j);
    }
    const float inv = 1.0f / sum8(sum);  // >= 1: the row's largest score gives exp(0)
    for (int c = 0; c < D; ++c)
        out[c] = sum8(acc[c]) * inv;
}

#if LOOPY_HAVE_AVX2_KERNEL
// long_row_8 sixteen keys at a time (also for sixteen channels), for CPUs with AVX-512F: half the
// instructions per key in the spatial attention of the tiny model's first level (a third of its
// denoising step).
template <int D>
LOOPY_AVX512 inline void long_row_x16(const float* qi, const Shape& s, Scratch& scratch,
                                      float* out) {
    const int64_t n = scratch.padded, stride = scratch.stride;  // n: whole 16s (kKeyPadding)
    float* __restrict p = scratch.scores.data();
    const float* __restrict kt = scratch.keys_t.data();
    const float* __restrict vt = scratch.values.data();
    const float* __restrict madd = scratch.mask_add.data();
    Vec16 qs[D];
    for (int c = 0; c < D; ++c)
        qs[c] = splat16(qi[c] * s.scale);
    Vec16 max = splat16(kMinusInf);
    for (int64_t j = 0; j < n; j += 16) {
        Vec16 acc = load16(madd + j);  // -inf for the padding
        for (int c = 0; c < D; ++c)
            acc += qs[c] * load16(kt + c * stride + j);
        store16(p + j, acc);
        max = max > acc ? max : acc;
    }
    const Vec8 max8_lanes = __builtin_shufflevector(max, max, 0, 1, 2, 3, 4, 5, 6, 7);
    const Vec8 max8_high = __builtin_shufflevector(max, max, 8, 9, 10, 11, 12, 13, 14, 15);
    const Vec16 row_max = splat16(max8(max8_lanes > max8_high ? max8_lanes : max8_high));
    Vec16 sum = {}, acc[D] = {};
    for (int64_t j = 0; j < n; j += 16) {
        const Vec16 e = exp_nonpositive16(load16(p + j) - row_max);
        sum += e;
        for (int c = 0; c < D; ++c)
            acc[c] += e * load16(vt + c * stride + j);
    }
    const float inv = 1.0f / sum8(fold16(sum));  // >= 1: the largest score gives exp(0)
    for (int c = 0; c < D; ++c)
        out[c] = sum8(fold16(acc[c])) * inv;
}

// Every query row of m (long rows of 8 or 16 channels). Called, not inlined, from the AVX2 copy:
// compiling that copy for AVX-512 too made its eight-float loops slower (GCC 12: the temporal
// shapes took 1.8x as long).
template <int D>
LOOPY_AVX512 __attribute__((noinline)) void long_rows_avx512(const MatrixView& m, const Shape& s,
                                                             Scratch& scratch) {
    for (int64_t i = 0; i < s.lq; ++i)
        long_row_x16<D>(m.q + i * m.q_row, s, scratch, m.out + i * m.out_row);
}
#endif

// Short rows (kept keys < kLongKeys), D a multiple of 8, eight queries at a time: each vector
// lane is one query, so the maximum, sum and products need no horizontal reductions, and the
// keys' computations are independent of each other. One row at a time was one long chain of
// dependent operations per row (q.k, the row's maximum across the lanes, exp, the sum, p.v).
template <int D>
LOOPY_INLINE void short_rows_by_query(const MatrixView& m, const Shape& s, Scratch& scratch) {
    static_assert(D > 0 && D % kLanes == 0, "whole vectors of channels");
    const int64_t keys = scratch.keys;
    const float* const* key_rows = scratch.key_rows.data();  // the kept keys (gather_keys)
    const float* const* value_rows = scratch.value_rows.data();
    float* __restrict e = scratch.scores.data();  // [keys, 8 queries]
    for (int64_t i0 = 0; i0 < s.lq; i0 += kLanes) {
        const int64_t rows = std::min<int64_t>(kLanes, s.lq - i0);
        Vec8 qt[D];  // channel c of the eight queries, scaled (zero for missing rows)
        for (int c = 0; c < D; ++c)
            for (int r = 0; r < kLanes; ++r)
                qt[c][r] = r < rows ? m.q[(i0 + r) * m.q_row + c] * s.scale : 0.0f;
        Vec8 max = splat8(kMinusInf);
        for (int64_t j = 0; j < keys; ++j) {
            // Four independent sums: one made each key a chain of D dependent additions
            // (4 cycles each), which was most of the temporal layers' time.
            const float* kj = key_rows[j];
            Vec8 part[4] = {};
#pragma GCC unroll 64
            for (int c = 0; c < D; ++c)
                part[c % 4] += qt[c] * splat8(kj[c]);
            const Vec8 score = (part[0] + part[1]) + (part[2] + part[3]);
            store8(e + j * kLanes, score);
            max = max > score ? max : score;
        }
        Vec8 sum[2] = {};
        for (int64_t j = 0; j < keys; ++j) {
            const Vec8 ej = exp_nonpositive(load8(e + j * kLanes) - max);
            store8(e + j * kLanes, ej);
            sum[j & 1] += ej;
        }
        const Vec8 inv = 1.0f / (sum[0] + sum[1]);
        for (int c0 = 0; c0 < D; c0 += kLanes) {
            Vec8 acc[kLanes] = {};
            for (int64_t j = 0; j < keys; ++j) {
                const Vec8 ej = load8(e + j * kLanes);
                const float* vj = value_rows[j] + c0;
                for (int c = 0; c < kLanes; ++c)
                    acc[c] += ej * splat8(vj[c]);
            }
            for (int c = 0; c < kLanes; ++c)
                acc[c] *= inv;
            for (int64_t r = 0; r < rows; ++r)
                for (int c = 0; c < kLanes; ++c)
                    m.out[(i0 + r) * m.out_row + c0 + c] = acc[c][r];
        }
    }
}

#if LOOPY_HAVE_AVX2_KERNEL
// short_rows_by_query with sixteen queries in the lanes, for CPUs with AVX-512F: the temporal
// layers' 12 frames in one pass over the keys instead of a pass of eight and one of four.
template <int D>
LOOPY_AVX512 __attribute__((noinline)) void short_rows_by_query_x16(const MatrixView& m,
                                                                    const Shape& s,
                                                                    Scratch& scratch) {
    constexpr int kQueries = 16;
    const int64_t keys = scratch.keys;
    const float* const* key_rows = scratch.key_rows.data();  // the kept keys (gather_keys)
    const float* const* value_rows = scratch.value_rows.data();
    float* __restrict e = scratch.scores.data();  // [keys, 16 queries]
    for (int64_t i0 = 0; i0 < s.lq; i0 += kQueries) {
        const int64_t rows = std::min<int64_t>(kQueries, s.lq - i0);
        Vec16 qt[D];  // channel c of the sixteen queries, scaled (zero for missing rows)
        for (int c = 0; c < D; ++c)
            for (int r = 0; r < kQueries; ++r)
                qt[c][r] = r < rows ? m.q[(i0 + r) * m.q_row + c] * s.scale : 0.0f;
        Vec16 max = splat16(kMinusInf);
        for (int64_t j = 0; j < keys; ++j) {
            const float* kj = key_rows[j];
            Vec16 part[4] = {};  // independent chains, as in short_rows_by_query
#pragma GCC unroll 64
            for (int c = 0; c < D; ++c)
                part[c % 4] += qt[c] * splat16(kj[c]);
            const Vec16 score = (part[0] + part[1]) + (part[2] + part[3]);
            store16(e + j * kQueries, score);
            max = max > score ? max : score;
        }
        Vec16 sum[2] = {};
        for (int64_t j = 0; j < keys; ++j) {
            const Vec16 ej = exp_nonpositive16(load16(e + j * kQueries) - max);
            store16(e + j * kQueries, ej);
            sum[j & 1] += ej;
        }
        const Vec16 inv = splat16(1.0f) / (sum[0] + sum[1]);
        for (int c0 = 0; c0 < D; c0 += kLanes) {
            Vec16 acc[kLanes] = {};
            for (int64_t j = 0; j < keys; ++j) {
                const Vec16 ej = load16(e + j * kQueries);
                const float* vj = value_rows[j] + c0;
#pragma GCC unroll 8
                for (int c = 0; c < kLanes; ++c)
                    acc[c] += ej * splat16(vj[c]);
            }
            for (int c = 0; c < kLanes; ++c)
                acc[c] *= inv;
            for (int64_t r = 0; r < rows; ++r)
                for (int c = 0; c < kLanes; ++c)
                    m.out[(i0 + r) * m.out_row + c0 + c] = acc[c][r];
        }
    }
}
#endif

template <int D>
LOOPY_INLINE void attend_rows(const MatrixView& m, const Shape& s, Scratch& scratch) {
    gather_keys<D>(m, s, scratch);
    if (scratch.keys == 0) {  // every key masked: zeros, not NaN
        for (int64_t i = 0; i < s.lq; ++i)
            std::fill_n(m.out + i * m.out_row, s.d, 0.0f);
        return;
    }
    if constexpr (D > 0 && D % kLanes == 0) {
#if LOOPY_HAVE_AVX2_KERNEL
        if constexpr (D == 8 || D == 16) {  // more than eight queries: one pass of sixteen
            if (scratch.by_query && scratch.avx512 && s.lq > kLanes)
                return short_rows_by_query_x16<D>(m, s, scratch);
        }
#endif
        if (scratch.by_query) return short_rows_by_query<D>(m, s, scratch);
    }
#if LOOPY_HAVE_AVX2_KERNEL
    if constexpr (D == 8 || D == 16) {
        if (scratch.transposed && scratch.avx512) return long_rows_avx512<D>(m, s, scratch);
    }
#endif
    for (int64_t i = 0; i < s.lq; ++i) {
        const float* qi = m.q + i * m.q_row;
        float* out = m.out + i * m.out_row;
        if constexpr (D == 8) {
            if (scratch.transposed) {
                long_row_8(qi, s, scratch, out);
                continue;
            }
        }
        const float inv = 1.0f / row_probabilities<D>(qi, s, scratch);
        if constexpr (D > 0 && D % kLanes == 0) {
            if (scratch.transposed) {
                weighted_values_t<D>(scratch, inv, out);
                continue;
            }
        }
        weighted_values<D>(scratch, s, inv, out);
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

// [..., D] with unit stride along D (a copy only when it is not).
torch::Tensor unit_last_stride(const torch::Tensor& t) {
    return t.stride(-1) == 1 ? t : t.contiguous();
}

}  // namespace

void set_cpu_attention_enabled(bool enabled) {
    enabled_switch().set(enabled);
}

bool cpu_attention_enabled() {
    return enabled_switch().on();
}

bool cpu_attention_applies(const torch::Tensor& q, const KeyValueParts& kv) {
    if (!cpu_attention_enabled()) return false;
    const size_t parts = kv.keys.size();
    if (parts == 0 || parts > static_cast<size_t>(kMaxParts) || kv.values.size() != parts)
        return false;
    auto usable = [](const torch::Tensor& t) {
        return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 &&
               t.dim() == 4 && !t.is_mkldnn() && !t.is_sparse() &&
               !(torch::GradMode::is_enabled() && t.requires_grad());
    };
    if (!usable(q)) return false;
    int64_t lk = 0;
    for (size_t i = 0; i < parts; ++i) {
        const auto& k = kv.keys[i];
        const auto& v = kv.values[i];
        if (!usable(k) || !usable(v)) return false;
        if (!(k.size(0) == v.size(0) && k.size(0) > 0 && q.size(0) % k.size(0) == 0 &&
              k.size(1) == q.size(1) && v.size(1) == q.size(1) && k.size(2) == v.size(2) &&
              k.size(3) == q.size(3) && v.size(3) == q.size(3)))
            return false;
        lk += k.size(2);
    }
    if (lk == 0) return false;
    // Measured on a 2-core AVX2 machine: 3-13x faster than LibTorch 1.13 for narrow heads
    // (the temporal, audio and tiny spatial attentions); wide heads over long sequences (SD 1.5's
    // VAE, 512 channels over 4096 tokens) stay with BLAS.
    const int64_t d = q.size(3), products = q.size(2) * lk;
    const bool unrolled = d % 8 == 0 && d <= 64;
    return (unrolled && (d <= 16 || products <= 65536)) || products * d < 65536;
}

bool cpu_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
    return k.defined() && k.size(0) == q.size(0) &&
           cpu_attention_applies(q, KeyValueParts{{k}, {v}});
}

torch::Tensor cpu_attention(const torch::Tensor& q_in, const KeyValueParts& kv,
                            const torch::Tensor& key_mask) {
    if (!cpu_attention_applies(q_in, kv))
        throw Error(
            "cpu_attention: needs CPU float32 [B, H, L, D] tensors without autograd "
            "(keys and values of a batch dividing B, at most " +
            std::to_string(kMaxParts) + " parts), got q " + c10::str(q_in.sizes()) +
            (kv.keys.empty() ? ", no keys" : ", k " + c10::str(kv.keys[0].sizes())));
    const auto q = unit_last_stride(q_in);
    const int64_t b = q.size(0), h = q.size(1);
    std::vector<torch::Tensor> keys, values;
    int64_t lk = 0;
    for (size_t i = 0; i < kv.keys.size(); ++i) {
        keys.push_back(unit_last_stride(kv.keys[i]));
        values.push_back(unit_last_stride(kv.values[i]));
        lk += keys.back().size(2);
    }
    // Named for `bench render --profile` and the FLOP counter (core/flop_counter.cpp), which
    // counts every key (the products LibTorch's path would make), masked or not.
    RECORD_FUNCTION("loopy::cpu_attention",
                    std::vector<c10::IValue>({q_in, keys[0], values[0], c10::IValue(lk)}));
    const Shape shape{q.size(2), lk, q.size(3),
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
    float* op = out.data_ptr<float>();
    const bool* mp = mask.defined() ? mask.data_ptr<bool>() : nullptr;
    const int64_t work = std::max<int64_t>(1, shape.lq * shape.lk * shape.d);
    const int64_t grain = std::max<int64_t>(1, 32768 / work);  // enough work per thread
    static const auto attend_matrix = CpuKernel<attend_by_width>::pick();
    at::parallel_for(0, b * h, grain, [&](int64_t begin, int64_t end) {
        Scratch scratch(shape);
        for (int64_t task = begin; task < end; ++task) {
            const int64_t bi = task / h, hi = task % h;
            MatrixView m;
            m.q = qp + bi * q.stride(0) + hi * q.stride(1);
            m.out = op + (bi * shape.lq * h + hi) * shape.d;
            m.key_mask = mp ? mp + bi * shape.lk : nullptr;
            m.q_row = q.stride(2);
            m.out_row = h * shape.d;
            m.num_parts = static_cast<int>(keys.size());
            for (size_t i = 0; i < keys.size(); ++i) {
                const auto& k = keys[i];
                const auto& v = values[i];
                const int64_t item = bi % k.size(0);  // see KeyValueParts
                m.parts[i] = KeyPart{k.data_ptr<float>() + item * k.stride(0) + hi * k.stride(1),
                                     v.data_ptr<float>() + item * v.stride(0) + hi * v.stride(1),
                                     k.stride(2), v.stride(2), k.size(2)};
            }
            attend_matrix(m, shape, scratch);
        }
    });
    return out.transpose(1, 2);
}

torch::Tensor cpu_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& key_mask) {
    if (k.defined() && k.size(0) != q.size(0))
        throw Error("cpu_attention: keys of batch " + std::to_string(k.size(0)) +
                    " for queries of " + std::to_string(q.size(0)) +
                    " (shared keys go in KeyValueParts)");
    return cpu_attention(q, KeyValueParts{{k}, {v}}, key_mask);
}

torch::Tensor repeat_to_batch(const torch::Tensor& t, int64_t batch) {
    const int64_t rows = t.size(0);
    if (rows == batch) return t;
    if (rows <= 0 || batch % rows != 0)
        throw Error("a part of batch " + std::to_string(rows) + " cannot serve a batch of " +
                    std::to_string(batch));
    auto shape = t.sizes().vec();
    if (rows == 1) {
        shape[0] = batch;
        return t.expand(shape);  // a view
    }
    shape.insert(shape.begin(), batch / rows);
    auto out = t.unsqueeze(0).expand(shape);
    shape.erase(shape.begin());
    shape[0] = batch;
    return out.reshape(shape);
}

torch::Tensor attention_product(const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& key_mask) {
    if (cpu_attention_applies(q, k, v)) return cpu_attention(q, k, v, key_mask);
    if (!key_mask.defined()) return compat::scaled_dot_product_attention(q, k, v);
    return compat::scaled_dot_product_attention(q, k, v, key_mask, fused_masked_attention());
}

torch::Tensor attention_product(const torch::Tensor& q, const KeyValueParts& kv,
                                const torch::Tensor& key_mask) {
    if (cpu_attention_applies(q, kv)) return cpu_attention(q, kv, key_mask);
    if (kv.keys.size() != kv.values.size() || kv.keys.empty())
        throw Error("attention_product: as many value parts as key parts, at least one");
    auto joined = [&](const std::vector<torch::Tensor>& parts) {
        std::vector<torch::Tensor> full;
        for (const auto& t : parts)
            full.push_back(repeat_to_batch(t, q.size(0)));
        return full.size() == 1 ? full[0] : torch::cat(full, 2);
    };
    return attention_product(q, joined(kv.keys), joined(kv.values), key_mask);
}

}  // namespace loopy::model
