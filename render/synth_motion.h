#pragma once
// Non-verbal motion for the synthetic talking faces: head pose, blinks and brow raises, all
// deterministic by seed.
//  - Head pose: an Ornstein-Uhlenbeck process per axis around a per-clip rest pose, livelier while
//    the speech is loud (more noise, weaker pull back) and settling in pauses, plus small nods on
//    stressed syllables; Gaussian-smoothed over frames.
//  - Blinks: inter-blink intervals drawn in [2.1, 9.9] s (log-normal around 4 s), each blink about
//    150 ms long, closing in 40 % of that time and opening in the other 60 %.
//  - Brow raises on some primary-stressed syllables (espeak's ' mark).
#include <cstdint>
#include <vector>

namespace loopy::synth {

struct HeadPose {
    double yaw = 0, pitch = 0, roll = 0;  // degrees
    double tx = 0, ty = 0;                // fraction of the image size
    double scale = 1;
};

struct MotionTrack {
    std::vector<HeadPose> pose;        // per frame
    std::vector<double> blink;         // per frame, 0 open .. 1 closed
    std::vector<double> brow;          // per frame, 0 rest .. 1 raised
    std::vector<double> blink_onsets;  // seconds at which each blink starts closing
};

struct MotionInputs {
    int fps = 25;
    int frame_count = 0;
    std::vector<double> energy;        // per frame speech loudness in [0, 1] (energy_track)
    std::vector<double> stress_times;  // seconds of primary-stressed vowels
};

MotionTrack make_motion(std::uint64_t seed, const MotionInputs& inputs);

// Closedness of the eye `t` seconds after a blink onset for a blink of `duration` seconds.
double blink_profile(double t, double duration);

}  // namespace loopy::synth
