#include "audio/ffmpeg_log.h"

extern "C" {
#include <libavutil/log.h>
}

#include <cstdio>
#include <string>

#include "core/log.h"

namespace loopy::audio {
namespace {

spdlog::level::level_enum to_spdlog(int level) {
    if (level <= AV_LOG_FATAL) return spdlog::level::critical;
    if (level <= AV_LOG_ERROR) return spdlog::level::err;
    if (level <= AV_LOG_WARNING) return spdlog::level::warn;
    if (level <= AV_LOG_INFO) return spdlog::level::info;
    if (level <= AV_LOG_VERBOSE) return spdlog::level::debug;
    return spdlog::level::trace;
}

void callback(void* avcl, int level, const char* fmt, va_list args) {
    if (level > av_log_get_level()) return;
    // av_log delivers a line in pieces; keep the partial line per thread until its newline.
    thread_local std::string pending;
    thread_local int print_prefix = 1;
    char buffer[1024];
    va_list copy;
    va_copy(copy, args);
    av_log_format_line2(avcl, level, fmt, copy, buffer, sizeof(buffer), &print_prefix);
    va_end(copy);
    pending += buffer;
    if (pending.empty() || pending.back() != '\n') return;
    while (!pending.empty() && (pending.back() == '\n' || pending.back() == '\r'))
        pending.pop_back();
    if (!pending.empty()) logger()->log(to_spdlog(level), "ffmpeg: {}", pending);
    pending.clear();
}

}  // namespace

void route_ffmpeg_logs() {
    av_log_set_level(AV_LOG_WARNING);
    av_log_set_callback(callback);
}

std::string ffmpeg_level_name(int av_level) {
    const auto name = spdlog::level::to_string_view(to_spdlog(av_level));
    return std::string(name.data(), name.size());
}

}  // namespace loopy::audio
