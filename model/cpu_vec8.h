#pragma once
// Eight-float vectors for the engine's hand-written CPU loops (cpu_attention.cpp,
// cpu_geglu.cpp): GCC/Clang vector extensions, lowered to AVX2 in the functions compiled with
// LOOPY_AVX2_FMA (model/cpu_dispatch.h) and to SSE pairs in the portable copies. Internal to
// those files: everything is always inline, so each copy gets its own instructions.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "model/cpu_dispatch.h"

// The vectors never cross a non-inlined call, so the ABI of passing them does not matter.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace loopy::model::simd {

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
// Written as a scalar minus a zero vector: GCC 12 turns that into one broadcast (x - 0 is x for
// every float, so the subtraction folds away; 0 + x is not, for x = -0, and stayed as an add),
// but builds the eight-element initialiser from eight inserts in the AVX2 copies (compiled for
// SSE2 first), which made the short rows' inner loops wait on the shuffle unit.
LOOPY_INLINE Vec8 splat8(float x) {
    return x - Vec8{};
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

// Below this exp is 0: exp(-64) is 1.6e-28, far under float precision next to exp(0) = 1 (the
// attention's row maximum), and products of smaller ones would be denormal numbers, which cost
// x86 CPUs a hundred cycles each (trained attention is sharp: it happens all the time).
constexpr float kExpCutoff = -64.0f;

// exp(x) for x <= 0 (or -inf), 0 below kExpCutoff: exp(r) * 2^n with x = n ln 2 + r. n is
// rounded by adding 1.5 * 2^23 (it lands in the mantissa's low bits, from where a shift moves it
// into the exponent); exp(r) on [-ln2/2, ln2/2] is a degree-5 near-minimax polynomial (fitted
// for this engine by iteratively reweighted least squares; relative error 2e-7 in float, like
// Cephes' degree-7 one, three operations fewer).
// The constants are shared with the sixteen-lane copy (cpu_vec16.h).
struct ExpConstants {
    static constexpr float kLog2e = 1.44269504088896341f;
    static constexpr float kRound = 12582912.0f;                                // 1.5 * 2^23
    static constexpr float kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;  // ln 2 in two parts
    static constexpr int kDegree = 5;
    static constexpr float kPoly[kDegree + 1] = {8.297652006e-3f, 4.191538692e-2f,
                                                 1.666757464e-1f, 4.999889433e-1f,
                                                 9.999997020e-1f, 1.000000119f};  // highest first
};

LOOPY_INLINE Vec8 exp_nonpositive(Vec8 x) {
    using E = ExpConstants;
    const Vec8 xi = x < splat8(kExpCutoff) ? splat8(kExpCutoff) : x;
    const Vec8 shifted = xi * E::kLog2e + E::kRound;
    const Vec8 n = shifted - E::kRound;
    const Vec8 r = xi - n * E::kLn2High - n * E::kLn2Low;
    Vec8 y = splat8(E::kPoly[0]);
    for (int i = 1; i <= E::kDegree; ++i)
        y = y * r + E::kPoly[i];
    Int8 bits;
    std::memcpy(&bits, &shifted, sizeof bits);
    bits = (bits << 23) + (127 << 23);  // 2^n: the bits above n shift out
    Vec8 two_n;
    std::memcpy(&two_n, &bits, sizeof two_n);
    return x < splat8(kExpCutoff) ? splat8(0.0f) : y * two_n;
}

}  // namespace loopy::model::simd
