#pragma once
// Owning smart pointers for FFmpeg objects, FFmpeg error text, and what an encoder takes.
// Header-only, so the Qt-free video library (and the tests) can share it without linking
// loopy_audio.
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <libswresample/swresample.h>
}

#include <memory>
#include <new>
#include <string>

namespace loopy::ffmpeg {

struct InputFormatDeleter {
    void operator()(AVFormatContext* c) const { avformat_close_input(&c); }
};
struct CodecContextDeleter {
    void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameDeleter {
    void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketDeleter {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwrDeleter {
    void operator()(SwrContext* s) const { swr_free(&s); }
};

using InputFormatPtr = std::unique_ptr<AVFormatContext, InputFormatDeleter>;
using CodecContextPtr = std::unique_ptr<AVCodecContext, CodecContextDeleter>;
using FramePtr = std::unique_ptr<AVFrame, FrameDeleter>;
using PacketPtr = std::unique_ptr<AVPacket, PacketDeleter>;
using SwrPtr = std::unique_ptr<SwrContext, SwrDeleter>;

inline std::string error_string(int err) {
    char buffer[AV_ERROR_MAX_STRING_SIZE] = {};
    av_strerror(err, buffer, sizeof(buffer));
    return buffer;
}

// Allocation failures are rare enough that one helper keeps the call sites short.
inline FramePtr make_frame() {
    FramePtr f(av_frame_alloc());
    if (!f) throw std::bad_alloc();
    return f;
}
inline PacketPtr make_packet() {
    PacketPtr p(av_packet_alloc());
    if (!p) throw std::bad_alloc();
    return p;
}

// The sample rates (terminated by 0) and formats (by AV_SAMPLE_FMT_NONE) an encoder takes;
// nullptr: any. FFmpeg 7.1 (libavcodec 61.13) answers through avcodec_get_supported_config and
// deprecates the AVCodec fields that 5.1 offers.
#if LIBAVCODEC_VERSION_INT >= AV_VERSION_INT(61, 13, 100)
inline const void* encoder_config(const AVCodec* codec, AVCodecConfig config) {
    const void* list = nullptr;
    if (avcodec_get_supported_config(nullptr, codec, config, 0, &list, nullptr) < 0) return nullptr;
    return list;
}
inline const int* encoder_sample_rates(const AVCodec* codec) {
    return static_cast<const int*>(encoder_config(codec, AV_CODEC_CONFIG_SAMPLE_RATE));
}
inline const AVSampleFormat* encoder_sample_formats(const AVCodec* codec) {
    return static_cast<const AVSampleFormat*>(encoder_config(codec, AV_CODEC_CONFIG_SAMPLE_FORMAT));
}
#else
inline const int* encoder_sample_rates(const AVCodec* codec) {
    return codec->supported_samplerates;
}
inline const AVSampleFormat* encoder_sample_formats(const AVCodec* codec) {
    return codec->sample_fmts;
}
#endif

}  // namespace loopy::ffmpeg
