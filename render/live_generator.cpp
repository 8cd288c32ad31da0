#include "render/live_generator.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "core/error.h"
#include "core/log.h"

namespace loopy::render {
namespace {

constexpr int kSampleRate = 16000;

double seconds_between(LiveClock::time_point a, LiveClock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
}

LiveClock::duration seconds(double s) {
    return std::chrono::duration_cast<LiveClock::duration>(std::chrono::duration<double>(s));
}

class MicrophoneSource final : public LiveAudioSource {
  public:
    explicit MicrophoneSource(const audio::MicrophoneOptions& options) : mic_(options) {}
    void start() override { mic_.start(); }
    void stop() override { mic_.stop(); }
    bool running() const override { return mic_.running(); }
    audio::MicrophoneRead read_16k(std::vector<float>& out) override { return mic_.read_16k(out); }
    std::size_t skip_to_latest(double keep) override { return mic_.skip_to_latest(keep); }
    audio::MicrophoneStats stats() const override { return mic_.stats(); }
    int sample_rate() const override { return mic_.sample_rate(); }
    std::string name() const override { return mic_.device().name; }

  private:
    audio::MicrophoneCapture mic_;
};

// Audio "arrives" as the clock passes: no thread, no ring, exact capture times.
class ReplaySource final : public LiveAudioSource {
  public:
    ReplaySource(std::vector<float> samples, int loops, LiveClockSource clock)
        : samples_(std::move(samples)),
          total_(static_cast<std::int64_t>(samples_.size()) * std::max(loops, 1)),
          clock_(clock ? std::move(clock) : LiveClockSource(LiveClock::now)) {
        if (samples_.empty()) throw Error("live replay: no audio");
    }
    void start() override {
        start_ = clock_();
        started_ = true;
        stopped_at_ = -1;
    }
    void stop() override { stopped_at_ = arrived(); }
    bool running() const override { return started_ && stopped_at_ < 0 && arrived() < total_; }
    audio::MicrophoneRead read_16k(std::vector<float>& out) override {
        audio::MicrophoneRead read;
        const std::int64_t end = arrived();
        read.first_index = static_cast<std::uint64_t>(read_);
        for (; read_ < end; ++read_)
            out.push_back(samples_[static_cast<std::size_t>(read_) % samples_.size()]);
        read.samples = static_cast<std::size_t>(end - static_cast<std::int64_t>(read.first_index));
        read.has_time = read.samples > 0;
        read.newest_capture_time = start_ + seconds(double(end) / kSampleRate);
        stats_.read_frames += read.samples;
        return read;
    }
    std::size_t skip_to_latest(double keep_seconds) override {
        const auto keep = static_cast<std::int64_t>(keep_seconds * kSampleRate);
        const std::int64_t skip = std::max<std::int64_t>(arrived() - read_ - keep, 0);
        read_ += skip;
        stats_.discarded_frames += static_cast<std::uint64_t>(skip);
        return static_cast<std::size_t>(skip);
    }
    audio::MicrophoneStats stats() const override {
        auto s = stats_;
        s.captured_frames = static_cast<std::uint64_t>(arrived());
        return s;
    }
    int sample_rate() const override { return kSampleRate; }
    std::string name() const override { return "replay"; }

  private:
    std::int64_t arrived() const {
        if (!started_) return 0;
        if (stopped_at_ >= 0) return stopped_at_;
        const auto n = static_cast<std::int64_t>(seconds_between(start_, clock_()) * kSampleRate);
        return std::min(n, total_);
    }

    std::vector<float> samples_;
    std::int64_t total_;
    LiveClockSource clock_;
    std::int64_t read_ = 0;
    std::int64_t stopped_at_ = -1;
    bool started_ = false;
    LiveClock::time_point start_{};
    audio::MicrophoneStats stats_;
};

}  // namespace

std::unique_ptr<LiveAudioSource> open_microphone_source(const audio::MicrophoneOptions& options) {
    return std::make_unique<MicrophoneSource>(options);
}

std::unique_ptr<LiveAudioSource> replay_source(std::vector<float> samples, int loops,
                                               LiveClockSource clock) {
    return std::make_unique<ReplaySource>(std::move(samples), loops, std::move(clock));
}

double default_max_pending_seconds(const model::LoopyConfig& config) {
    return double(config.num_frames + kPendingSlackFrames) / model::kVideoFps;
}

// --- capture times ---

void LiveGenerator::CaptureClock::add(std::int64_t end, LiveClock::time_point newest) {
    constexpr std::size_t kMaxMarks = 4096;  // minutes of 20 ms reads
    if (marks_.size() >= kMaxMarks)
        marks_.erase(marks_.begin(), marks_.begin() + static_cast<std::ptrdiff_t>(kMaxMarks / 2));
    marks_.push_back({end, newest});
}

// When sample `index` was captured: 1/16000 s per sample before the newest sample of the read
// that brought it.
LiveClock::time_point LiveGenerator::CaptureClock::time_of(std::int64_t index) const {
    if (marks_.empty()) return LiveClock::now();
    const auto it = std::lower_bound(marks_.begin(), marks_.end(), index,
                                     [](const Mark& m, std::int64_t i) { return m.end <= i; });
    const Mark& mark = it == marks_.end() ? marks_.back() : *it;
    const double before = double(std::max<std::int64_t>(mark.end - 1 - index, 0)) / kSampleRate;
    return mark.newest - seconds(before);
}

// --- the loop ---

LiveGenerator::LiveGenerator(std::unique_ptr<LiveAudioSource> source,
                             std::shared_ptr<Session> session, LiveOptions options)
    : source_(std::move(source)),
      session_(std::move(session)),
      options_(options),
      encoder_(session_->model().config().audio_encoder_config()) {
    if (options_.max_pending_seconds < 0) throw Error("live: the pending-audio bound is negative");
    if (options_.max_pending_seconds == 0)
        options_.max_pending_seconds = default_max_pending_seconds(session_->model().config());
    audio_options_ = model::audio_feature_options(
        session_->model().config(), session_->model().options().audio_context_seconds);
    chunk_.reserve(kSampleRate);
}

bool LiveGenerator::stop_requested() const {
    return callbacks_->stop_requested && callbacks_->stop_requested();
}

bool LiveGenerator::cancelled() const {
    return callbacks_->cancel_requested && callbacks_->cancel_requested();
}

void LiveGenerator::run(const LiveCallbacks& callbacks) {
    callbacks_ = &callbacks;
    if (options_.overlap_decode)
        decoder_ = std::make_unique<DecodeWorker>(*session_, [this](const Frame& f) { emit(f); });
    try {
        loop();
        drain();
    } catch (...) {
        decoder_.reset();  // drops the clips still waiting; waits for the one being decoded
        callbacks_ = nullptr;
        throw;
    }
    decoder_.reset();
    if (callbacks.on_tick) callbacks.on_tick();
    callbacks_ = nullptr;
    if (callbacks.cancel_requested && callbacks.cancel_requested()) throw Cancelled();
}

void LiveGenerator::loop() {
    source_->start();
    while (!stop_requested() && !cancelled() && source_->running()) {
        read_source();
        feed_session(false);
        if (session_->clip_ready())
            generate_clip();
        else
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (callbacks_->on_tick) callbacks_->on_tick();
    }
    source_->stop();
}

// Stopped: what was captured (at most the pending bound) is still turned into frames.
void LiveGenerator::drain() {
    draining_ = true;
    if (cancelled()) return;
    read_source();
    feed_session(true);
    session_->end_audio();
    while (!cancelled() && session_->clip_ready())
        generate_clip();
    if (decoder_ && !cancelled()) {
        decoder_->finish();
        if (frames_ > 0) last_clip_ = LiveClock::now();
    }
}

// Takes what arrived into pending_, then applies the drop policy: pending audio beyond the bound
// is discarded, oldest first. (The source is trimmed to the same bound first, so audio that
// would be discarded anyway is not resampled.)
void LiveGenerator::read_source() {
    // Stop ends the capture at once (also in the middle of a clip): no audio after the press.
    if (stop_requested() && source_->running()) source_->stop();
    source_->skip_to_latest(options_.max_pending_seconds);
    chunk_.clear();
    const auto read = source_->read_16k(chunk_);
    if (read.samples > 0) {
        pending_.insert(pending_.end(), chunk_.begin(), chunk_.end());
        read_total_ += static_cast<std::int64_t>(read.samples);
        if (read.has_time) source_clock_.add(read_total_, read.newest_capture_time);
    }
    const auto bound = static_cast<std::size_t>(options_.max_pending_seconds * kSampleRate);
    if (pending_.size() > bound) discard_pending(pending_.size() - bound);
}

void LiveGenerator::discard_pending(std::size_t count) {
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(count));
    pending_start_ += static_cast<std::int64_t>(count);
    discarded_ += static_cast<std::int64_t>(count);
}

// Gives the Session the audio its next clip needs (everything: at the end), oldest first.
void LiveGenerator::feed_session(bool everything) {
    const std::int64_t want =
        everything ? static_cast<std::int64_t>(pending_.size()) : clip_end() - pushed_;
    const auto count = static_cast<std::size_t>(
        std::clamp<std::int64_t>(want, 0, static_cast<std::int64_t>(pending_.size())));
    if (count == 0) return;
    session_->push_audio(pending_.data(), count);
    pushed_ += static_cast<std::int64_t>(count);
    for (std::size_t i = 0; i < count; ++i)
        peak_ = std::max(peak_, std::abs(pending_[i]));
    const std::int64_t newest = pending_start_ + static_cast<std::int64_t>(count) - 1;
    session_clock_.add(pushed_, source_clock_.time_of(newest));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(count));
    pending_start_ += static_cast<std::int64_t>(count);
}

// One past the newest sample the next clip needs (its lookahead included).
std::int64_t LiveGenerator::clip_end() const {
    return model::plan_audio_window(encoder_, audio_options_, session_->next_frame(),
                                    session_->model().config().num_frames)
        .end_sample();
}

void LiveGenerator::generate_clip() {
    const std::int64_t newest_needed = std::min(clip_end(), pushed_) - 1;
    const auto audio_captured = session_clock_.time_of(newest_needed);
    const auto start = LiveClock::now();
    if (frames_ == 0) first_clip_ = start;
    // The callbacks also keep reading the source (same thread: the ring's one consumer), so
    // that a clip slower than the ring is long does not overflow it and lose the newest audio.
    const auto on_progress = [&](const Progress& progress) {
        if (cancelled()) session_->cancel();
        clip_steps_ = progress.steps;
        read_source();
    };
    if (decoder_) {
        if (auto clip = session_->denoise_clip(on_progress)) {
            {
                std::lock_guard<std::mutex> lock(stamps_mutex_);
                stamps_.push_back({clip->first_frame + clip->frames, audio_captured, draining_});
            }
            frames_ += clip->frames;
            decoder_->submit(std::move(*clip));
        }
    } else {
        frames_ += session_->generate_clip(
            [&](const Frame& frame) {
                deliver({frame, audio_captured, draining_});
                read_source();
            },
            on_progress);
    }
    last_clip_ = LiveClock::now();
    generating_seconds_ += seconds_between(start, last_clip_);
    logger()->debug("live clip at frame {}: its newest audio was {:.0f} ms old, took {:.0f} ms",
                    frames_, seconds_between(audio_captured, start) * 1000,
                    seconds_between(start, last_clip_) * 1000);
}

// On the decode worker's thread: the frame with its clip's stamps.
void LiveGenerator::emit(const Frame& frame) {
    ClipStamp stamp;
    {
        std::lock_guard<std::mutex> lock(stamps_mutex_);
        while (stamps_.size() > 1 && frame.index >= stamps_.front().end_frame)
            stamps_.pop_front();
        stamp = stamps_.front();
    }
    deliver({frame, stamp.audio_captured, stamp.after_stop});
}

// Both paths hand frames over here, so that the count is of frames on_frame has had.
void LiveGenerator::deliver(const LiveFrameEvent& event) {
    if (callbacks_->on_frame) callbacks_->on_frame(event);
    delivered_.fetch_add(1);
}

LiveCounters LiveGenerator::counters() const {
    const auto s = source_->stats();
    const double rate = std::max(source_->sample_rate(), 1);
    LiveCounters c;
    c.captured_seconds = double(s.captured_frames) / rate;
    c.discarded_seconds = double(s.discarded_frames) / rate + double(discarded_) / kSampleRate;
    c.overflow_seconds = double(s.dropped_frames) / rate;
    c.pushed_seconds = double(pushed_) / kSampleRate;
    c.frames = delivered_.load();
    c.generating_seconds = generating_seconds_;
    c.wall_seconds = frames_ > 0 ? seconds_between(first_clip_, last_clip_) : 0;
    c.generated_fps = generating_seconds_ > 0 ? double(c.frames) / generating_seconds_ : 0;
    c.peak = peak_;
    c.clip_steps = clip_steps_;
    return c;
}

}  // namespace loopy::render
