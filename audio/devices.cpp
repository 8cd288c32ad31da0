#include "audio/devices.h"

#include <portaudio.h>

#include <mutex>

#include "core/error.h"

namespace loopy::audio {

namespace {
// Pa_Initialize / Pa_Terminate are not thread-safe; the UI and a test may both open streams.
std::mutex& portaudio_init_mutex() {
    static std::mutex m;
    return m;
}
}  // namespace

PortAudioSession::PortAudioSession() {
    std::lock_guard<std::mutex> lock(portaudio_init_mutex());
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
