#include "render/synth_speech.h"

#include <espeak-ng/speak_lib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "render/synth_random.h"

namespace loopy::synth {
namespace {

constexpr std::uint64_t kSpeechStream = 3;
constexpr double kPi = 3.14159265358979323846;

// espeak-ng has process-wide state (voice, parameters, callback): one caller at a time.
std::mutex& espeak_mutex() {
    static std::mutex m;
    return m;
}

struct Collected {
    std::vector<short> pcm;
    std::vector<Phoneme> phonemes;  // start in espeak samples; end filled later
};

// Guarded by espeak_mutex().
int espeak_rate = 0;           // espeak's output rate once initialised (22050)
Collected* current = nullptr;  // where the callback puts the message being spoken

int collect(short* wav, int count, espeak_EVENT* events) {
    Collected* out = current;
    if (!out) return 0;
    for (espeak_EVENT* e = events; e && e->type != espeakEVENT_LIST_TERMINATED; ++e) {
        if (e->type != espeakEVENT_PHONEME) continue;
        char name[9] = {};
        std::memcpy(name, e->id.string, 8);
        // `sample` is the event's position in the message's audio (audio_position is in ms).
        const std::int64_t at =
            e->sample > 0 ? e->sample
                          : static_cast<std::int64_t>(e->audio_position) * espeak_rate / 1000;
        Phoneme p = phoneme_from_event_name(name);
        p.start = p.end = at;
        out->phonemes.push_back(std::move(p));
    }
    if (wav && count > 0) out->pcm.insert(out->pcm.end(), wav, wav + count);
    return 0;  // 0: go on synthesising
}

void ensure_initialised() {
    if (espeak_rate > 0) return;
    const int rate =
        espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, nullptr,
                          espeakINITIALIZE_PHONEME_EVENTS | espeakINITIALIZE_DONT_EXIT);
    if (rate <= 0) throw Error("espeak-ng failed to start (is espeak-ng-data installed?)");
    espeak_SetSynthCallback(collect);
    espeak_rate = rate;
}

std::string strip_tags(const std::string& ssml) {
    std::string out;
    bool in_tag = false;
    for (char ch : ssml) {
        if (ch == '<') in_tag = true;
        if (!in_tag) out += ch;
        if (ch == '>') {
            in_tag = false;
            out += ' ';
        }
    }
    return out;
}

// espeak's phoneme text with stress marks, e.g. "h@l'oU D'e@", split into marked phonemes.
struct MarkedPhoneme {
    std::string name;
    int stress = 0;
};

// espeak's stress marks: ' primary (2), , secondary (1); 0 for any other character.
int stress_mark(char c) {
    return c == '\'' ? 2 : c == ',' ? 1 : 0;
}

std::vector<MarkedPhoneme> stressed_phonemes(const std::string& text) {
    std::vector<MarkedPhoneme> out;
    const void* cursor = text.c_str();
    while (cursor) {
        const char* ph = espeak_TextToPhonemes(&cursor, espeakCHARS_UTF8, '|' << 8);
        if (!ph) break;
        std::string token;
        auto flush = [&] {
            MarkedPhoneme m;
            for (char ch : token) {
                if (const int stress = stress_mark(ch))
                    m.stress = std::max(m.stress, stress);
                else if (std::isalnum(static_cast<unsigned char>(ch)) || std::strchr("@#:&_", ch))
                    m.name += ch;
            }
            if (!m.name.empty()) out.push_back(m);
            token.clear();
        };
        for (const char* p = ph; *p; ++p) {
            if (*p == '|' || *p == ' ')
                flush();
            else
                token += *p;
        }
        flush();
    }
    return out;
}

// Copies stress from espeak's phoneme text onto the phoneme events, walking both in order and
// skipping a few text phonemes where they disagree.
void attach_stress(std::vector<Phoneme>& events, const std::vector<MarkedPhoneme>& marked) {
    size_t j = 0;
    for (auto& e : events) {
        if (e.is_pause()) continue;
        for (size_t look = j; look < std::min(marked.size(), j + 4); ++look) {
            if (marked[look].name == e.name) {
                e.stress = std::max(e.stress, marked[look].stress);
                j = look + 1;
                break;
            }
        }
    }
}

double bessel_i0(double x) {
    double sum = 1, term = 1;
    for (int k = 1; k < 40; ++k) {
        term *= (x / (2 * k)) * (x / (2 * k));
        sum += term;
        if (term < 1e-12 * sum) break;
    }
    return sum;
}

}  // namespace

std::vector<float> resample(const std::vector<float>& in, int from_rate, int to_rate) {
    if (from_rate <= 0 || to_rate <= 0) throw Error("resample: sample rates must be positive");
    if (from_rate == to_rate || in.empty()) return in;
    constexpr int kHalfTaps = 24, kSteps = 512;  // kernel table: 512 entries per input sample
    constexpr double kBeta = 8.0;
    const double ratio = static_cast<double>(to_rate) / from_rate;
    const double cutoff = 0.5 * std::min(1.0, ratio) * 0.92;  // cycles per input sample
    // Kaiser-windowed sinc low-pass, tabulated over |x| <= kHalfTaps input samples.
    std::vector<double> kernel(kHalfTaps * kSteps + 2, 0.0);
    const double norm = bessel_i0(kBeta);
    for (size_t i = 0; i + 1 < kernel.size(); ++i) {
        const double x = static_cast<double>(i) / kSteps, r = x / kHalfTaps;
        const double arg = 2 * kPi * cutoff * x;
        const double sinc = arg < 1e-9 ? 1.0 : std::sin(arg) / arg;
        kernel[i] =
            2 * cutoff * sinc * bessel_i0(kBeta * std::sqrt(std::max(0.0, 1 - r * r))) / norm;
    }
    auto h = [&](double x) {
        const double pos = std::abs(x) * kSteps;
        const auto i = static_cast<size_t>(pos);
        if (i + 1 >= kernel.size()) return 0.0;
        return kernel[i] + (kernel[i + 1] - kernel[i]) * (pos - i);
    };
    const auto out_count = static_cast<size_t>(std::floor(in.size() * ratio));
    const auto n_in = static_cast<std::int64_t>(in.size());
    std::vector<float> out(out_count);
    for (size_t n = 0; n < out_count; ++n) {
        const double t = n / ratio;  // position in input samples
        const auto centre = static_cast<std::int64_t>(std::floor(t));
        double acc = 0;
        for (std::int64_t k = std::max<std::int64_t>(0, centre - kHalfTaps + 1);
             k <= std::min(n_in - 1, centre + kHalfTaps); ++k)
            acc += in[static_cast<size_t>(k)] * h(t - k);
        out[n] = static_cast<float>(acc);
    }
    return out;
}

namespace {

// What espeak-ng said: its own sample rate, the PCM and the phoneme events (espeak samples).
struct RawSpeech {
    int rate = 0;
    Collected got;
    std::string error;
};

// Must hold espeak_mutex().
RawSpeech speak_in_process(const SpeechOptions& options) {
    RawSpeech raw;
    try {
        ensure_initialised();
    } catch (const Error& e) {
        raw.error = e.what();
        return raw;
    }
    raw.rate = espeak_rate;
    if (espeak_SetVoiceByName(options.voice.c_str()) != EE_OK) {
        raw.error = "espeak-ng has no voice '" + options.voice + "'";
        return raw;
    }
    espeak_SetParameter(espeakRATE, std::clamp(options.rate_wpm, 80, 450), 0);
    espeak_SetParameter(espeakPITCH, std::clamp(options.pitch, 0, 100), 0);
    espeak_SetParameter(espeakRANGE, std::clamp(options.pitch_range, 0, 100), 0);
    const auto marked = stressed_phonemes(options.ssml ? strip_tags(options.text) : options.text);
    const unsigned flags = espeakCHARS_UTF8 | (options.ssml ? espeakSSML : 0);
    current = &raw.got;
    std::srand(options.noise_seed);
    const espeak_ERROR err = espeak_Synth(options.text.c_str(), options.text.size() + 1, 0,
                                          POS_CHARACTER, 0, flags, nullptr, nullptr);
    espeak_Synchronize();
    current = nullptr;
    if (err != EE_OK) raw.error = "espeak-ng could not speak the text";
    attach_stress(raw.got.phonemes, marked);
    return raw;
}

// The child's answer on the pipe: rate, error, PCM, then (start, stress, 8-byte name) events.
void put(std::string& out, const void* data, size_t n) {
    out.append(static_cast<const char*>(data), n);
}

std::string serialise(const RawSpeech& raw) {
    std::string out;
    const std::int64_t sizes[3] = {static_cast<std::int64_t>(raw.error.size()),
                                   static_cast<std::int64_t>(raw.got.pcm.size()),
                                   static_cast<std::int64_t>(raw.got.phonemes.size())};
    put(out, &raw.rate, sizeof raw.rate);
    put(out, sizes, sizeof sizes);
    put(out, raw.error.data(), raw.error.size());
    put(out, raw.got.pcm.data(), raw.got.pcm.size() * sizeof(short));
    for (const auto& p : raw.got.phonemes) {
        char name[8] = {};
        std::memcpy(name, p.name.data(), std::min<size_t>(8, p.name.size()));
        put(out, &p.start, sizeof p.start);
        put(out, &p.stress, sizeof p.stress);
        put(out, name, sizeof name);
    }
    return out;
}

RawSpeech deserialise(const std::string& in) {
    RawSpeech raw;
    size_t at = 0;
    auto get = [&](void* data, size_t n) {
        if (at + n > in.size()) throw Error("espeak-ng helper process returned too little data");
        std::memcpy(data, in.data() + at, n);
        at += n;
    };
    std::int64_t sizes[3];
    get(&raw.rate, sizeof raw.rate);
    get(sizes, sizeof sizes);
    if (sizes[0] < 0 || sizes[1] < 0 || sizes[2] < 0 || static_cast<size_t>(sizes[1]) > in.size() ||
        static_cast<size_t>(sizes[2]) > in.size())
        throw Error("espeak-ng helper process returned garbled data");
    raw.error.resize(static_cast<size_t>(sizes[0]));
    get(raw.error.data(), raw.error.size());
    raw.got.pcm.resize(static_cast<size_t>(sizes[1]));
    get(raw.got.pcm.data(), raw.got.pcm.size() * sizeof(short));
    for (std::int64_t i = 0; i < sizes[2]; ++i) {
        Phoneme p;
        char name[9] = {};
        get(&p.start, sizeof p.start);
        get(&p.stress, sizeof p.stress);
        get(name, 8);
        p.name = name;
        p.end = p.start;
        raw.got.phonemes.push_back(p);
    }
    return raw;
}

// espeak-ng keeps synthesis state in statics that no call resets (pitch flutter position, wave
// phase): a second message in one process comes out slightly different from the first. So each
// message is spoken by a forked child in which espeak-ng starts fresh, and the samples come back
// over a pipe; the parent never initialises espeak-ng, so every child starts from the same state.
// Must hold espeak_mutex().
RawSpeech speak_in_child(const SpeechOptions& options) {
    int fds[2];
    if (pipe(fds) != 0) throw Error("speech: could not create a pipe");
    const pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        throw Error("speech: could not start the espeak-ng helper process");
    }
    if (pid == 0) {
        close(fds[0]);
        const std::string out = serialise(speak_in_process(options));
        size_t done = 0;
        while (done < out.size()) {
            const ssize_t n = write(fds[1], out.data() + done, out.size() - done);
            if (n <= 0) _exit(2);
            done += static_cast<size_t>(n);
        }
        _exit(0);
    }
    close(fds[1]);
    std::string in;
    char buf[65536];
    for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        in.append(buf, static_cast<size_t>(n));
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error("speech: the espeak-ng helper process failed");
    return deserialise(in);
}

}  // namespace

Phoneme phoneme_from_event_name(const std::string& name) {
    Phoneme p;
    std::size_t i = 0;
    for (; i < name.size() && stress_mark(name[i]) > 0; ++i)
        p.stress = std::max(p.stress, stress_mark(name[i]));
    p.name = i < name.size() ? name.substr(i) : "_";
    return p;
}

Speech synthesize_speech(const SpeechOptions& options) {
    RawSpeech raw;
    {
        std::lock_guard<std::mutex> lock(espeak_mutex());
        raw = speak_in_child(options);
    }
    if (!raw.error.empty()) throw Error(raw.error);
    if (raw.got.pcm.empty() || raw.rate <= 0) throw Error("espeak-ng produced no audio");
    std::vector<float> samples(raw.got.pcm.size());
    for (size_t i = 0; i < samples.size(); ++i)
        samples[i] = raw.got.pcm[i] / 32768.0f;

    Speech speech;
    speech.options = options;
    speech.samples = resample(samples, raw.rate, kSpeechSampleRate);
    const double scale = static_cast<double>(kSpeechSampleRate) / raw.rate;
    const auto total = static_cast<std::int64_t>(speech.samples.size());
    const auto& events = raw.got.phonemes;
    for (size_t i = 0; i < events.size(); ++i) {
        Phoneme p = events[i];
        p.start = std::min(total, static_cast<std::int64_t>(std::llround(p.start * scale)));
        p.end = i + 1 < events.size()
                    ? std::min(total,
                               static_cast<std::int64_t>(std::llround(events[i + 1].start * scale)))
                    : total;
        if (p.end > p.start) speech.phonemes.push_back(p);
    }
    return speech;
}

// ---------------------------------------------------------------------------------------------

const std::vector<std::string>& sentence_bank() {
    static const std::vector<std::string> bank = {
        "The quick brown fox jumps over the lazy dog.",
        "Please call me back when you get home tonight.",
        "We walked along the beach until the sun went down.",
        "Could you pass the salt and the pepper, please?",
        "My brother bought a blue bicycle last summer.",
        "The weather today is cloudy with a chance of rain.",
        "I think we should leave a little earlier tomorrow.",
        "She opened the window and looked at the garden.",
        "Every morning he drinks a cup of strong black coffee.",
        "The museum is closed on Mondays and public holidays.",
        "Do you remember the name of that little restaurant?",
        "Our train was delayed by almost forty minutes.",
        "The children were playing football in the park.",
        "You can find the keys on the table by the door.",
        "It was the best concert I have ever been to.",
        "Water boils at one hundred degrees Celsius.",
        "He painted the old fence a bright shade of green.",
        "Let me know if you need any help with the project.",
        "The library has more than a million books.",
        "We are going to visit our grandparents next weekend.",
        "Turn left at the traffic lights and then go straight on.",
        "That was a really interesting question, thank you.",
        "The cat slept all afternoon on the warm windowsill.",
        "I would like a ticket to the city centre, please.",
        "Fresh bread smells wonderful early in the morning.",
        "The meeting has been moved to Thursday at noon.",
        "Who left the lights on in the kitchen again?",
        "Bright yellow flowers grew along the country road.",
        "Numbers and letters are printed on every page.",
        "She plays the violin in a small orchestra.",
        "Why do the leaves change colour in the autumn?",
        "Remember to bring an umbrella, just in case.",
        "The mountain path was steep, narrow and rocky.",
        "My favourite food is soup with lots of vegetables.",
        "An old man was feeding pigeons in the square.",
        "Good evening, and welcome to the news at nine.",
        "Wow, that is absolutely amazing!",
        "Oh no, I forgot my wallet at the office.",
        "Thank you very much for coming to see us.",
        "Look at the size of that enormous ship!",
        "How much does it cost to fly to Australia?",
        "The river flows slowly through the quiet valley.",
        "Five pink pigs played poker in the moonlight.",
        "Unique new ideas usually move very quickly.",
        "Ships sail through the choppy sea at dawn.",
        "Judges judge the fudge that George made on Sunday.",
        "Red lorry, yellow lorry, red lorry, yellow lorry.",
        "We were away for a while, weren't we?",
        "The zoo keeper fed the zebras at half past two.",
        "Everything will be fine, you will see.",
        "Honestly, I have no idea what happened next.",
        "A robot is cleaning the floor of the hallway.",
        "Our team won the final match by three goals.",
        "Could we meet for lunch on Friday instead?",
        "The moon rose over the hills like a silver coin.",
        "Ask me again in a few minutes, I am busy.",
        "Wide open eyes watched the fireworks overhead.",
        "Who knew a tiny mouse could make such a noise?",
        "Please keep your voice down in the reading room.",
        "I usually go jogging before breakfast.",
        "The soup was too hot, so we waited a moment.",
        "Oh, what a beautiful morning it is!",
        "La la la, the summer sun is shining high.",
        "Hey, you, over there, come and see this!",
        "Row, row, row your little boat across the lake.",
        "Ooh, you move me like the ocean blue.",
        "All along the open road we sing our song.",
        "Far away, far away, the river flows to the sea.",
    };
    return bank;
}

namespace {

std::string random_voice(Rng& rng) {
    static const char* bases[] = {"en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029"};
    static const char* variants[] = {"m1", "m2", "m3", "m4",    "m5",   "m6",   "m7",    "f1", "f2",
                                     "f3", "f4", "f5", "Annie", "Alex", "john", "linda", "max"};
    return std::string(bases[rng.index(5)]) + "+" + variants[rng.index(17)];
}

int count_words(const std::string& s) {
    std::istringstream words(s);
    return static_cast<int>(std::distance(std::istream_iterator<std::string>(words),
                                          std::istream_iterator<std::string>()));
}

// Each word stretched and set to a note of a wandering melody.
std::string sung(const std::string& sentence, Rng& rng) {
    std::istringstream words(sentence);
    std::string word, out;
    int note = 0;
    while (words >> word) {
        note = std::clamp(note + 10 * (rng.index(5) - 2), -30, 40);
        const int stretch = 35 + 5 * rng.index(6);
        out += "<prosody rate=\"" + std::to_string(stretch) + "%\" pitch=\"" +
               (note >= 0 ? "+" : "") + std::to_string(note) + "%\">" + word + "</prosody> ";
    }
    return out;
}

}  // namespace

SpeechOptions random_speech_options(std::uint64_t seed, double target_seconds) {
    Rng rng(seed, kSpeechStream);
    SpeechOptions o;
    o.voice = random_voice(rng);
    o.noise_seed = static_cast<unsigned>(rng.next() >> 32);
    o.singing = rng.chance(0.2);
    o.rate_wpm = o.singing ? static_cast<int>(rng.uniform(110, 150))
                           : static_cast<int>(rng.uniform(125, 205));
    o.pitch = static_cast<int>(rng.uniform(25, 80));
    o.pitch_range =
        o.singing ? static_cast<int>(rng.uniform(80, 100)) : static_cast<int>(rng.uniform(30, 90));
    const auto& bank = sentence_bank();
    std::string plain, ssml;
    double seconds = 0;
    while (seconds < target_seconds * 1.15 + 0.5) {
        const std::string& s = bank[static_cast<size_t>(rng.index(static_cast<int>(bank.size())))];
        plain += s + " ";
        if (o.singing) ssml += sung(s, rng);
        const double per_word = 60.0 / o.rate_wpm * (o.singing ? 2.2 : 1.0);
        seconds += count_words(s) * per_word + 0.5;  // plus a sentence pause
    }
    o.ssml = o.singing;
    o.text = o.singing ? "<speak>" + ssml + "</speak>" : plain;
    return o;
}

// ---------------------------------------------------------------------------------------------

Viseme viseme_for(const std::string& name) {
    auto is = [&](std::initializer_list<const char*> names) {
        for (const char* n : names)
            if (name == n) return true;
        return false;
    };
    if (name.empty() || name[0] == '_') return {0.0, 0.0, 0.0};
    if (is({"p", "b", "m"})) return {0.0, 0.1, 0.05};
    if (is({"f", "v"})) return {0.08, 0.2, 0.0};
    if (is({"T", "D"})) return {0.18, 0.25, 0.0};
    if (is({"S", "Z", "tS", "dZ"})) return {0.18, 0.0, 0.6};
    if (is({"w", "W"})) return {0.1, 0.0, 0.85};
    if (is({"r", "r-", "3:", "3"})) return {0.25, 0.0, 0.4};
    if (is({"k", "g", "N", "x"})) return {0.28, 0.2, 0.0};
    if (is({"h"})) return {0.35, 0.1, 0.0};
    if (is({"j"})) return {0.18, 0.55, 0.0};
    if (is({"l", "L"})) return {0.25, 0.3, 0.0};
    if (is({"t", "d", "n", "s", "z", "t#", "d#", "?"})) return {0.15, 0.35, 0.0};
    if (is({"aU"})) return {0.75, 0.05, 0.35};
    if (is({"aI", "aI@", "aI3"})) return {0.8, 0.3, 0.0};
    if (name[0] == 'a' || name[0] == 'A') return {0.9, 0.2, 0.0};
    if (is({"OI"})) return {0.6, 0.1, 0.5};
    if (is({"oU", "o@", "o"})) return {0.5, 0.0, 0.7};
    if (name[0] == 'O' || name[0] == '0') return {0.65, 0.0, 0.6};
    if (name[0] == 'u' || name[0] == 'U') return {0.25, 0.0, 0.95};
    if (name[0] == 'i' || name[0] == 'I') return {0.3, 0.85, 0.0};
    if (name[0] == 'e' || name[0] == 'E') return {0.55, 0.5, 0.0};
    if (name[0] == 'V') return {0.6, 0.2, 0.0};
    if (name[0] == '@') return {0.42, 0.2, 0.0};
    return {0.3, 0.2, 0.1};
}

namespace {

struct Key {
    double t;
    Viseme v;
};

bool is_vowel(const std::string& name) {
    return !name.empty() && std::strchr("aAeEiIoOuUV03@", name[0]) != nullptr;
}

std::vector<Key> viseme_keys(const Speech& speech) {
    std::vector<Key> keys{{0.0, {}}};
    for (const auto& p : speech.phonemes) {
        const double t0 = static_cast<double>(p.start) / kSpeechSampleRate;
        const double t1 = static_cast<double>(p.end) / kSpeechSampleRate;
        if (p.is_pause()) {
            // Close the mouth during the pause, not only at its middle.
            keys.push_back({std::min(t0 + 0.06, 0.5 * (t0 + t1)), {}});
            keys.push_back({std::max(t1 - 0.06, 0.5 * (t0 + t1)), {}});
            continue;
        }
        const Viseme v = viseme_for(p.name);
        if (is_vowel(p.name) && t1 - t0 > 0.25) {
            // A long (sung) vowel holds its shape.
            keys.push_back({t0 + 0.06, v});
            keys.push_back({t1 - 0.06, v});
        } else {
            // Consonants are anticipated: the lips reach them a little before their centre.
            const double lead = is_vowel(p.name) ? 0.0 : 0.02;
            keys.push_back({std::max(0.0, 0.5 * (t0 + t1) - lead), v});
        }
    }
    keys.push_back({speech.seconds() + 0.1, {}});
    std::stable_sort(keys.begin(), keys.end(),
                     [](const Key& a, const Key& b) { return a.t < b.t; });
    return keys;
}

}  // namespace

std::vector<Viseme> viseme_track(const Speech& speech, int fps, int frame_count) {
    constexpr double kGridRate = 200.0, kSigma = 0.045;
    const auto keys = viseme_keys(speech);
    const double span = std::max(keys.back().t, (frame_count + 1.0) / fps);
    const int n = static_cast<int>(span * kGridRate) + 2;
    std::vector<Viseme> grid(static_cast<size_t>(n));
    size_t k = 0;
    for (int i = 0; i < n; ++i) {
        const double t = i / kGridRate;
        while (k + 1 < keys.size() && keys[k + 1].t <= t)
            ++k;
        if (k + 1 >= keys.size()) {
            grid[i] = keys.back().v;
            continue;
        }
        const double w =
            std::clamp((t - keys[k].t) / std::max(1e-6, keys[k + 1].t - keys[k].t), 0.0, 1.0);
        const Viseme &a = keys[k].v, &b = keys[k + 1].v;
        grid[i] = {a.jaw_open + (b.jaw_open - a.jaw_open) * w,
                   a.lip_width + (b.lip_width - a.lip_width) * w,
                   a.lip_round + (b.lip_round - a.lip_round) * w};
    }
    const int radius = static_cast<int>(3 * kSigma * kGridRate);
    std::vector<Viseme> out(static_cast<size_t>(std::max(0, frame_count)));
    for (int f = 0; f < frame_count; ++f) {
        const double centre = (f + 0.5) / fps * kGridRate;  // the middle of the frame's audio
        double wsum = 0, jaw = 0, width = 0, round = 0;
        for (int i = static_cast<int>(centre) - radius; i <= static_cast<int>(centre) + radius;
             ++i) {
            const Viseme& v = grid[static_cast<size_t>(std::clamp(i, 0, n - 1))];
            const double d = (i - centre) / (kSigma * kGridRate), w = std::exp(-0.5 * d * d);
            wsum += w;
            jaw += w * v.jaw_open;
            width += w * v.lip_width;
            round += w * v.lip_round;
        }
        out[f] = {jaw / wsum, width / wsum, round / wsum};
    }
    return out;
}

std::vector<double> energy_track(const Speech& speech, int fps, int frame_count) {
    std::vector<double> rms(static_cast<size_t>(std::max(0, frame_count)), 0.0);
    const auto per_frame = static_cast<double>(kSpeechSampleRate) / fps;
    for (int f = 0; f < frame_count; ++f) {
        const auto a = static_cast<size_t>(f * per_frame);
        const auto b = std::min(speech.samples.size(), static_cast<size_t>((f + 1) * per_frame));
        double sum = 0;
        for (size_t i = a; i < b; ++i)
            sum += speech.samples[i] * speech.samples[i];
        rms[f] = b > a ? std::sqrt(sum / (b - a)) : 0.0;
    }
    std::vector<double> sorted = rms;
    std::sort(sorted.begin(), sorted.end());
    const double p95 = sorted.empty() ? 0 : sorted[sorted.size() * 95 / 100];
    for (auto& e : rms)
        e = p95 > 1e-6 ? std::min(1.0, e / p95) : 0.0;
    return rms;
}

}  // namespace loopy::synth
