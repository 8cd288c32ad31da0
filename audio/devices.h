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

// Keeps PortAudio initialised while it lives (PortAudio counts nested initialisations; the device
// list is taken at the first one). Throws loopy::Error if PortAudio cannot start. Sessions may be
// created and destroyed from any thread (a lock serialises Pa_Initialize / Pa_Terminate), but
// a stream must be closed before the session that opened it ends.
class PortAudioSession {
  public:
    PortAudioSession();
    ~PortAudioSession();
    PortAudioSession(const PortAudioSession&) = delete;
    PortAudioSession& operator=(const PortAudioSession&) = delete;
};

// All devices PortAudio sees (initialises and terminates PortAudio itself). Throws loopy::Error
// if PortAudio cannot start; an empty list is a normal answer on a machine without sound.
std::vector<DeviceInfo> list_devices();

// "[2] pulse (ALSA, 32 ch), [3] default (ALSA, 32 ch)": the input (or output) devices of
// `devices`, for error messages; "none" if there are none.
std::string describe_devices(const std::vector<DeviceInfo>& devices, bool inputs);

std::string portaudio_version();

}  // namespace loopy::audio
