#include "audio/devices.h"

#include <portaudio.h>

#include "core/error.h"

namespace loopy::audio {

std::vector<DeviceInfo> list_devices() {
    if (const PaError err = Pa_Initialize(); err != paNoError)
        throw Error(std::string("PortAudio: cannot initialise (") + Pa_GetErrorText(err) + ")");
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
    Pa_Terminate();
    return out;
}

std::string portaudio_version() {
    return Pa_GetVersionText();
}

}  // namespace loopy::audio
