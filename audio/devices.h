#pragma once
// Audio device discovery through PortAudio.
#include <string>
#include <vector>

namespace loopy::audio {

struct DeviceInfo {
    int index = -1;
    std::string name;
    std::string host_api;
    int max_input_channels = 0;
    int max_output_channels = 0;
    double default_sample_rate = 0;
    bool is_default_input = false;
    bool is_default_output = false;
};

// All devices PortAudio sees (initialises and terminates PortAudio itself). Throws loopy::Error
// if PortAudio cannot start; an empty list is a normal answer on a machine without sound.
std::vector<DeviceInfo> list_devices();

std::string portaudio_version();

}  // namespace loopy::audio
