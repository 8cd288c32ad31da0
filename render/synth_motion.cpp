#include "render/synth_motion.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "render/synth_random.h"

namespace loopy::synth {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr std::uint64_t kMotionStream = 4;

// Gaussian smoothing of a per-frame series (edges clamped).
std::vector<double> smoothed(const std::vector<double>& x, double sigma_frames) {
    if (sigma_frames <= 0 || x.empty()) return x;
    const int radius = static_cast<int>(std::ceil(3 * sigma_frames));
    const int n = static_cast<int>(x.size());
    std::vector<double> out(x.size());
    for (int i = 0; i < n; ++i) {
        double sum = 0, wsum = 0;
        for (int k = -radius; k <= radius; ++k) {
            const double w = std::exp(-0.5 * (k / sigma_frames) * (k / sigma_frames));
            sum += w * x[static_cast<size_t>(std::clamp(i + k, 0, n - 1))];
            wsum += w;
        }
        out[i] = sum / wsum;
    }
    return out;
}

// How much the head is "in speaking mode" per frame: loudness above a floor, smoothed ~0.3 s.
std::vector<double> activity(const MotionInputs& in) {
    std::vector<double> a(static_cast<size_t>(in.frame_count), 0.0);
    for (int i = 0; i < in.frame_count && i < static_cast<int>(in.energy.size()); ++i)
        a[i] = in.energy[i] > 0.08 ? 1.0 : 0.0;
    return smoothed(a, 0.3 * in.fps);
}

// One axis: Ornstein-Uhlenbeck around `rest`. Stationary spread `quiet_sd` in pauses and
// `speak_sd` while speaking; the pull back is stronger in pauses so the head settles.
std::vector<double> ou_axis(Rng& rng, const std::vector<double>& act, int fps, double rest,
                            double quiet_sd, double speak_sd) {
    const double dt = 1.0 / fps;
    std::vector<double> x(act.size());
    double v = rest + rng.normal(0, quiet_sd);
    for (size_t i = 0; i < act.size(); ++i) {
        const double theta = 2.5 - 1.5 * act[i];  // 1/s
        const double sd = quiet_sd + (speak_sd - quiet_sd) * act[i];
        const double sigma = sd * std::sqrt(2 * theta);
        v += theta * (rest - v) * dt + sigma * std::sqrt(dt) * rng.normal();
        x[i] = v;
    }
    return smoothed(x, 1.5);
}

std::vector<double> bump_track(int frame_count, int fps, const std::vector<double>& times,
                               const std::vector<double>& amplitudes, double attack, double hold,
                               double decay) {
    std::vector<double> y(static_cast<size_t>(frame_count), 0.0);
    for (size_t b = 0; b < times.size(); ++b) {
        for (int i = 0; i < frame_count; ++i) {
            const double t = static_cast<double>(i) / fps - times[b];
            double v = 0;
            if (t >= 0 && t < attack)
                v = 0.5 - 0.5 * std::cos(kPi * t / attack);
            else if (t >= attack && t < attack + hold)
                v = 1;
            else if (t >= attack + hold && t < attack + hold + decay)
                v = 0.5 + 0.5 * std::cos(kPi * (t - attack - hold) / decay);
            y[i] = std::max(y[i], amplitudes[b] * v);
        }
    }
    return y;
}

void add_pose(MotionTrack& m, Rng& rng, const MotionInputs& in) {
    const auto act = activity(in);
    const double lively = rng.uniform(0.5, 1.3);  // a calm or an animated speaker
    const HeadPose rest{rng.normal(0, 3),    rng.normal(0, 2),     rng.normal(0, 1.5),
                        rng.normal(0, 0.01), rng.normal(0, 0.006), 1 + rng.normal(0, 0.02)};
    const auto yaw = ou_axis(rng, act, in.fps, rest.yaw, 0.8, 4.5 * lively);
    const auto pitch = ou_axis(rng, act, in.fps, rest.pitch, 0.6, 3.0 * lively);
    const auto roll = ou_axis(rng, act, in.fps, rest.roll, 0.4, 2.0 * lively);
    const auto tx = ou_axis(rng, act, in.fps, rest.tx, 0.002, 0.012 * lively);
    const auto ty = ou_axis(rng, act, in.fps, rest.ty, 0.0015, 0.007 * lively);
    const auto sc = ou_axis(rng, act, in.fps, rest.scale, 0.003, 0.012 * lively);
    // Nods: the chin dips briefly on stressed syllables.
    std::vector<double> nod_times, nod_sizes;
    for (double t : in.stress_times) {
        if (!rng.chance(0.5)) continue;
        nod_times.push_back(t - 0.08);
        nod_sizes.push_back(rng.uniform(0.8, 2.5) * lively);
    }
    const auto nods = bump_track(in.frame_count, in.fps, nod_times, nod_sizes, 0.12, 0.0, 0.25);
    m.pose.resize(static_cast<size_t>(in.frame_count));
    for (int i = 0; i < in.frame_count; ++i)
        m.pose[i] = {yaw[i], pitch[i] - nods[i], roll[i], tx[i], ty[i], sc[i]};
}

void add_blinks(MotionTrack& m, Rng& rng, const MotionInputs& in) {
    const double seconds = static_cast<double>(in.frame_count) / in.fps;
    std::vector<double> durations;
    for (double t = rng.uniform(0.3, 3.0); t < seconds;) {
        m.blink_onsets.push_back(t);
        durations.push_back(rng.uniform(0.13, 0.17));
        double gap = 0;
        do
            gap = std::exp(rng.normal(std::log(4.0), 0.45));
        while (gap < 2.1 || gap > 9.9);
        t += gap;
    }
    m.blink.assign(static_cast<size_t>(in.frame_count), 0.0);
    for (int i = 0; i < in.frame_count; ++i) {
        const double t = static_cast<double>(i) / in.fps;
        for (size_t b = 0; b < m.blink_onsets.size(); ++b)
            m.blink[i] = std::max(m.blink[i], blink_profile(t - m.blink_onsets[b], durations[b]));
    }
}

void add_brows(MotionTrack& m, Rng& rng, const MotionInputs& in) {
    const double rate = rng.uniform(0.15, 0.45);  // share of stressed syllables with a raise
    std::vector<double> times, sizes;
    double last = -10;
    for (double t : in.stress_times) {
        if (t - last < 0.8 || !rng.chance(rate)) continue;
        times.push_back(t - 0.1);
        sizes.push_back(rng.uniform(0.3, 1.0));
        last = t;
    }
    m.brow = bump_track(in.frame_count, in.fps, times, sizes, 0.12, 0.1, 0.4);
}

}  // namespace

double blink_profile(double t, double duration) {
    const double close = 0.4 * duration, open = duration - close;
    if (t < 0 || t >= duration) return 0;
    if (t < close) return std::sin(0.5 * kPi * t / close);
    return 0.5 + 0.5 * std::cos(kPi * (t - close) / open);
}

MotionTrack make_motion(std::uint64_t seed, const MotionInputs& inputs) {
    MotionTrack m;
    // Separate streams: changing one part of the motion leaves the others as they were.
    Rng pose_rng(seed, kMotionStream), blink_rng(seed, kMotionStream + 1),
        brow_rng(seed, kMotionStream + 2);
    add_pose(m, pose_rng, inputs);
    add_blinks(m, blink_rng, inputs);
    add_brows(m, brow_rng, inputs);
    return m;
}

}  // namespace loopy::synth
