#include "render/video_probe.h"

extern "C" {
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include <fstream>

#include "audio/ffmpeg_raii.h"
#include "core/error.h"

namespace loopy::render {
namespace {

// Walks the top-level MP4 boxes: +faststart puts the index ('moov') before the media ('mdat').
bool index_before_media(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::uint64_t offset = 0;
    unsigned char h[16];
    while (in.seekg(static_cast<std::streamoff>(offset)) &&
           in.read(reinterpret_cast<char*>(h), 8)) {
        std::uint64_t size = (std::uint64_t{h[0]} << 24) | (h[1] << 16) | (h[2] << 8) | h[3];
        const std::string type(reinterpret_cast<char*>(h) + 4, 4);
        if (type == "moov") return true;
        if (type == "mdat") return false;
        if (size == 1 && in.read(reinterpret_cast<char*>(h) + 8, 8)) {
            size = 0;
            for (int i = 8; i < 16; ++i)
                size = (size << 8) | h[i];
        }
        if (size < 8) return false;
        offset += size;
    }
    return false;
}

// Full chroma interpolation: swscale's fast yuv420p->RGB path is off by ~3 levels.
std::vector<std::uint8_t> to_rgb(const AVFrame* frame) {
    const int w = frame->width, h = frame->height;
    SwsContext* sws = sws_getContext(
        w, h, static_cast<AVPixelFormat>(frame->format), w, h, AV_PIX_FMT_RGB24,
        SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr, nullptr, nullptr);
    if (!sws) throw Error("probe: cannot convert the decoded frame to RGB");
    const int space = frame->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_DEFAULT;
    sws_setColorspaceDetails(sws, sws_getCoefficients(space),
                             frame->color_range == AVCOL_RANGE_JPEG ? 1 : 0,
                             sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
    std::vector<std::uint8_t> rgb(static_cast<std::size_t>(w) * h * 3);
    std::uint8_t* dst[1] = {rgb.data()};
    const int dst_stride[1] = {w * 3};
    sws_scale(sws, frame->data, frame->linesize, 0, h, dst, dst_stride);
    sws_freeContext(sws);
    return rgb;
}

struct Decoder {
    ffmpeg::CodecContextPtr codec;
    int index = -1;
};

Decoder open_decoder(AVFormatContext* format, AVMediaType type, const std::string& path) {
    Decoder d;
    const AVCodec* codec = nullptr;
    d.index = av_find_best_stream(format, type, -1, -1, &codec, 0);
    if (d.index < 0) return d;
    d.codec.reset(avcodec_alloc_context3(codec));
    if (!d.codec) throw std::bad_alloc();
    AVStream* stream = format->streams[d.index];
    avcodec_parameters_to_context(d.codec.get(), stream->codecpar);
    d.codec->pkt_timebase = stream->time_base;
    const int err = avcodec_open2(d.codec.get(), codec, nullptr);
    if (err < 0)
        throw Error(path + ": cannot open its decoder (" + ffmpeg::error_string(err) + ")");
    return d;
}

ffmpeg::InputFormatPtr open_input(const std::string& path) {
    AVFormatContext* raw = nullptr;
    int err = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
    if (err < 0) throw Error(path + ": cannot open (" + ffmpeg::error_string(err) + ")");
    ffmpeg::InputFormatPtr format(raw);
    err = avformat_find_stream_info(raw, nullptr);
    if (err < 0)
        throw Error(path + ": cannot read its streams (" + ffmpeg::error_string(err) + ")");
    return format;
}

double stream_duration(const AVStream* s) {
    return s->duration == AV_NOPTS_VALUE ? 0.0
                                         : static_cast<double>(s->duration) * av_q2d(s->time_base);
}

}  // namespace

VideoProbe probe_video(const std::string& path) {
    auto format = open_input(path);
    AVFormatContext* raw = format.get();
    Decoder video = open_decoder(raw, AVMEDIA_TYPE_VIDEO, path);
    if (video.index < 0) throw Error(path + ": has no video stream");
    Decoder audio = open_decoder(raw, AVMEDIA_TYPE_AUDIO, path);

    VideoProbe p;
    const AVStream* vs = raw->streams[video.index];
    p.width = vs->codecpar->width;
    p.height = vs->codecpar->height;
    p.video_codec = avcodec_get_name(vs->codecpar->codec_id);
    const char* pix = av_get_pix_fmt_name(static_cast<AVPixelFormat>(vs->codecpar->format));
    p.pixel_format = pix ? pix : "";
    p.fps = av_q2d(vs->avg_frame_rate);
    p.video_duration = stream_duration(vs);
    if (audio.index >= 0) {
        const AVStream* as = raw->streams[audio.index];
        p.audio_codec = avcodec_get_name(as->codecpar->codec_id);
        p.audio_sample_rate = as->codecpar->sample_rate;
        p.audio_channels = as->codecpar->ch_layout.nb_channels;
        p.audio_duration = stream_duration(as);
    }
    p.index_first = index_before_media(path);

    auto frame = ffmpeg::make_frame();
    auto last = ffmpeg::make_frame();
    auto packet = ffmpeg::make_packet();
    auto drain = [&](Decoder& d) {
        while (avcodec_receive_frame(d.codec.get(), frame.get()) >= 0) {
            if (d.index == video.index) {
                if (p.frame_count++ == 0) p.first_frame_rgb = to_rgb(frame.get());
                av_frame_unref(last.get());
                av_frame_move_ref(last.get(), frame.get());
            } else {
                p.audio_samples += frame->nb_samples;
            }
            av_frame_unref(frame.get());
        }
    };
    while (av_read_frame(raw, packet.get()) >= 0) {
        for (Decoder* d : {&video, &audio})
            if (d->codec && packet->stream_index == d->index) {
                avcodec_send_packet(d->codec.get(), packet.get());
                drain(*d);
            }
        av_packet_unref(packet.get());
    }
    for (Decoder* d : {&video, &audio})
        if (d->codec) {
            avcodec_send_packet(d->codec.get(), nullptr);
            drain(*d);
        }
    if (p.frame_count > 0) p.last_frame_rgb = to_rgb(last.get());
    return p;
}

int read_video_frames(const std::string& path, const RgbFrameCallback& on_frame) {
    auto format = open_input(path);
    AVFormatContext* raw = format.get();
    Decoder video = open_decoder(raw, AVMEDIA_TYPE_VIDEO, path);
    if (video.index < 0) throw Error(path + ": has no video stream");
    auto frame = ffmpeg::make_frame();
    auto packet = ffmpeg::make_packet();
    int count = 0;
    auto drain = [&] {
        while (avcodec_receive_frame(video.codec.get(), frame.get()) >= 0) {
            on_frame(to_rgb(frame.get()), frame->width, frame->height);
            ++count;
            av_frame_unref(frame.get());
        }
    };
    while (av_read_frame(raw, packet.get()) >= 0) {
        if (packet->stream_index == video.index) {
            avcodec_send_packet(video.codec.get(), packet.get());
            drain();
        }
        av_packet_unref(packet.get());
    }
    avcodec_send_packet(video.codec.get(), nullptr);
    drain();
    return count;
}

}  // namespace loopy::render
