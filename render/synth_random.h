#pragma once
// A small deterministic random generator for the synthetic data: the same seed gives the same
// numbers on every platform and standard library (std:: distributions do not promise that).
#include <cmath>
#include <cstdint>

namespace loopy::synth {

class Rng {
  public:
    // `stream` separates independent sequences drawn from one clip seed (style, speech, motion).
    explicit Rng(std::uint64_t seed, std::uint64_t stream = 0)
        : state_(seed * 0x9E3779B97F4A7C15ull ^ (stream + 0x632BE59BD9B4E019ull)) {
        next();
        next();
    }

    // splitmix64: tiny, fast, and passes BigCrush; plenty for procedural drawing.
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Uniform in [0, 1) with 53 random bits.
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
    double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
    // Uniform integer in [0, n).
    int index(int n) { return n <= 0 ? 0 : static_cast<int>(uniform() * n); }
    bool chance(double p) { return uniform() < p; }
    // Standard normal (Box-Muller; one value per call keeps the sequence simple).
    double normal() {
        const double u1 = 1.0 - uniform();  // (0, 1]: log is finite
        const double u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
    double normal(double mean, double sd) { return mean + sd * normal(); }

  private:
    std::uint64_t state_;
};

}  // namespace loopy::synth
