#include "render/synth_dataset.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"
#include "render/synth_random.h"
#include "render/video_writer.h"

namespace loopy::synth {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr std::uint64_t kArticulationStream = 5;
constexpr int kWindow = 12;

// Rounded for compact, stable JSON.
double r4(double x) {
    return std::round(x * 1e4) / 1e4;
}
double r3(double x) {
    return std::round(x * 1e3) / 1e3;
}

void fit_audio(Speech& speech, int frame_count, int fps) {
    const auto n = static_cast<std::int64_t>(frame_count) * kSpeechSampleRate / fps;
    speech.samples.resize(static_cast<size_t>(n), 0.0f);
    std::vector<Phoneme> kept;
    for (auto p : speech.phonemes) {
        if (p.start >= n) break;
        p.end = std::min(p.end, n);
        kept.push_back(p);
    }
    speech.phonemes = kept;
}

std::vector<double> stress_times(const Speech& speech) {
    std::vector<double> t;
    for (const auto& p : speech.phonemes)
        if (p.stress == 2) t.push_back(0.5 * (p.start + p.end) / kSpeechSampleRate);
    return t;
}

FaceState frame_state(const HeadPose& pose, const Viseme& v, double jaw_gain, double blink,
                      double brow) {
    FaceState s;
    s.yaw = pose.yaw;
    s.pitch = pose.pitch;
    s.roll = pose.roll;
    s.tx = pose.tx;
    s.ty = pose.ty;
    s.scale = pose.scale;
    s.jaw_open = std::clamp(v.jaw_open * jaw_gain, 0.0, 1.0);
    s.lip_width = std::clamp(v.lip_width, 0.0, 1.0);
    s.lip_round = std::clamp(v.lip_round, 0.0, 1.0);
    s.blink = blink;
    s.brow_raise = brow;
    return s;
}

json style_json(const FaceStyle& s) {
    auto rgb = [](Rgb c) { return json::array({c[0], c[1], c[2]}); };
    return {{"face_width", r4(s.face_width)},
            {"chin_y", r4(s.chin_y)},
            {"jaw_squareness", r4(s.jaw_squareness)},
            {"hair", to_string(s.hair)},
            {"glasses", s.glasses},
            {"background", to_string(s.background)},
            {"light_angle", r4(s.light_angle)},
            {"light_strength", r4(s.light_strength)},
            {"skin", rgb(s.skin)},
            {"hair_colour", rgb(s.hair_colour)},
            {"iris", rgb(s.iris)},
            {"lips", rgb(s.lips)},
            {"clothing", rgb(s.clothing)},
            {"background_a", rgb(s.background_a)},
            {"background_b", rgb(s.background_b)},
            {"mouth_width", r4(s.mouth_width)},
            {"eye_size", r4(s.eye_size)}};
}

json speech_json(const Speech& sp) {
    json phonemes = json::array();
    for (const auto& p : sp.phonemes)
        phonemes.push_back(
            {{"name", p.name}, {"start", p.start}, {"end", p.end}, {"stress", p.stress}});
    const auto& o = sp.options;
    return {{"text", o.text},         {"ssml", o.ssml},      {"voice", o.voice},
            {"rate_wpm", o.rate_wpm}, {"pitch", o.pitch},    {"pitch_range", o.pitch_range},
            {"singing", o.singing},   {"phonemes", phonemes}};
}

json frame_json(int index, int fps, const FrameTruth& t) {
    const FaceState& s = t.state;
    json kp = json::array();
    for (const auto& p : t.keypoints)
        kp.push_back({r3(p.x), r3(p.y)});
    return {{"index", index},
            {"time", r4(static_cast<double>(index) / fps)},
            {"yaw", r4(s.yaw)},
            {"pitch", r4(s.pitch)},
            {"roll", r4(s.roll)},
            {"tx", r4(s.tx)},
            {"ty", r4(s.ty)},
            {"scale", r4(s.scale)},
            {"jaw_open", r4(s.jaw_open)},
            {"lip_width", r4(s.lip_width)},
            {"lip_round", r4(s.lip_round)},
            {"blink", r4(s.blink)},
            {"brow_raise", r4(s.brow_raise)},
            {"energy", r4(t.energy)},
            {"mouth_pixels", r4(t.mouth_pixels * 1e2) / 1e2},
            {"keypoints", kp}};
}

void write_text(const std::string& path, const std::string& text) {
    write_file_atomically(path, text.data(), text.size());
}

void write_png(const std::string& path, const cv::Mat& rgb) {
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    std::vector<uchar> png;
    if (!cv::imencode(".png", bgr, png)) throw Error("could not encode " + path);
    write_file_atomically(path, png.data(), png.size());
}

void write_video(const Clip& clip, const std::string& path) {
    render::VideoWriterOptions vo;
    vo.width = clip.options.size;
    vo.height = clip.options.size;
    vo.fps = clip.options.fps;
    vo.overwrite = true;
    render::VideoWriter writer(path, vo);
    writer.set_audio(clip.speech.samples, kSpeechSampleRate);
    for (const auto& f : clip.frames)
        writer.add_frame(f.data, static_cast<int>(f.step));
    writer.finish();
}

}  // namespace

const char* to_string(Split split) {
    return split == Split::Train ? "train" : "heldout";
}

Split split_of(std::uint64_t seed) {
    return seed < kHeldOutFirstSeed ? Split::Train : Split::HeldOut;
}

std::string clip_name(std::uint64_t seed) {
    char name[40];
    std::snprintf(name, sizeof name, "clip_%07llu", static_cast<unsigned long long>(seed));
    return name;
}

void check_clip_options(const ClipOptions& o) {
    if (o.size != 128 && o.size != 256 && o.size != 512)
        throw Error("synthetic clip size must be 128, 256 or 512 (got " + std::to_string(o.size) +
                    ")");
    if (!(o.seconds > 0 && o.seconds <= 600))
        throw Error("synthetic clip length must be in (0, 600] seconds");
    if (o.fps < 1 || o.fps > 60) throw Error("synthetic clip fps must be 1..60");
}

Clip make_clip(std::uint64_t seed, const ClipOptions& options,
               const std::function<void(int)>& on_frame) {
    check_clip_options(options);
    Clip clip;
    clip.seed = seed;
    clip.options = options;
    clip.style = random_face_style(seed);
    const int n = std::max(1, static_cast<int>(std::lround(options.seconds * options.fps)));
    clip.speech = synthesize_speech(random_speech_options(seed, options.seconds));
    fit_audio(clip.speech, n, options.fps);

    const auto visemes = viseme_track(clip.speech, options.fps, n);
    const auto energy = energy_track(clip.speech, options.fps, n);
    const MotionTrack motion =
        make_motion(seed, {options.fps, n, energy, stress_times(clip.speech)});
    clip.blink_onsets = motion.blink_onsets;
    Rng rng(seed, kArticulationStream);
    const double jaw_gain = rng.uniform(0.9, 1.25) * (clip.speech.options.singing ? 1.1 : 1.0);

    FaceRenderer renderer(clip.style, options.size);
    std::vector<Keypoints> keypoints;
    for (int i = 0; i < n; ++i) {
        FrameTruth t;
        t.state =
            frame_state(motion.pose[i], visemes[i], jaw_gain, motion.blink[i], motion.brow[i]);
        FaceFrame f = renderer.draw(t.state);
        t.keypoints = f.keypoints;
        t.energy = energy[i];
        t.mouth_pixels = eval::mouth_opening(f.rgb);
        keypoints.push_back(f.keypoints);
        clip.frames.push_back(f.rgb);
        clip.truth.push_back(t);
        if (on_frame) on_frame(i + 1);
    }
    clip.windows = eval::window_variances(keypoints, cv::Size(options.size, options.size), kWindow);
    return clip;
}

std::vector<std::uint8_t> wav_bytes(const std::vector<float>& samples, int sample_rate) {
    std::vector<std::uint8_t> out;
    auto u32 = [&](std::uint32_t v) {
        for (int i = 0; i < 4; ++i)
            out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    };
    auto u16 = [&](std::uint16_t v) {
        out.push_back(static_cast<std::uint8_t>(v));
        out.push_back(static_cast<std::uint8_t>(v >> 8));
    };
    auto tag = [&](const char* t) { out.insert(out.end(), t, t + 4); };
    const auto data_bytes = static_cast<std::uint32_t>(samples.size() * 2);
    tag("RIFF");
    u32(36 + data_bytes);
    tag("WAVE");
    tag("fmt ");
    u32(16);
    u16(1);  // PCM
    u16(1);  // mono
    u32(static_cast<std::uint32_t>(sample_rate));
    u32(static_cast<std::uint32_t>(sample_rate * 2));
    u16(2);
    u16(16);
    tag("data");
    u32(data_bytes);
    for (float s : samples) {
        const long v = std::lround(std::clamp(s, -1.0f, 1.0f) * 32767.0f);
        u16(static_cast<std::uint16_t>(static_cast<std::int16_t>(v)));
    }
    return out;
}

std::string truth_json(const Clip& clip) {
    const auto& o = clip.options;
    json frames = json::array();
    for (size_t i = 0; i < clip.truth.size(); ++i)
        frames.push_back(frame_json(static_cast<int>(i), o.fps, clip.truth[i]));
    json windows = json::array();
    for (const auto& w : clip.windows)
        windows.push_back({{"first_frame", w.first_frame},
                           {"head_variance", w.head},
                           {"expression_variance", w.expression}});
    json onsets = json::array();
    for (double t : clip.blink_onsets)
        onsets.push_back(r4(t));
    const json doc = {{"format", "loopy-synth-clip"},
                      {"version", 1},
                      {"name", clip_name(clip.seed)},
                      {"seed", clip.seed},
                      {"split", to_string(split_of(clip.seed))},
                      {"size", o.size},
                      {"fps", o.fps},
                      {"frame_count", clip.frame_count()},
                      {"seconds", r4(static_cast<double>(clip.frame_count()) / o.fps)},
                      {"sample_rate", kSpeechSampleRate},
                      {"style", style_json(clip.style)},
                      {"speech", speech_json(clip.speech)},
                      {"blink_onsets", onsets},
                      {"window_frames", kWindow},
                      {"windows", windows},
                      {"frames", frames}};
    return doc.dump(1) + "\n";
}

void write_clip(const Clip& clip, const std::string& clip_dir) {
    fs::create_directories(clip_dir);
    const auto wav = wav_bytes(clip.speech.samples, kSpeechSampleRate);
    write_file_atomically(clip_dir + "/audio.wav", wav.data(), wav.size());
    write_text(clip_dir + "/truth.json", truth_json(clip));
    if (clip.options.write_png) {
        fs::create_directories(clip_dir + "/frames");
        for (size_t i = 0; i < clip.frames.size(); ++i) {
            char name[48];
            std::snprintf(name, sizeof name, "/frames/%06zu.png", i);
            write_png(clip_dir + name, clip.frames[i]);
        }
    }
    if (clip.options.write_mp4) write_video(clip, clip_dir + "/video.mp4");
}

ClipSummary generate_clip(std::uint64_t seed, const ClipOptions& options,
                          const std::string& out_dir, const std::function<void(int)>& on_frame) {
    const Clip clip = make_clip(seed, options, on_frame);
    ClipSummary s;
    s.name = clip_name(seed);
    s.dir = out_dir + "/" + s.name;
    s.seed = seed;
    s.frames = clip.frame_count();
    s.voice = clip.speech.options.voice;
    s.singing = clip.speech.options.singing;
    s.text = clip.speech.options.text;
    write_clip(clip, s.dir);
    return s;
}

std::uint64_t clip_seed(const SynthOptions& options, int index) {
    const std::uint64_t within = options.seed + static_cast<std::uint64_t>(index);
    if (options.split == Split::HeldOut) return kHeldOutFirstSeed + within;
    if (within >= kHeldOutFirstSeed)
        throw Error("training seeds must stay below " + std::to_string(kHeldOutFirstSeed) +
                    " (use --split heldout for held-out clips)");
    return within;
}

namespace {

json read_dataset_clips(const std::string& path) {
    std::ifstream in(path);
    if (!in) return json::array();
    try {
        const json doc = json::parse(in);
        if (doc.contains("clips") && doc["clips"].is_array()) return doc["clips"];
    } catch (const json::exception& e) {
        loopy::logger()->warn("ignoring unreadable {}: {}", path, e.what());
    }
    return json::array();
}

void write_dataset_json(const SynthOptions& options, const std::vector<ClipSummary>& made) {
    const std::string path = options.out + "/dataset.json";
    json clips = read_dataset_clips(path);
    for (const auto& c : made) {
        const json entry = {{"name", c.name},
                            {"seed", c.seed},
                            {"split", to_string(split_of(c.seed))},
                            {"size", options.clip.size},
                            {"fps", options.clip.fps},
                            {"frames", c.frames},
                            {"voice", c.voice},
                            {"singing", c.singing},
                            {"text", c.text}};
        auto same = std::find_if(clips.begin(), clips.end(),
                                 [&](const json& j) { return j.value("name", "") == c.name; });
        if (same != clips.end())
            *same = entry;
        else
            clips.push_back(entry);
    }
    std::sort(clips.begin(), clips.end(), [](const json& a, const json& b) {
        return a.value("seed", std::uint64_t{0}) < b.value("seed", std::uint64_t{0});
    });
    const auto& o = options.clip;
    const json doc = {{"format", "loopy-synth-dataset"},
                      {"version", 1},
                      {"heldout_first_seed", kHeldOutFirstSeed},
                      {"options",
                       {{"size", o.size},
                        {"seconds", o.seconds},
                        {"fps", o.fps},
                        {"png", o.write_png},
                        {"mp4", o.write_mp4},
                        {"sample_rate", kSpeechSampleRate}}},
                      {"clips", clips}};
    write_text(path, doc.dump(1) + "\n");
}

}  // namespace

std::vector<ClipSummary> run_synth(const SynthOptions& options, const SynthProgress& progress) {
    if (options.out.empty()) throw Error("synth: an output folder is needed");
    if (options.clips < 1) throw Error("synth: at least one clip is needed");
    check_clip_options(options.clip);
    for (int i = 0; i < options.clips; ++i)
        clip_seed(options, i);  // range check up front
    fs::create_directories(options.out);
    const std::int64_t per_clip =
        std::max(1L, static_cast<long>(std::lround(options.clip.seconds * options.clip.fps)));
    const std::int64_t total = per_clip * options.clips;
    std::vector<ClipSummary> made;
    for (int i = 0; i < options.clips; ++i) {
        const std::uint64_t seed = clip_seed(options, i);
        const std::string name = clip_name(seed);
        made.push_back(generate_clip(seed, options.clip, options.out, [&](int frame) {
            if (progress) progress(i * per_clip + frame, total, name);
        }));
        loopy::logger()->debug("synth: wrote {}", made.back().dir);
    }
    write_dataset_json(options, made);
    return made;
}

}  // namespace loopy::synth
