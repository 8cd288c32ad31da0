#pragma once
// Sixteen-float vectors for the AVX-512 copies of the engine's CPU loops (cpu_attention.cpp,
// cpu_geglu.cpp, cpu_linear.cpp): functions compiled with LOOPY_AVX512 only, called from the
// AVX2 copies on CPUs with AVX-512F (model/cpu_dispatch.h). Vector extensions as in cpu_vec8.h,
// except for broadcasts (GCC 12 builds a 16-float vector from a scalar with sixteen masked
// broadcasts); GCC 12's AVX-512 intrinsics only where they leave no lane undefined (those that do
// warn of an uninitialised variable in its headers).
#include <cstdint>
#include <cstring>

#include "model/cpu_dispatch.h"
#include "model/cpu_vec8.h"

#if LOOPY_HAVE_AVX2_KERNEL
#include <immintrin.h>

namespace loopy::model::simd {

typedef float Vec16 __attribute__((vector_size(64)));
typedef int32_t Int16 __attribute__((vector_size(64)));

LOOPY_AVX512 inline Vec16 splat16(float x) {
    return _mm512_set1_ps(x);
}
LOOPY_AVX512 inline Vec16 load16(const float* p) {  // p on a 64-byte boundary
    return *reinterpret_cast<const Vec16*>(__builtin_assume_aligned(p, 64));
}
LOOPY_AVX512 inline void store16(float* p, Vec16 v) {  // p on a 64-byte boundary
    *reinterpret_cast<Vec16*>(__builtin_assume_aligned(p, 64)) = v;
}
LOOPY_AVX512 inline Vec8 fold16(Vec16 v) {  // lanes i and i + 8 added
    return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
}

LOOPY_AVX512 inline Vec16 exp_nonpositive16(Vec16 x) {  // exp_nonpositive, 16 lanes
    using E = ExpConstants;
    const Vec16 cutoff = splat16(kExpCutoff);
    const Vec16 xi = x < cutoff ? cutoff : x;
    const Vec16 shifted = xi * splat16(E::kLog2e) + splat16(E::kRound);
    const Vec16 n = shifted - splat16(E::kRound);
    const Vec16 r = xi - n * splat16(E::kLn2High) - n * splat16(E::kLn2Low);
    Vec16 y = splat16(E::kPoly[0]);
    for (int i = 1; i <= E::kDegree; ++i)
        y = y * r + splat16(E::kPoly[i]);
    Int16 bits;
    std::memcpy(&bits, &shifted, sizeof bits);
    bits = (bits << 23) + (127 << 23);  // 2^n
    Vec16 two_n;
    std::memcpy(&two_n, &bits, sizeof two_n);
    return x < cutoff ? splat16(0.0f) : y * two_n;
}

// Unaligned load and store.
LOOPY_AVX512 inline Vec16 loadu16(const float* p) {
    Vec16 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
LOOPY_AVX512 inline void storeu16(float* p, Vec16 v) {
    std::memcpy(p, &v, sizeof v);
}

// 1 / d to float precision: the 14-bit estimate and one Newton step (a division waits ~5 cycles
// per vector).
LOOPY_AVX512 inline Vec16 reciprocal16(Vec16 d) {
    const Vec16 t = _mm512_maskz_rcp14_ps(0xFFFF, d);
    return t * (splat16(2.0f) - d * t);
}

}  // namespace loopy::model::simd
#endif
