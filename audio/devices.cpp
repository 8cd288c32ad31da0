#include "audio/devices.h"

#include <portaudio.h>

#if LOOPY_HAVE_ALSA
#include <alsa/asoundlib.h>
#endif
#if LOOPY_HAVE_JACK
#include <jack/jack.h>
#endif

#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "core/error.h"
#include "core/log.h"

namespace loopy::audio {

namespace {
// Pa_Initialize / Pa_Terminate are not thread-safe; the UI and a test may both open streams.
std::mutex& portaudio_init_mutex() {
    static std::mutex m;
    return m;
}

// PortAudio probes every ALSA device and the JACK server when it starts; on a machine without a
// sound card or JACK both libraries printed dozens of lines to stderr ("ALSA lib ... cannot find
// card '0'", "jack server is not running") around the one message that matters. Their messages go
// to the debug log instead; PortAudio's own errors still reach the user as loopy::Error.
#if LOOPY_HAVE_ALSA
void alsa_message(const char* file, int line, const char* function, int err, const char* fmt, ...) {
    char text[512];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    logger()->debug("ALSA: {} ({}:{} {}{}{})", text, file ? file : "?", line,
                    function ? function : "?", err ? ": " : "", err ? snd_strerror(err) : "");
}
#endif
#if LOOPY_HAVE_JACK
void jack_message(const char* text) {
    logger()->debug("JACK: {}", text ? text : "");
}
#endif

void quiet_sound_libraries() {
#if LOOPY_HAVE_ALSA
    snd_lib_error_set_handler(alsa_message);
#endif
#if LOOPY_HAVE_JACK
    jack_set_error_function(jack_message);
    jack_set_info_function(jack_message);
#endif
}
}  // namespace

PortAudioSession::PortAudioSession() {
    std::lock_guard<std::mutex> lock(portaudio_init_mutex());
    quiet_sound_libraries();
    if (const PaError err = Pa_Initialize(); err != paNoError)
        throw Error(std::string("PortAudio: cannot initialise (") + Pa_GetErrorText(err) + ")");
}

PortAudioSession::~PortAudioSession() {
    std::lock_guard<std::mutex> lock(portaudio_init_mutex());
    Pa_Terminate();
}

std::vector<DeviceInfo> list_devices() {
    const PortAudioSession session;
    std::vector<DeviceInfo> out;
    const int count = Pa_GetDeviceCount();
    const int default_in = Pa_GetDefaultInputDevice();
    const int default_out = Pa_GetDefaultOutputDevice();
    for (int i = 0; i < count; ++i) {
        const PaDeviceInfo* info = Pa_GetDeviceInfo(i);
        if (!info) continue;
        DeviceInfo d;
        d.index = i;
        d.name = info->name ? info->name : "?";
        const PaHostApiInfo* api = Pa_GetHostApiInfo(info->hostApi);
        d.host_api = api && api->name ? api->name : "?";
        d.max_input_channels = info->maxInputChannels;
        d.max_output_channels = info->maxOutputChannels;
        d.default_sample_rate = info->defaultSampleRate;
        d.is_default_input = i == default_in;
        d.is_default_output = i == default_out;
        out.push_back(d);
    }
    return out;
}

std::string describe_devices(const std::vector<DeviceInfo>& devices, bool inputs) {
    std::string out;
    for (const DeviceInfo& d : devices) {
        const int channels = inputs ? d.max_input_channels : d.max_output_channels;
        if (channels <= 0) continue;
        if (!out.empty()) out += ", ";
        out += "[" + std::to_string(d.index) + "] " + d.name + " (" + d.host_api + ", " +
               std::to_string(channels) + " ch)";
    }
    return out.empty() ? "none" : out;
}

std::string portaudio_version() {
    return Pa_GetVersionText();
}

}  // namespace loopy::audio
