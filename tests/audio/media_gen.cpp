#include "audio/media_gen.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/channel_layout.h>
}

#include <cmath>
#include <cstdint>
#include <fstream>
#include <stdexcept>

#include "audio/ffmpeg_raii.h"

namespace loopy::test {
namespace {

void check(int err, const std::string& what) {
    if (err < 0) {
        char buf[AV_ERROR_MAX_STRING_SIZE] = {};
        av_strerror(err, buf, sizeof(buf));
        throw std::runtime_error(what + ": " + buf);
    }
}

// Stores one sample in whatever layout the encoder asked for.
void put(AVFrame* f, int ch, int i, double v) {
    const auto fmt = static_cast<AVSampleFormat>(f->format);
    const bool planar = av_sample_fmt_is_planar(fmt);
    const int channels = f->ch_layout.nb_channels;
    const int idx = planar ? i : i * channels + ch;
    uint8_t* base = f->extended_data[planar ? ch : 0];
    switch (av_get_packed_sample_fmt(fmt)) {
        case AV_SAMPLE_FMT_S16:
            reinterpret_cast<int16_t*>(base)[idx] = static_cast<int16_t>(std::lrint(v * 32767));
            break;
        case AV_SAMPLE_FMT_S32:
            reinterpret_cast<int32_t*>(base)[idx] =
                static_cast<int32_t>(std::llrint(v * 2147483647.0));
            break;
        case AV_SAMPLE_FMT_FLT:
            reinterpret_cast<float*>(base)[idx] = static_cast<float>(v);
            break;
        case AV_SAMPLE_FMT_DBL:
            reinterpret_cast<double*>(base)[idx] = v;
            break;
        default:
            throw std::runtime_error("media_gen: unhandled sample format");
    }
}

void write_packets(AVFormatContext* out, AVCodecContext* enc, AVStream* st, const AVFrame* frame) {
    check(avcodec_send_frame(enc, frame), "send_frame");
    AVPacket* pkt = av_packet_alloc();
    while (avcodec_receive_packet(enc, pkt) >= 0) {
        av_packet_rescale_ts(pkt, enc->time_base, st->time_base);
        pkt->stream_index = st->index;
        check(av_interleaved_write_frame(out, pkt), "write");
    }
    av_packet_free(&pkt);
}

}  // namespace

bool has_encoder(const char* name) {
    return avcodec_find_encoder_by_name(name) != nullptr;
}

void write_tone(const std::string& path, const char* encoder, const Tone& tone) {
    const AVCodec* codec = avcodec_find_encoder_by_name(encoder);
    if (!codec) throw std::runtime_error(std::string("no encoder ") + encoder);
    AVFormatContext* out = nullptr;
    check(avformat_alloc_output_context2(&out, nullptr, nullptr, path.c_str()), "output " + path);
    AVCodecContext* enc = avcodec_alloc_context3(codec);
    const AVSampleFormat* formats = loopy::ffmpeg::encoder_sample_formats(codec);
    enc->sample_fmt = formats ? formats[0] : AV_SAMPLE_FMT_S16;
    enc->sample_rate = tone.sample_rate;
    av_channel_layout_default(&enc->ch_layout, tone.channels);
    enc->time_base = AVRational{1, tone.sample_rate};
    enc->bit_rate = 128000;
    if (out->oformat->flags & AVFMT_GLOBALHEADER) enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    check(avcodec_open2(enc, codec, nullptr), std::string("open ") + encoder);
    AVStream* st = avformat_new_stream(out, nullptr);
    avcodec_parameters_from_context(st->codecpar, enc);
    st->time_base = enc->time_base;
    check(avio_open(&out->pb, path.c_str(), AVIO_FLAG_WRITE), "open " + path);
    check(avformat_write_header(out, nullptr), "header");

    const bool variable = codec->capabilities & AV_CODEC_CAP_VARIABLE_FRAME_SIZE;
    const int frame_size = enc->frame_size > 0 && !variable ? enc->frame_size : 1024;
    const bool short_last = variable || (codec->capabilities & AV_CODEC_CAP_SMALL_LAST_FRAME);
    const auto total = static_cast<int64_t>(std::llround(tone.seconds * tone.sample_rate));
    AVFrame* frame = av_frame_alloc();
    for (int64_t start = 0; start < total; start += frame_size) {
        const int n = static_cast<int>(std::min<int64_t>(frame_size, total - start));
        frame->format = enc->sample_fmt;
        frame->sample_rate = enc->sample_rate;
        av_channel_layout_copy(&frame->ch_layout, &enc->ch_layout);
        frame->nb_samples = short_last ? n : frame_size;
        check(av_frame_get_buffer(frame, 0), "frame");
        for (int i = 0; i < frame->nb_samples; ++i) {
            const double t = static_cast<double>(start + i) / tone.sample_rate;
            double v = i < n ? tone.amplitude * std::sin(2 * M_PI * tone.frequency * t) +
                                   tone.amplitude2 * std::sin(2 * M_PI * tone.frequency2 * t)
                             : 0.0;
            for (int ch = 0; ch < tone.channels; ++ch)
                put(frame, ch, i, tone.first_channel_only && ch > 0 ? 0.0 : v);
        }
        frame->pts = start;
        write_packets(out, enc, st, frame);
        av_frame_unref(frame);
    }
    write_packets(out, enc, st, nullptr);
    av_frame_free(&frame);
    check(av_write_trailer(out), "trailer");
    avio_closep(&out->pb);
    avcodec_free_context(&enc);
    avformat_free_context(out);
}

void write_wav_s16(const std::string& path, int rate, double seconds, double frequency) {
    const auto n = static_cast<uint32_t>(std::llround(seconds * rate));
    std::ofstream f(path, std::ios::binary);
    auto u32 = [&](uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
    auto u16 = [&](uint16_t v) { f.write(reinterpret_cast<const char*>(&v), 2); };
    f.write("RIFF", 4);
    u32(36 + n * 2);
    f.write("WAVEfmt ", 8);
    u32(16);
    u16(1);  // PCM
    u16(1);  // mono
    u32(static_cast<uint32_t>(rate));
    u32(static_cast<uint32_t>(rate) * 2);
    u16(2);
    u16(16);
    f.write("data", 4);
    u32(n * 2);
    std::vector<int16_t> block(65536);
    for (uint32_t start = 0; start < n; start += block.size()) {
        const uint32_t m = std::min<uint32_t>(block.size(), n - start);
        for (uint32_t i = 0; i < m; ++i)
            block[i] = static_cast<int16_t>(
                std::lrint(16000 * std::sin(2 * M_PI * frequency * (start + i) / rate)));
        f.write(reinterpret_cast<const char*>(block.data()), m * 2);
    }
}

// Frequency from the spacing of upward zero crossings (interpolated), over the whole signal.
double zero_crossing_frequency(const std::vector<float>& x, int rate) {
    double first = -1, last = -1;
    int count = 0;
    for (std::size_t i = 1; i < x.size(); ++i) {
        if (x[i - 1] < 0 && x[i] >= 0) {
            const double t = (i - 1) + x[i - 1] / (x[i - 1] - x[i]);
            if (first < 0) first = t;
            last = t;
            ++count;
        }
    }
    if (count < 2) return 0;
    return (count - 1) / ((last - first) / rate);
}

double goertzel_amplitude(const std::vector<float>& x, int rate, double frequency) {
    const double w = 2 * M_PI * frequency / rate;
    double re = 0, im = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        re += x[i] * std::cos(w * i);
        im -= x[i] * std::sin(w * i);
    }
    return 2 * std::sqrt(re * re + im * im) / static_cast<double>(x.size());
}

double peak(const std::vector<float>& x) {
    double m = 0;
    for (float v : x)
        m = std::max(m, static_cast<double>(std::fabs(v)));
    return m;
}

std::vector<float> middle(const std::vector<float>& x, double fraction) {
    const auto skip = static_cast<std::size_t>(x.size() * (1 - fraction) / 2);
    return std::vector<float>(x.begin() + static_cast<std::ptrdiff_t>(skip),
                              x.end() - static_cast<std::ptrdiff_t>(skip));
}

}  // namespace loopy::test
