#pragma once
// Live generation, Qt-free: audio arriving in real time (a microphone, or a file replayed at
// real-time pace for `loopy bench live`) -> bounded pending audio with an explicit drop policy ->
// the Session, clip by clip, on the calling (inference) thread. The GUI's live mode and the
// benchmark run this same loop; see docs/live-audio.md.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "audio/microphone.h"
#include "core/decode_worker.h"
#include "core/engine.h"

namespace loopy::render {

using LiveClock = std::chrono::steady_clock;
// What "now" is for a replay: steady_clock by default; tests pass a clock they advance
// themselves, so that what arrives when does not depend on the machine's speed.
using LiveClockSource = std::function<LiveClock::time_point()>;

// Where live audio comes from. Read on the inference thread only.
class LiveAudioSource {
  public:
    virtual ~LiveAudioSource() = default;
    virtual void start() = 0;
    virtual void stop() = 0;
    virtual bool running() const = 0;  // false once stopped or (a replay) exhausted
    // Appends what arrived since the last read, 16 kHz mono, stamped with its newest sample's
    // capture time.
    virtual audio::MicrophoneRead read_16k(std::vector<float>& out) = 0;
    // Drops the oldest unread audio beyond `keep_seconds` (counted in stats().discarded_frames).
    virtual std::size_t skip_to_latest(double keep_seconds) = 0;
    virtual audio::MicrophoneStats stats() const = 0;
    virtual int sample_rate() const = 0;
    virtual std::string name() const = 0;
};

// Opens the microphone (throws loopy::Error "no microphone: ..." when there is none).
std::unique_ptr<LiveAudioSource> open_microphone_source(const audio::MicrophoneOptions& options);
// Plays `samples` (16 kHz mono) as if captured live from start(): sample i becomes readable at
// start + i / 16 kHz of `clock`. `loops` > 1 repeats the audio; running() turns false after the
// last sample.
std::unique_ptr<LiveAudioSource> replay_source(std::vector<float> samples, int loops = 1,
                                               LiveClockSource clock = LiveClock::now);

struct LiveOptions {
    // Audio waiting for the Session beyond this is dropped, oldest first, and counted: when
    // inference is slower than real time the preview skips ahead to the newest audio instead of
    // lagging ever more. The Session itself only ever holds its next clip's audio.
    // 0: default_max_pending_seconds(). A larger bound lets a slow clip pass without a jump in the
    // audio, but every second of it is a second of latency whenever inference is behind; a
    // smaller one leaves inference waiting for audio.
    double max_pending_seconds = 0;
    // Decode clip n on a thread of its own (core/decode_worker.h) while clip n+1 is denoised;
    // on_frame is then called on that thread. Off by default: on the 2-core CPU the denoiser's
    // two OpenMP threads already fill both cores: three pairs of one-minute A/B runs gave fewer
    // frames per second and ~150 ms more p95 latency with it on (docs/architecture.md). It is for
    // machines with cores to spare.
    bool overlap_decode = false;
};

// One clip's audio plus three frames (0.6 s for 12-frame clips). A clip's own audio is the least
// that never leaves inference waiting once it is behind; the three frames absorb the clip-to-clip
// variation of generation time (p95 - p50 of the latency was ~80 ms in ten minutes live on the
// 2-core CPU) without a jump, and bound how old the audio a clip starts on can be.
inline constexpr int kPendingSlackFrames = 3;
double default_max_pending_seconds(const model::LoopyConfig& config);

struct LiveCounters {
    double captured_seconds = 0;    // audio the source delivered
    double pushed_seconds = 0;      // 16 kHz audio given to the Session
    double discarded_seconds = 0;   // dropped by the pending-audio bound (the oldest audio)
    double overflow_seconds = 0;    // lost because the capture ring was full (the newest audio)
    std::int64_t frames = 0;        // handed to on_frame (with overlap_decode: decoded too)
    double generating_seconds = 0;  // time spent inside Session::generate_clip
    double wall_seconds = 0;        // from the first clip's start to the last clip's end
    double generated_fps = 0;       // frames / generating_seconds
    float peak = 0;                 // loudest sample given to the Session: did sound reach it
    int clip_steps = 0;             // DDIM steps the last clip ran with
};

// A generated frame with the capture time of the newest audio sample its clip needed: the start
// of the microphone-to-display latency.
struct LiveFrameEvent {
    const Frame& frame;
    LiveClock::time_point audio_captured;
    bool after_stop;  // generated after Stop from audio captured before it: not timed
};

struct LiveCallbacks {
    std::function<void(const LiveFrameEvent&)> on_frame;
    std::function<void()> on_tick;  // between reads and clips: stats publishing
    std::function<bool()> stop_requested;
    std::function<bool()> cancel_requested;  // also checked before every DDIM step
};

class LiveGenerator {
  public:
    LiveGenerator(std::unique_ptr<LiveAudioSource> source, std::shared_ptr<Session> session,
                  LiveOptions options = {});
    // Captures and generates until the stop is requested or the source ends, then turns what
    // was captured into frames. Throws Cancelled after a cancel request.
    void run(const LiveCallbacks& callbacks);
    LiveCounters counters() const;
    const LiveAudioSource& source() const { return *source_; }
    const LiveOptions& options() const { return options_; }  // the bound resolved

  private:
    void read_source();
    void discard_pending(std::size_t count);
    void feed_session(bool everything);
    std::int64_t clip_end() const;
    void generate_clip();
    void loop();
    void drain();
    void emit(const Frame& frame);              // from the decode worker
    void deliver(const LiveFrameEvent& event);  // on_frame, then counted in delivered_
    bool stop_requested() const;
    bool cancelled() const;

    // When each stretch of a 16 kHz stream was captured, from the reads' stamps.
    class CaptureClock {
      public:
        void add(std::int64_t end, LiveClock::time_point newest);
        LiveClock::time_point time_of(std::int64_t index) const;

      private:
        struct Mark {
            std::int64_t end;  // one past the read's last sample
            LiveClock::time_point newest;
        };
        std::vector<Mark> marks_;  // bounded: the oldest half goes when full
    };

    std::unique_ptr<LiveAudioSource> source_;
    std::shared_ptr<Session> session_;
    LiveOptions options_;
    model::Wav2Vec2Config encoder_;
    model::AudioFeatureOptions audio_options_;
    const LiveCallbacks* callbacks_ = nullptr;
    std::vector<float> chunk_, pending_;
    std::int64_t pending_start_ = 0;  // source-stream index (16 kHz) of pending_[0]
    std::int64_t read_total_ = 0, discarded_ = 0, pushed_ = 0;
    CaptureClock source_clock_, session_clock_;
    bool draining_ = false;
    float peak_ = 0;
    int clip_steps_ = 0;
    std::int64_t frames_ = 0;  // denoised: with overlap_decode some may still be decoding
    std::atomic<std::int64_t> delivered_{0};  // handed to on_frame (the decode worker's thread)
    double generating_seconds_ = 0;
    LiveClock::time_point first_clip_{}, last_clip_{};

    // With overlap_decode: clips waiting for (or in) the decode worker, with the stamps their
    // frames carry.
    struct ClipStamp {
        std::int64_t end_frame;  // one past the clip's last frame
        LiveClock::time_point audio_captured;
        bool after_stop;
    };
    std::mutex stamps_mutex_;
    std::deque<ClipStamp> stamps_;
    std::unique_ptr<DecodeWorker> decoder_;
};

}  // namespace loopy::render
