#include "render/video_writer.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/mathematics.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <cstring>

#include "audio/ffmpeg_raii.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "core/log.h"

namespace loopy::render {
namespace {

struct OutputFormatDeleter {
    void operator()(AVFormatContext* c) const {
        if (c->pb && !(c->oformat->flags & AVFMT_NOFILE)) avio_closep(&c->pb);
        avformat_free_context(c);
    }
};
struct SwsDeleter {
    void operator()(SwsContext* s) const { sws_freeContext(s); }
};
using OutputFormatPtr = std::unique_ptr<AVFormatContext, OutputFormatDeleter>;
using SwsPtr = std::unique_ptr<SwsContext, SwsDeleter>;

const AVCodec* find_h264_encoder() {
    if (const AVCodec* codec = avcodec_find_encoder_by_name("libx264")) return codec;
    return avcodec_find_encoder(AV_CODEC_ID_H264);  // a build without libx264
}

// 48 kHz whatever the input: every player handles it, and AAC's padded last frame (up to 1023
// samples, which decoders that ignore the MP4 edit list play) stays under half a 25 fps frame;
// at 16 kHz it would be 64 ms, longer than a frame.
int choose_aac_rate(const AVCodec* codec) {
    const int* rates = ffmpeg::encoder_sample_rates(codec);
    if (!rates) return 48000;
    for (const int* r = rates; *r; ++r)
        if (*r == 48000) return 48000;
    return rates[0];
}

AVSampleFormat choose_float_format(const AVCodec* codec) {
    const AVSampleFormat* formats = ffmpeg::encoder_sample_formats(codec);
    if (!formats) return AV_SAMPLE_FMT_FLTP;
    for (const AVSampleFormat* f = formats; *f != AV_SAMPLE_FMT_NONE; ++f)
        if (*f == AV_SAMPLE_FMT_FLTP || *f == AV_SAMPLE_FMT_FLT) return *f;
    return AV_SAMPLE_FMT_NONE;
}

// Drops the consumed front of a buffer once it is most of the buffer (amortised O(1)).
void compact(std::vector<float>& buffer, std::size_t& pos) {
    if (pos > (1u << 16) && pos * 2 > buffer.size()) {
        buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(pos));
        pos = 0;
    }
}

}  // namespace

struct VideoWriter::Impl {
    std::string path;
    VideoWriterOptions opt;
    // Declared first so it is destroyed last: the muxer has closed the file before the
    // temporary is removed.
    std::unique_ptr<AtomicFile> file;
    OutputFormatPtr mux;
    ffmpeg::PacketPtr packet = ffmpeg::make_packet();

    ffmpeg::CodecContextPtr venc;
    AVStream* vstream = nullptr;
    SwsPtr sws;
    int sws_layout = -1;
    ffmpeg::FramePtr picture;
    std::int64_t frames = 0;

    ffmpeg::CodecContextPtr aenc;
    AVStream* astream = nullptr;
    ffmpeg::SwrPtr swr;
    ffmpeg::FramePtr aframe;
    int audio_in_rate = 0;
    int audio_frame_size = 0;
    // Audio waits at the caller's rate (a whole 16 kHz track stays 16 kHz in memory) and is
    // resampled only as the video advances; `fifo` holds the resampled part not yet encoded.
    std::vector<float> input;
    std::size_t input_pos = 0;
    std::vector<float> fifo;
    std::size_t fifo_pos = 0;
    std::int64_t audio_sent = 0;  // samples given to the encoder

    bool started = false;
    bool finished = false;
    bool failed = false;

    Error error(const std::string& what) const { return Error(path + ": " + what); }
    void validate() const;
    void open_video();
    void open_audio(int input_rate);
    void start();
    void convert_picture(const std::uint8_t* pixels, int stride, PixelLayout layout);
    void add_audio(const float* samples, std::size_t count, int rate);
    void encode(AVCodecContext* codec, AVStream* stream, const AVFrame* frame);
    void resample(const float* samples, int count);
    bool feed();
    void encode_audio(std::size_t count);
    void pump_audio(std::int64_t limit);
    void finish_audio();
    void finish();
};

void VideoWriter::Impl::validate() const {
    if (opt.width <= 0 || opt.height <= 0 || opt.width % 2 || opt.height % 2)
        throw error("width and height must be positive and even for yuv420p (got " +
                    std::to_string(opt.width) + "x" + std::to_string(opt.height) + ")");
    if (opt.fps <= 0 || opt.fps > 1000)
        throw error("invalid frame rate " + std::to_string(opt.fps));
    if (opt.crf < 0 || opt.crf > 51)
        throw error("CRF must be 0..51, got " + std::to_string(opt.crf));
    if (opt.audio_sample_rate < 0 || opt.audio_bitrate <= 0)
        throw error("invalid audio sample rate or bitrate");
}

void VideoWriter::Impl::open_video() {
    const AVCodec* codec = find_h264_encoder();
    if (!codec) throw error("this FFmpeg has no H.264 encoder (libx264 is missing)");
    venc.reset(avcodec_alloc_context3(codec));
    if (!venc) throw std::bad_alloc();
    venc->width = opt.width;
    venc->height = opt.height;
    venc->time_base = AVRational{1, opt.fps};
    venc->framerate = AVRational{opt.fps, 1};
    venc->pix_fmt = AV_PIX_FMT_YUV420P;
    // Tagged so that players convert back with the matrix we converted with.
    venc->color_range = AVCOL_RANGE_MPEG;
    venc->colorspace = AVCOL_SPC_BT709;
    venc->color_primaries = AVCOL_PRI_BT709;
    venc->color_trc = AVCOL_TRC_BT709;
    if (mux->oformat->flags & AVFMT_GLOBALHEADER) venc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;

    AVDictionary* options = nullptr;
    if (std::strcmp(codec->name, "libx264") == 0) {
        av_dict_set_int(&options, "crf", opt.crf, 0);
        av_dict_set(&options, "preset", opt.preset.c_str(), 0);
    } else {
        venc->bit_rate = static_cast<std::int64_t>(opt.width) * opt.height * opt.fps / 4;
        logger()->warn("{}: libx264 is not available; encoding with {} (no CRF)", path,
                       codec->name);
    }
    const int err = avcodec_open2(venc.get(), codec, &options);
    av_dict_free(&options);
    if (err < 0)
        throw error(std::string("cannot open the H.264 encoder ") + codec->name + " (" +
                    ffmpeg::error_string(err) + ")");

    vstream = avformat_new_stream(mux.get(), nullptr);
    if (!vstream) throw std::bad_alloc();
    avcodec_parameters_from_context(vstream->codecpar, venc.get());
    vstream->time_base = venc->time_base;
    vstream->avg_frame_rate = venc->framerate;

    picture = ffmpeg::make_frame();
    picture->format = AV_PIX_FMT_YUV420P;
    picture->width = opt.width;
    picture->height = opt.height;
    if (av_frame_get_buffer(picture.get(), 0) < 0) throw std::bad_alloc();
}

void VideoWriter::Impl::open_audio(int input_rate) {
    const AVCodec* codec = avcodec_find_encoder_by_name("aac");
    if (!codec) throw error("this FFmpeg has no AAC encoder");
    const AVSampleFormat format = choose_float_format(codec);
    if (format == AV_SAMPLE_FMT_NONE) throw error("the AAC encoder takes no float samples");
    aenc.reset(avcodec_alloc_context3(codec));
    if (!aenc) throw std::bad_alloc();
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;  // not const: FFmpeg 5.1 swr_alloc_set_opts2()
    av_channel_layout_copy(&aenc->ch_layout, &mono);
    aenc->sample_fmt = format;
    aenc->sample_rate = choose_aac_rate(codec);
    aenc->time_base = AVRational{1, aenc->sample_rate};
    // AAC-LC carries at most 6144 bits per channel per 1024 samples; asking more only warns.
    aenc->bit_rate = std::min<std::int64_t>(opt.audio_bitrate, 6LL * aenc->sample_rate);
    if (mux->oformat->flags & AVFMT_GLOBALHEADER) aenc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
    int err = avcodec_open2(aenc.get(), codec, nullptr);
    if (err < 0) throw error("cannot open the AAC encoder (" + ffmpeg::error_string(err) + ")");
    audio_frame_size = aenc->frame_size > 0 ? aenc->frame_size : 1024;

    astream = avformat_new_stream(mux.get(), nullptr);
    if (!astream) throw std::bad_alloc();
    avcodec_parameters_from_context(astream->codecpar, aenc.get());
    astream->time_base = aenc->time_base;

    SwrContext* raw = nullptr;
    err = swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_FLT, aenc->sample_rate, &mono,
                              AV_SAMPLE_FMT_FLT, input_rate, 0, nullptr);
    swr.reset(raw);
    if (err >= 0) err = swr_init(raw);
    if (err < 0) throw error("cannot set up audio resampling (" + ffmpeg::error_string(err) + ")");
    audio_in_rate = input_rate;

    aframe = ffmpeg::make_frame();
    aframe->format = format;
    aframe->sample_rate = aenc->sample_rate;
    av_channel_layout_copy(&aframe->ch_layout, &mono);
    aframe->nb_samples = audio_frame_size;
    if (av_frame_get_buffer(aframe.get(), 0) < 0) throw std::bad_alloc();
}

// The header fixes the set of streams, so it is written only when the first frame arrives.
void VideoWriter::Impl::start() {
    if (started) return;
    const char* temp = file->temp_path().c_str();
    int err = avio_open(&mux->pb, temp, AVIO_FLAG_WRITE);
    if (err < 0)
        throw error("cannot write " + file->temp_path() + " (" + ffmpeg::error_string(err) + ")");
    AVDictionary* options = nullptr;
    av_dict_set(&options, "movflags", "+faststart", 0);  // index first: plays while downloading
    err = avformat_write_header(mux.get(), &options);
    av_dict_free(&options);
    if (err < 0) throw error("cannot write the MP4 header (" + ffmpeg::error_string(err) + ")");
    started = true;
}

void VideoWriter::Impl::convert_picture(const std::uint8_t* pixels, int stride,
                                        PixelLayout layout) {
    const int bytes_per_pixel = layout == PixelLayout::RGBA ? 4 : 3;
    if (stride == 0) stride = opt.width * bytes_per_pixel;
    if (stride < opt.width * bytes_per_pixel) throw error("frame stride is shorter than a row");
    if (static_cast<int>(layout) != sws_layout) {
        const AVPixelFormat source =
            layout == PixelLayout::RGBA ? AV_PIX_FMT_RGBA : AV_PIX_FMT_RGB24;
        sws.reset(sws_getContext(
            opt.width, opt.height, source, opt.width, opt.height, AV_PIX_FMT_YUV420P,
            SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr, nullptr, nullptr));
        if (!sws) throw error("cannot set up the RGB to YUV conversion");
        // Full-range RGB in, limited-range BT.709 out, matching the stream's tags.
        sws_setColorspaceDetails(sws.get(), sws_getCoefficients(SWS_CS_DEFAULT), 1,
                                 sws_getCoefficients(SWS_CS_ITU709), 0, 0, 1 << 16, 1 << 16);
        sws_layout = static_cast<int>(layout);
    }
    // The encoder may still hold a reference to the previous picture.
    if (av_frame_make_writable(picture.get()) < 0) throw std::bad_alloc();
    sws_scale(sws.get(), &pixels, &stride, 0, opt.height, picture->data, picture->linesize);
}

void VideoWriter::Impl::encode(AVCodecContext* codec, AVStream* stream, const AVFrame* frame) {
    int err = avcodec_send_frame(codec, frame);
    if (err < 0) throw error("encoding failed (" + ffmpeg::error_string(err) + ")");
    for (;;) {
        err = avcodec_receive_packet(codec, packet.get());
        if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return;
        if (err < 0) throw error("encoding failed (" + ffmpeg::error_string(err) + ")");
        // Every picture lasts one frame; without it the last one would have no duration.
        if (codec == venc.get() && packet->duration == 0) packet->duration = 1;
        av_packet_rescale_ts(packet.get(), codec->time_base, stream->time_base);
        packet->stream_index = stream->index;
        err = av_interleaved_write_frame(mux.get(), packet.get());
        if (err < 0) throw error("write failed (" + ffmpeg::error_string(err) + ")");
    }
}

void VideoWriter::Impl::add_audio(const float* samples, std::size_t count, int rate) {
    if (rate <= 0) throw error("invalid audio sample rate " + std::to_string(rate));
    if (!aenc) {
        if (started)
            throw error(
                "audio must start before the first frame, or be declared by "
                "VideoWriterOptions::audio_sample_rate");
        open_audio(rate);
    } else if (rate != audio_in_rate) {
        throw error("audio sample rate changed from " + std::to_string(audio_in_rate) + " to " +
                    std::to_string(rate));
    }
    if (count > 0 && !samples) throw error("add_audio: no samples");
    input.insert(input.end(), samples, samples + count);
    pump_audio(av_rescale(frames, aenc->sample_rate, opt.fps));
}

// Appends the resampled `samples` to the fifo; a null `samples` drains the filter's tail.
void VideoWriter::Impl::resample(const float* samples, int count) {
    const int capacity = std::max(swr_get_out_samples(swr.get(), count), samples ? 0 : 4096);
    const std::size_t old = fifo.size();
    fifo.resize(old + static_cast<std::size_t>(capacity));
    auto* out = reinterpret_cast<uint8_t*>(fifo.data() + old);
    const auto* in = reinterpret_cast<const uint8_t*>(samples);
    const int got = swr_convert(swr.get(), &out, capacity, samples ? &in : nullptr, count);
    if (got < 0) throw error("audio resampling failed (" + ffmpeg::error_string(got) + ")");
    fifo.resize(old + static_cast<std::size_t>(got));
}

// Sends `count` (<= the frame size) samples from the fifo to the encoder.
void VideoWriter::Impl::encode_audio(std::size_t count) {
    if (av_frame_make_writable(aframe.get()) < 0) throw std::bad_alloc();
    // Mono: planar and packed float are the same single plane.
    std::memcpy(aframe->data[0], fifo.data() + fifo_pos, count * sizeof(float));
    aframe->nb_samples = static_cast<int>(count);
    aframe->pts = audio_sent;
    encode(aenc.get(), astream, aframe.get());
    fifo_pos += count;
    audio_sent += static_cast<std::int64_t>(count);
}

// Resamples the input for about one AAC frame (keeps the resampled backlog small). False when
// no input is left.
bool VideoWriter::Impl::feed() {
    if (input_pos == input.size()) return false;
    const auto slice = av_rescale(audio_frame_size, audio_in_rate, aenc->sample_rate) + 1;
    const std::size_t n = std::min(static_cast<std::size_t>(slice), input.size() - input_pos);
    resample(input.data() + input_pos, static_cast<int>(n));
    input_pos += n;
    return true;
}

// Encodes whole audio frames, never past `limit` samples: audio beyond the video is not wanted.
void VideoWriter::Impl::pump_audio(std::int64_t limit) {
    if (!aenc || !started) return;
    const auto size = static_cast<std::size_t>(audio_frame_size);
    while (audio_sent + audio_frame_size <= limit) {
        if (fifo.size() - fifo_pos >= size)
            encode_audio(size);
        else if (!feed())
            break;  // waiting for more audio
    }
    compact(fifo, fifo_pos);
    compact(input, input_pos);
}

// Pads with silence or trims so that the audio ends with the last frame, then flushes.
void VideoWriter::Impl::finish_audio() {
    const std::int64_t target = av_rescale(frames, aenc->sample_rate, opt.fps);
    pump_audio(target);  // whole frames
    const auto missing = [&] { return static_cast<std::size_t>(target - audio_sent); };
    while (fifo.size() - fifo_pos < missing())
        if (!feed()) break;
    if (input_pos == input.size()) {  // all input used: its filter tail belongs to the track
        std::size_t before;
        do {
            before = fifo.size();
            resample(nullptr, 0);
        } while (fifo.size() > before);
    }
    fifo.resize(fifo_pos + missing(), 0.0f);
    pump_audio(target);
    if (fifo.size() > fifo_pos) {
        const bool short_ok = aenc->codec->capabilities &
                              (AV_CODEC_CAP_SMALL_LAST_FRAME | AV_CODEC_CAP_VARIABLE_FRAME_SIZE);
        if (!short_ok) fifo.resize(fifo_pos + static_cast<std::size_t>(audio_frame_size), 0.0f);
        encode_audio(fifo.size() - fifo_pos);
    }
    encode(aenc.get(), astream, nullptr);
}

void VideoWriter::Impl::finish() {
    if (frames == 0) throw error("no frames were added; nothing written");
    encode(venc.get(), vstream, nullptr);
    if (aenc) finish_audio();
    int err = av_write_trailer(mux.get());
    if (err < 0) throw error("cannot finish the MP4 (" + ffmpeg::error_string(err) + ")");
    err = avio_closep(&mux->pb);
    if (err < 0) throw error("write failed (" + ffmpeg::error_string(err) + ")");
    file->commit();
    finished = true;
    logger()->debug("{}: wrote {} frames at {} fps{}", path, frames, opt.fps,
                    aenc ? " with AAC audio" : "");
}

VideoWriter::VideoWriter(std::string path, VideoWriterOptions options)
    : impl_(std::make_unique<Impl>()) {
    Impl& d = *impl_;
    d.path = std::move(path);
    d.opt = std::move(options);
    d.validate();
    d.file = std::make_unique<AtomicFile>(d.path, d.opt.overwrite);
    AVFormatContext* raw = nullptr;
    const int err =
        avformat_alloc_output_context2(&raw, nullptr, "mp4", d.file->temp_path().c_str());
    if (err < 0 || !raw) throw d.error("cannot start an MP4 (" + ffmpeg::error_string(err) + ")");
    d.mux.reset(raw);
    d.open_video();
    if (d.opt.audio_sample_rate > 0) d.open_audio(d.opt.audio_sample_rate);
}

VideoWriter::~VideoWriter() = default;

template <class F>
void VideoWriter::guarded(F&& body) {
    if (impl_->finished) throw impl_->error("the video is already finished");
    if (impl_->failed) throw impl_->error("an earlier error stopped this video");
    try {
        body();
    } catch (...) {
        impl_->failed = true;
        throw;
    }
}

void VideoWriter::add_frame(const std::uint8_t* pixels, int stride, PixelLayout layout) {
    guarded([&] {
        Impl& d = *impl_;
        if (!pixels) throw d.error("add_frame: no pixels");
        d.start();
        d.convert_picture(pixels, stride, layout);
        d.picture->pts = d.frames;
        d.encode(d.venc.get(), d.vstream, d.picture.get());
        ++d.frames;
        if (d.aenc) d.pump_audio(av_rescale(d.frames, d.aenc->sample_rate, d.opt.fps));
    });
}

void VideoWriter::add_audio(const float* samples, std::size_t count, int sample_rate) {
    guarded([&] { impl_->add_audio(samples, count, sample_rate); });
}

void VideoWriter::finish() {
    guarded([&] { impl_->finish(); });
}

int VideoWriter::frame_count() const {
    return static_cast<int>(impl_->frames);
}
std::string VideoWriter::video_encoder_name() const {
    return impl_->venc->codec->name;
}
int VideoWriter::audio_encoder_rate() const {
    return impl_->aenc ? impl_->aenc->sample_rate : 0;
}
const std::string& VideoWriter::path() const {
    return impl_->path;
}

}  // namespace loopy::render
