#pragma once
// Synthetic speech for the talking-face data: espeak-ng's C library speaks varied sentences with
// varied voices, and its phoneme events are turned into per-video-frame viseme tracks (jaw
// opening, lip width, lip rounding) with co-articulation smoothing.
//
// espeak-ng keeps global state and is not thread-safe: every call into it holds one global mutex.
#include <cstdint>
#include <string>
#include <vector>

namespace loopy::synth {

constexpr int kSpeechSampleRate = 16000;  // output audio: 16 kHz mono float

struct SpeechOptions {
    std::string text;  // plain text, or SSML when `ssml` is set
    bool ssml = false;
    std::string voice = "en";  // espeak-ng voice, e.g. "en+m3", "en-us+f2"
    int rate_wpm = 160;        // 80..450
    int pitch = 50;            // 0..100
    int pitch_range = 50;      // 0..100
    bool singing = false;      // informational: the text stretches vowels (SSML prosody)
    // espeak-ng draws breath and frication noise from the C library's rand(): it is seeded with
    // this before each synthesis so the same options give the same samples (this resets rand()
    // for the whole process).
    unsigned noise_seed = 1;
};

// A phoneme spoken at [start, end) samples of the 16 kHz audio. Pauses are "_" names.
struct Phoneme {
    std::string name;  // espeak-ng mnemonic without stress marks, e.g. "aI", "D", "_:"
    std::int64_t start = 0;
    std::int64_t end = 0;
    int stress = 0;  // 2: primary (' in espeak's phoneme text), 1: secondary (,), 0: none
    bool is_pause() const { return !name.empty() && name[0] == '_'; }
};

struct Speech {
    std::vector<float> samples;  // 16 kHz mono, in [-1, 1]
    std::vector<Phoneme> phonemes;
    SpeechOptions options;
    double seconds() const { return static_cast<double>(samples.size()) / kSpeechSampleRate; }
};

// A phoneme event's name from espeak-ng, as name and stress (start and end left 0): espeak-ng 1.52
// puts the stress mark in front of the mnemonic ("'oU"), 1.51 leaves it out. Empty: a pause "_".
Phoneme phoneme_from_event_name(const std::string& name);

// The built-in sentences (a few dozen) that random_speech_options() combines.
const std::vector<std::string>& sentence_bank();

// Options drawn from `seed`: sentences, voice, rate and pitch; about one clip in five sings
// (stretched vowels and a melody through SSML prosody). The text is long enough for
// `target_seconds` of speech at the drawn rate.
SpeechOptions random_speech_options(std::uint64_t seed, double target_seconds);

// Speaks `options` with espeak-ng (espeak-ng-data must be installed) and resamples its 22.05 kHz
// output to 16 kHz. Throws loopy::Error if espeak-ng cannot start or the voice is unknown.
Speech synthesize_speech(const SpeechOptions& options);

// Mouth shape for one phoneme: the targets the viseme tracks move toward.
struct Viseme {
    double jaw_open = 0;   // 0..1
    double lip_width = 0;  // 0..1 (spread)
    double lip_round = 0;  // 0..1
};
Viseme viseme_for(const std::string& phoneme);

// Per-video-frame visemes: each phoneme's target is placed at its centre (consonants a little
// early, anticipating the next sound), targets are linearly joined and then Gaussian-smoothed
// (sigma 45 ms) so neighbouring phonemes blend (co-articulation). Pauses close the mouth.
std::vector<Viseme> viseme_track(const Speech& speech, int fps, int frame_count);

// Per-video-frame loudness: RMS over each frame's samples, divided by the clip's 95th percentile
// and clipped to [0, 1].
std::vector<double> energy_track(const Speech& speech, int fps, int frame_count);

// Resamples mono audio with a windowed-sinc (Kaiser) interpolator; deterministic.
std::vector<float> resample(const std::vector<float>& in, int from_rate, int to_rate);

}  // namespace loopy::synth
