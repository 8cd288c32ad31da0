#pragma once
// What the engine's hand-written CPU code (cpu_attention.cpp, cpu_layer_norm.cpp, cpu_linear.cpp)
// shares: an AVX2/FMA copy of a function next to the portable one, picked by what the CPU
// supports (Debian builds for every x86-64; most CPUs have AVX2), and the environment switches
// that turn each piece off for comparisons.
#include <atomic>
#include <cstdlib>
#include <cstring>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define LOOPY_HAVE_AVX2_KERNEL 1
#define LOOPY_AVX2_FMA __attribute__((target("avx2,fma")))
// AVX-512F on top, without VL: eight-float vectors stay the AVX2 copy's instructions (allowing
// VL made them slower), sixteen-float ones use the 512-bit registers.
#define LOOPY_AVX512 __attribute__((target("avx2,fma,avx512f")))
#else
#define LOOPY_HAVE_AVX2_KERNEL 0
#endif
#if defined(__GNUC__)
#define LOOPY_INLINE inline __attribute__((always_inline))  // compiled into each copy
#else
#define LOOPY_INLINE inline
#endif

namespace loopy::model {

// True when the AVX2/FMA copies may run here.
inline bool cpu_has_avx2_fma() {
#if LOOPY_HAVE_AVX2_KERNEL
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

// True when an AVX-512F copy may run here (and the AVX2/FMA ones).
inline bool cpu_has_avx512f() {
#if LOOPY_HAVE_AVX2_KERNEL
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

// The portable and the AVX2/FMA copy of one kernel, and the copy this CPU runs:
// `CpuKernel<body>::pick()`. `body` and what it calls must be LOOPY_INLINE, so that each copy
// compiles them for its own instruction set.
template <auto Body>
struct CpuKernel;

template <typename... Args, void (*Body)(Args...)>
struct CpuKernel<Body> {
    using Fn = void (*)(Args...);
    static void portable(Args... args) { Body(args...); }
#if LOOPY_HAVE_AVX2_KERNEL
    LOOPY_AVX2_FMA static void avx2(Args... args) {
        Body(args...);
    }
#endif
    static Fn pick() {
#if LOOPY_HAVE_AVX2_KERNEL
        if (cpu_has_avx2_fma()) return avx2;
#endif
        return portable;
    }
};

// On unless the environment variable is "0" (off unless "1" where off by default).
inline bool environment_switch_on(const char* name, bool by_default = true) {
    const char* value = std::getenv(name);
    if (!value) return by_default;
    return by_default ? std::strcmp(value, "0") != 0 : std::strcmp(value, "1") == 0;
}

// An on/off switch for one piece of the engine's own code: read once from its environment
// variable (environment_switch_on), then set between runs by tests and benchmarks.
class EnvironmentSwitch {
  public:
    explicit EnvironmentSwitch(const char* name, bool by_default = true)
        : on_(environment_switch_on(name, by_default)) {}
    void set(bool on) { on_.store(on); }
    bool on() const { return on_.load(); }

  private:
    std::atomic<bool> on_;
};

// The AVX-512 copies of the CPU loops (model/cpu_vec16.h) run on CPUs with AVX-512F unless
// LOOPY_CPU_AVX512=0 is set or they are switched off here (for comparisons; between runs).
inline EnvironmentSwitch& cpu_avx512_switch() {
    static EnvironmentSwitch on_off{"LOOPY_CPU_AVX512"};
    return on_off;
}
inline void set_cpu_avx512_enabled(bool enabled) {
    cpu_avx512_switch().set(enabled);
}
// The CPU has AVX-512F and the switch is on.
inline bool cpu_avx512_active() {
    static const bool supported = cpu_has_avx512f();
    return supported && cpu_avx512_switch().on();
}

}  // namespace loopy::model
