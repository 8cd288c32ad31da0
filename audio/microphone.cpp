#include "audio/microphone.h"

#include <portaudio.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>

#include "audio/resampler.h"
#include "audio/sample_ring.h"
#include "core/error.h"
#include "core/log.h"

namespace loopy::audio {

namespace {

constexpr int kOutputRate = 16000;
constexpr std::size_t kMixFrames = 4096;  // the callback downmixes in slices of this size
constexpr auto kRelaxed = std::memory_order_relaxed;

using Clock = std::chrono::steady_clock;

// The (ring index, steady time) of the newest captured sample, written by the callback and read by
// any thread. A seqlock, so that a reader never pairs one callback's index with another's time;
// the writer never waits.
class CaptureStamp {
  public:
    struct Value {
        std::uint64_t end = 0;  // ring index one past the newest sample
        std::int64_t ns = 0;    // steady-clock time of that newest sample
    };
    void store(Value v) noexcept {
        const std::uint32_t seq = seq_.load(kRelaxed);
        seq_.store(seq + 1, kRelaxed);  // odd: a write is in progress
        std::atomic_thread_fence(std::memory_order_release);
        end_.store(v.end, kRelaxed);
        ns_.store(v.ns, kRelaxed);
        seq_.store(seq + 2, std::memory_order_release);
    }
    Value load() const noexcept {
        for (;;) {
            const std::uint32_t before = seq_.load(std::memory_order_acquire);
            const Value v{end_.load(kRelaxed), ns_.load(kRelaxed)};
            std::atomic_thread_fence(std::memory_order_acquire);
            if (!(before & 1) && seq_.load(kRelaxed) == before) return v;
        }
    }

  private:
    std::atomic<std::uint32_t> seq_{0};
    std::atomic<std::uint64_t> end_{0};
    std::atomic<std::int64_t> ns_{0};
};

std::string lower(std::string s) {
    for (char& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

const DeviceInfo* find_by_name(const std::vector<DeviceInfo>& inputs, const std::string& name) {
    const std::string wanted = lower(name);
    for (const DeviceInfo& d : inputs)
        if (lower(d.name) == wanted) return &d;
    for (const DeviceInfo& d : inputs)
        if (lower(d.name).find(wanted) != std::string::npos) return &d;
    return nullptr;
}

struct StreamFormat {
    int rate = 0;
    int channels = 0;
    PaStreamParameters params{};
};

// The first (channels, rate) the device accepts, mono and the device's own rate first.
StreamFormat choose_format(const DeviceInfo& device, const MicrophoneOptions& options) {
    const PaDeviceInfo* info = Pa_GetDeviceInfo(device.index);
    if (!info) throw Error("microphone: PortAudio lost device " + std::to_string(device.index));
    std::vector<int> rates = {static_cast<int>(std::lround(info->defaultSampleRate)), 48000, 16000,
                              44100};
    if (options.sample_rate > 0) rates = {options.sample_rate};
    std::vector<int> channels = {1, info->maxInputChannels};
    if (options.channels > 0) channels = {options.channels};

    StreamFormat f;
    f.params.device = device.index;
    f.params.sampleFormat = paFloat32;  // interleaved
    f.params.suggestedLatency =
        options.latency > 0 ? options.latency : info->defaultHighInputLatency;
    for (const int ch : channels) {
        for (const int rate : rates) {
            f.params.channelCount = ch;
            if (rate > 0 && Pa_IsFormatSupported(&f.params, nullptr, rate) == paFormatIsSupported) {
                f.rate = rate;
                f.channels = ch;
                return f;
            }
        }
    }
    throw Error("microphone \"" + device.name + "\": the device accepts none of the formats tried" +
                (options.sample_rate > 0 ? " (" + std::to_string(options.sample_rate) + " Hz)"
                                         : std::string()));
}

}  // namespace

DeviceInfo select_input_device(const std::vector<DeviceInfo>& devices,
                               const MicrophoneOptions& options) {
    std::vector<DeviceInfo> inputs;
    std::copy_if(devices.begin(), devices.end(), std::back_inserter(inputs),
                 [](const DeviceInfo& d) { return d.max_input_channels > 0; });
    if (inputs.empty())
        throw Error("no microphone: PortAudio found no audio input device (" +
                    std::to_string(devices.size()) + " device(s), none with an input)");
    const std::string available = "; available inputs: " + describe_devices(inputs, true);
    if (options.device_index >= 0) {
        for (const DeviceInfo& d : inputs)
            if (d.index == options.device_index) return d;
        throw Error("microphone: device " + std::to_string(options.device_index) +
                    " is not an audio input" + available);
    }
    if (!options.device_name.empty()) {
        if (const DeviceInfo* d = find_by_name(inputs, options.device_name)) return *d;
        throw Error("microphone \"" + options.device_name + "\" not found" + available);
    }
    for (const DeviceInfo& d : inputs)
        if (d.is_default_input) return d;
    logger()->warn("microphone: no default input; using \"{}\"", inputs.front().name);
    return inputs.front();
}

struct MicrophoneCapture::Impl {
    PortAudioSession session;  // first member: PortAudio outlives the stream
    DeviceInfo device;
    StreamFormat format;
    SampleRing ring;
    std::vector<float> mix;      // the callback's downmix buffer, allocated once
    std::vector<float> scratch;  // the consumer's buffer
    StreamResampler resampler;
    CaptureStamp stamp;
    std::atomic<std::uint64_t> captured{0};
    std::atomic<std::uint64_t> overflows{0};
    std::atomic<std::uint64_t> read_frames{0};
    std::uint64_t produced_16k = 0;  // consumer only
    PaStream* stream = nullptr;

    explicit Impl(const MicrophoneOptions& options)
        : device(select_input_device(list_devices(), options)),
          format(choose_format(device, options)),
          ring(static_cast<std::size_t>(std::max(1.0, options.ring_seconds * format.rate))),
          mix(kMixFrames),
          scratch(kMixFrames),
          resampler(format.rate, kOutputRate) {}

    static int callback(const void* input, void*, unsigned long frames,
                        const PaStreamCallbackTimeInfo* time, PaStreamCallbackFlags flags,
                        void* self) {
        static_cast<Impl*>(self)->on_input(static_cast<const float*>(input), frames, time, flags);
        return paContinue;
    }

    // The capture thread: real-time, so no lock, no allocation, no logging.
    void on_input(const float* input, unsigned long frames, const PaStreamCallbackTimeInfo* time,
                  PaStreamCallbackFlags flags) noexcept {
        if (flags & paInputOverflow) overflows.fetch_add(1, kRelaxed);
        if (!input) return;
        if (format.channels == 1) {
            ring.write(input, frames);
        } else {
            downmix(input, frames);
        }
        captured.fetch_add(frames, kRelaxed);
        // The newest sample reached the converter `age` seconds ago (the driver's buffering).
        double age = 0;
        if (time) age = time->currentTime - time->inputBufferAdcTime - (frames - 1.0) / format.rate;
        if (!(age > 0 && age < 1)) age = 0;  // hosts without timestamps report zeros
        const auto now = Clock::now().time_since_epoch();
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count();
        stamp.store({ring.total_written(), ns - static_cast<std::int64_t>(age * 1e9)});
    }

    void downmix(const float* input, unsigned long frames) noexcept {
        const int ch = format.channels;
        const float scale = 1.0f / static_cast<float>(ch);
        for (unsigned long done = 0; done < frames;) {
            const std::size_t n = std::min<std::size_t>(kMixFrames, frames - done);
            const float* in = input + done * ch;
            for (std::size_t i = 0; i < n; ++i) {
                float sum = 0;
                for (int c = 0; c < ch; ++c)
                    sum += in[i * ch + c];
                mix[i] = sum * scale;
            }
            ring.write(mix.data(), n);
            done += n;
        }
    }

    // Capture time of ring sample `index`, from the newest stamp and the sample rate.
    Clock::time_point time_of(std::uint64_t index) const {
        const CaptureStamp::Value s = stamp.load();
        const auto behind = static_cast<std::int64_t>(s.end) - 1 - static_cast<std::int64_t>(index);
        const auto ns = s.ns - static_cast<std::int64_t>(behind * 1e9 / format.rate);
        return Clock::time_point(std::chrono::nanoseconds(ns));
    }

    void open() {
        const PaError err =
            Pa_OpenStream(&stream, &format.params, nullptr, format.rate,
                          paFramesPerBufferUnspecified, paNoFlag, &Impl::callback, this);
        if (err != paNoError) {
            stream = nullptr;
            throw Error("microphone \"" + device.name + "\": cannot open (" + Pa_GetErrorText(err) +
                        ")");
        }
    }
};

MicrophoneCapture::MicrophoneCapture(const MicrophoneOptions& options)
    : impl_(std::make_unique<Impl>(options)) {
    impl_->open();
    logger()->info("microphone: \"{}\" ({}), {} Hz, {} channel(s), input latency {:.1f} ms",
                   impl_->device.name, impl_->device.host_api, impl_->format.rate,
                   impl_->format.channels, input_latency() * 1000);
}

MicrophoneCapture::~MicrophoneCapture() {
    if (!impl_->stream) return;
    Pa_AbortStream(impl_->stream);  // input only: nothing to drain
    Pa_CloseStream(impl_->stream);
}

void MicrophoneCapture::start() {
    if (running()) return;
    if (const PaError err = Pa_StartStream(impl_->stream); err != paNoError)
        throw Error("microphone \"" + impl_->device.name + "\": cannot start (" +
                    Pa_GetErrorText(err) + ")");
}

void MicrophoneCapture::stop() {
    if (Pa_IsStreamStopped(impl_->stream) == 0) Pa_StopStream(impl_->stream);
}

bool MicrophoneCapture::running() const {
    return Pa_IsStreamActive(impl_->stream) == 1;
}

MicrophoneRead MicrophoneCapture::read_16k(std::vector<float>& out) {
    Impl& s = *impl_;
    MicrophoneRead result;
    result.first_index = s.produced_16k;
    const std::size_t before = out.size();
    // Only what is there now: a fast producer cannot keep this loop going.
    std::size_t todo = s.ring.available();
    std::uint64_t end = 0;
    while (todo > 0) {
        const auto got = s.ring.read(s.scratch.data(), std::min(todo, s.scratch.size()));
        if (got.count == 0) break;
        s.resampler.push(s.scratch.data(), got.count, out);
        s.read_frames.fetch_add(got.count, kRelaxed);
        end = got.first_index + got.count;
        todo -= got.count;
    }
    result.samples = out.size() - before;
    s.produced_16k += result.samples;
    if (end > 0) {
        result.has_time = true;
        result.newest_capture_time = s.time_of(end - 1);
    }
    return result;
}

std::size_t MicrophoneCapture::skip_to_latest(double keep_seconds) {
    const double keep = std::max(0.0, keep_seconds) * impl_->format.rate;
    return impl_->ring.skip_to_latest(static_cast<std::size_t>(keep));
}

MicrophoneStats MicrophoneCapture::stats() const {
    const Impl& s = *impl_;
    MicrophoneStats st;
    st.captured_frames = s.captured.load(kRelaxed);
    st.dropped_frames = s.ring.dropped_samples();
    st.discarded_frames = s.ring.discarded_samples();
    st.overflows = s.overflows.load(kRelaxed);
    st.read_frames = s.read_frames.load(kRelaxed);
    return st;
}

const DeviceInfo& MicrophoneCapture::device() const {
    return impl_->device;
}

int MicrophoneCapture::sample_rate() const {
    return impl_->format.rate;
}

int MicrophoneCapture::channels() const {
    return impl_->format.channels;
}

double MicrophoneCapture::input_latency() const {
    const PaStreamInfo* info = impl_->stream ? Pa_GetStreamInfo(impl_->stream) : nullptr;
    return info ? info->inputLatency : 0.0;
}

std::chrono::steady_clock::time_point MicrophoneCapture::newest_sample_time() const {
    const auto v = impl_->stamp.load();
    return v.end == 0 ? Clock::time_point{} : Clock::time_point(std::chrono::nanoseconds(v.ns));
}

}  // namespace loopy::audio
