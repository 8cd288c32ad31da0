#include "audio/player.h"

#include <portaudio.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "audio/devices.h"
#include "audio/resampler.h"
#include "core/error.h"
#include "core/log.h"

namespace loopy::audio {

namespace {

DeviceInfo default_output(const std::vector<DeviceInfo>& devices) {
    const DeviceInfo* first = nullptr;
    for (const DeviceInfo& d : devices) {
        if (d.max_output_channels <= 0) continue;
        if (d.is_default_output) return d;
        if (!first) first = &d;
    }
    if (!first)
        throw Error("no audio output: PortAudio found no audio output device (" +
                    std::to_string(devices.size()) + " device(s), none with an output)");
    return *first;  // outputs exist but none is the default: take the first
}

bool supported(PaStreamParameters& p, int channels, int rate) {
    p.channelCount = channels;
    return Pa_IsFormatSupported(nullptr, &p, rate) == paFormatIsSupported;
}

}  // namespace

struct AudioPlayer::Impl {
    PortAudioSession session;  // first member: PortAudio outlives the stream
    DeviceInfo device;
    PaStreamParameters params{};
    int rate = 0;
    std::vector<float> samples;  // mono, at `rate`; never resized after construction
    std::atomic<bool> playing{false};
    std::atomic<bool> finished{false};
    std::atomic<std::uint64_t> pos{0};      // frames consumed; written by the callback only
    std::atomic<std::int64_t> seek_to{-1};  // a seek the callback has not applied yet
    PaStream* stream = nullptr;

    static int callback(const void*, void* output, unsigned long frames,
                        const PaStreamCallbackTimeInfo*, PaStreamCallbackFlags, void* self) {
        static_cast<Impl*>(self)->render(static_cast<float*>(output), frames);
        return paContinue;
    }

    // The output thread: real-time, so no lock and no allocation.
    void render(float* out, unsigned long frames) noexcept {
        std::int64_t target = seek_to.load(std::memory_order_acquire);
        if (target >= 0) {
            pos.store(static_cast<std::uint64_t>(target), std::memory_order_release);
            // Fails if the UI seeked again meanwhile: the next callback applies that one.
            seek_to.compare_exchange_strong(target, -1, std::memory_order_acq_rel);
        }
        const std::uint64_t p = pos.load(std::memory_order_relaxed);
        const bool on = playing.load(std::memory_order_acquire);
        const std::size_t n =
            on ? static_cast<std::size_t>(std::min<std::uint64_t>(frames, samples.size() - p)) : 0;
        const int ch = params.channelCount;
        for (std::size_t i = 0; i < n; ++i)
            for (int c = 0; c < ch; ++c)
                out[i * ch + c] = samples[p + i];
        std::fill(out + n * ch, out + frames * ch, 0.0f);
        if (n > 0) pos.store(p + n, std::memory_order_release);
        if (on && p + n >= samples.size()) {
            finished.store(true, std::memory_order_release);
            playing.store(false, std::memory_order_release);
        }
    }

    // Mono at the buffer's rate if the device takes it, else the device's rate, resampled.
    void choose_format(int buffer_rate) {
        const PaDeviceInfo* info = Pa_GetDeviceInfo(device.index);
        if (!info) throw Error("audio output: PortAudio lost device " + device.name);
        params.device = device.index;
        params.sampleFormat = paFloat32;
        params.suggestedLatency = info->defaultHighOutputLatency;
        const int device_rate = static_cast<int>(std::lround(info->defaultSampleRate));
        for (const int ch : {1, std::min(2, info->maxOutputChannels)}) {
            for (const int r : {buffer_rate, device_rate}) {
                if (r <= 0 || !supported(params, ch, r)) continue;
                rate = r;
                if (r != buffer_rate) resample(buffer_rate, r);
                return;
            }
        }
        throw Error("audio output \"" + device.name + "\": accepts neither " +
                    std::to_string(buffer_rate) + " Hz nor its own rate");
    }

    void resample(int from, int to) {
        StreamResampler r(from, to);
        std::vector<float> out = r.push(samples.data(), samples.size());
        const std::vector<float> tail = r.flush();
        out.insert(out.end(), tail.begin(), tail.end());
        samples = std::move(out);
    }

    std::uint64_t frames_at(double seconds) const {
        const double f = std::clamp(seconds, 0.0, static_cast<double>(samples.size()) / rate);
        return std::min<std::uint64_t>(static_cast<std::uint64_t>(std::llround(f * rate)),
                                       samples.size());
    }
};

AudioPlayer::AudioPlayer(std::vector<float> samples, int sample_rate)
    : impl_(std::make_unique<Impl>()) {
    if (sample_rate <= 0)
        throw Error("audio player: invalid sample rate " + std::to_string(sample_rate));
    Impl& s = *impl_;
    s.samples = std::move(samples);
    s.device = default_output(list_devices());
    s.choose_format(sample_rate);
    const PaError err = Pa_OpenStream(&s.stream, nullptr, &s.params, s.rate,
                                      paFramesPerBufferUnspecified, paNoFlag, &Impl::callback, &s);
    if (err != paNoError) {
        s.stream = nullptr;
        throw Error("audio output \"" + s.device.name + "\": cannot open (" + Pa_GetErrorText(err) +
                    ")");
    }
    logger()->info("audio output: \"{}\" ({}), {} Hz, {} channel(s)", s.device.name,
                   s.device.host_api, s.rate, s.params.channelCount);
}

AudioPlayer::~AudioPlayer() {
    if (!impl_->stream) return;
    Pa_AbortStream(impl_->stream);  // drop what is queued: the player is going away
    Pa_CloseStream(impl_->stream);
}

void AudioPlayer::play() {
    Impl& s = *impl_;
    if (s.finished.exchange(false)) seek(0);
    s.playing.store(true, std::memory_order_release);
    if (Pa_IsStreamActive(s.stream) == 1) return;
    if (const PaError err = Pa_StartStream(s.stream); err != paNoError) {
        s.playing.store(false);
        throw Error("audio output \"" + s.device.name + "\": cannot start (" +
                    Pa_GetErrorText(err) + ")");
    }
}

void AudioPlayer::pause() {
    impl_->playing.store(false, std::memory_order_release);
}

bool AudioPlayer::playing() const {
    return impl_->playing.load(std::memory_order_acquire);
}

bool AudioPlayer::finished() const {
    return impl_->finished.load(std::memory_order_acquire);
}

void AudioPlayer::seek(double seconds) {
    const std::uint64_t frame = impl_->frames_at(seconds);
    if (frame < impl_->samples.size()) impl_->finished.store(false);
    impl_->seek_to.store(static_cast<std::int64_t>(frame), std::memory_order_release);
}

double AudioPlayer::position() const {
    const std::int64_t pending = impl_->seek_to.load(std::memory_order_acquire);
    const std::uint64_t frame = pending >= 0 ? static_cast<std::uint64_t>(pending)
                                             : impl_->pos.load(std::memory_order_acquire);
    return static_cast<double>(frame) / impl_->rate;
}

double AudioPlayer::duration() const {
    return static_cast<double>(impl_->samples.size()) / impl_->rate;
}

double AudioPlayer::output_latency() const {
    const PaStreamInfo* info = Pa_GetStreamInfo(impl_->stream);
    return info ? info->outputLatency : 0.0;
}

int AudioPlayer::device_rate() const {
    return impl_->rate;
}

}  // namespace loopy::audio
