#pragma once
// Routes FFmpeg's av_log output into the engine's spdlog logger, so library messages land in the
// same console/log file as ours instead of raw stderr.
#include <string>

namespace loopy::audio {

void route_ffmpeg_logs();

// Exposed for tests: maps an AV_LOG_* level to the spdlog level name used.
std::string ffmpeg_level_name(int av_level);

}  // namespace loopy::audio
