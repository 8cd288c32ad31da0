#include "audio/audio_decoder.h"

extern "C" {
#include <libavutil/channel_layout.h>
#include <libavutil/opt.h>
}

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <system_error>

#include "audio/ffmpeg_raii.h"
#include "core/error.h"
#include "core/log.h"

namespace loopy::audio {
namespace fs = std::filesystem;

struct AudioFileReader::Impl {
    std::string path;
    int out_rate = 0;
    ffmpeg::InputFormatPtr format;
    ffmpeg::CodecContextPtr codec;
    ffmpeg::SwrPtr swr;
    ffmpeg::PacketPtr packet = ffmpeg::make_packet();
    ffmpeg::FramePtr frame = ffmpeg::make_frame();
    int stream_index = -1;

    // What the resampler was set up for; a stream may change format midway (rare, but legal).
    int swr_format = -1;
    int swr_rate = 0;
    AVChannelLayout swr_layout{};

    std::vector<float> buffer;  // resampled, not yet handed out
    std::size_t peak = 0;
    bool demux_done = false;
    bool decoder_drained = false;
    bool finished = false;

    std::int64_t frames_decoded = 0;
    std::int64_t samples_out = 0;
    int bad_packets = 0;
    bool damaged = false;
    int source_rate = 0;
    int source_channels = 0;
    double source_duration = 0;
    bool duration_is_guess = false;  // estimated from the bitrate: no use for spotting truncation

    ~Impl() { av_channel_layout_uninit(&swr_layout); }

    Error error(const std::string& what) const { return Error(path + ": " + what); }
    void open();
    void open_decoder(AVStream* stream, const AVCodec* decoder);
    void fill(std::size_t wanted);
    void step();
    void send(const AVPacket* pkt);
    void receive();
    void on_bad_data(int err);
    void convert(const AVFrame* in);
    void configure_swr(const AVFrame* in);
    void drain_swr();
    void finish();
};

void AudioFileReader::Impl::open() {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    if (ec) throw error("cannot open (" + ec.message() + ")");
    if (size == 0) throw error("the file is empty");

    AVFormatContext* raw = nullptr;
    int err = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
    if (err < 0)
        throw error("not a readable audio or video file (" + ffmpeg::error_string(err) + ")");
    format.reset(raw);
    err = avformat_find_stream_info(raw, nullptr);
    if (err < 0) throw error("cannot read its streams (" + ffmpeg::error_string(err) + ")");

    const AVCodec* decoder = nullptr;
    stream_index = av_find_best_stream(raw, AVMEDIA_TYPE_AUDIO, -1, -1, &decoder, 0);
    if (stream_index == AVERROR_STREAM_NOT_FOUND) throw error("has no audio stream");
    if (stream_index < 0 || !decoder) {
        std::string name = "unknown";
        for (unsigned i = 0; i < raw->nb_streams; ++i)
            if (raw->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO)
                name = avcodec_get_name(raw->streams[i]->codecpar->codec_id);
        throw error("unsupported audio codec '" + name + "'");
    }
    // Only the chosen stream is demuxed: a video file's pictures are skipped, not decoded.
    for (unsigned i = 0; i < raw->nb_streams; ++i)
        if (static_cast<int>(i) != stream_index) raw->streams[i]->discard = AVDISCARD_ALL;
    open_decoder(raw->streams[stream_index], decoder);
}

void AudioFileReader::Impl::open_decoder(AVStream* stream, const AVCodec* decoder) {
    codec.reset(avcodec_alloc_context3(decoder));
    if (!codec) throw std::bad_alloc();
    int err = avcodec_parameters_to_context(codec.get(), stream->codecpar);
    if (err >= 0) {
        codec->pkt_timebase = stream->time_base;
        err = avcodec_open2(codec.get(), decoder, nullptr);
    }
    if (err < 0)
        throw error(std::string("cannot open the ") + decoder->name + " decoder (" +
                    ffmpeg::error_string(err) + ")");

    source_rate = stream->codecpar->sample_rate;
    source_channels = stream->codecpar->ch_layout.nb_channels;
    if (stream->duration != AV_NOPTS_VALUE)
        source_duration = static_cast<double>(stream->duration) * av_q2d(stream->time_base);
    else if (format->duration != AV_NOPTS_VALUE)
        source_duration = static_cast<double>(format->duration) / AV_TIME_BASE;
    duration_is_guess = format->duration_estimation_method == AVFMT_DURATION_FROM_BITRATE;
}

void AudioFileReader::Impl::fill(std::size_t wanted) {
    while (buffer.size() < wanted && !finished)
        step();
}

// One demuxed packet (or the end-of-stream flush) through the decoder and resampler.
void AudioFileReader::Impl::step() {
    if (!demux_done) {
        const int err = av_read_frame(format.get(), packet.get());
        if (err >= 0) {
            if (packet->stream_index == stream_index) send(packet.get());
            av_packet_unref(packet.get());
        } else {
            // Anything but a clean EOF is a damaged file; what decoded so far is kept.
            if (err != AVERROR_EOF) on_bad_data(err);
            demux_done = true;
            send(nullptr);
        }
    }
    receive();
    if (demux_done && decoder_drained) finish();
}

void AudioFileReader::Impl::send(const AVPacket* pkt) {
    const int err = avcodec_send_packet(codec.get(), pkt);
    if (err < 0 && err != AVERROR_EOF) on_bad_data(err);
}

void AudioFileReader::Impl::receive() {
    for (;;) {
        const int err = avcodec_receive_frame(codec.get(), frame.get());
        if (err == AVERROR(EAGAIN)) {
            decoder_drained = demux_done;  // a refused flush must not loop forever
            return;
        }
        if (err == AVERROR_EOF) {
            decoder_drained = true;
            return;
        }
        if (err < 0) {
            on_bad_data(err);
            return;
        }
        ++frames_decoded;
        convert(frame.get());
        av_frame_unref(frame.get());
    }
}

// A file whose audio never decoded is an error; later damage (a cut-off download) only warns.
void AudioFileReader::Impl::on_bad_data(int err) {
    if (frames_decoded == 0)
        throw error("its audio does not decode (" + ffmpeg::error_string(err) +
                    "): the file is corrupt or not audio");
    ++bad_packets;
    damaged = true;
}

void AudioFileReader::Impl::configure_swr(const AVFrame* in) {
    if (swr && swr_format == in->format && swr_rate == in->sample_rate &&
        av_channel_layout_compare(&swr_layout, &in->ch_layout) == 0)
        return;
    if (swr) drain_swr();
    const int channels = in->ch_layout.nb_channels;
    if (channels <= 0) throw error("the audio stream declares no channels");

    AVChannelLayout layout{};
    if (in->ch_layout.order == AV_CHANNEL_ORDER_NATIVE)
        av_channel_layout_copy(&layout, &in->ch_layout);
    else
        av_channel_layout_default(&layout, channels);  // an unlabelled 6 channels is 5.1
    AVChannelLayout mono = AV_CHANNEL_LAYOUT_MONO;  // not const: FFmpeg 5.1 swr_alloc_set_opts2()
    SwrContext* raw = nullptr;
    int err =
        swr_alloc_set_opts2(&raw, &mono, AV_SAMPLE_FMT_FLT, out_rate, &layout,
                            static_cast<AVSampleFormat>(in->format), in->sample_rate, 0, nullptr);
    swr.reset(raw);
    if (err >= 0) {
        // Scale FFmpeg's downmix so its coefficients sum to 1: a full-scale source cannot clip.
        av_opt_set_double(raw, "rematrix_maxval", 1.0, 0);
        if (layout.order != AV_CHANNEL_ORDER_NATIVE) {
            // No known speaker positions: the plain mean of the channels.
            const std::vector<double> matrix(channels, 1.0 / channels);
            err = swr_set_matrix(raw, matrix.data(), channels);
        }
    }
    av_channel_layout_uninit(&layout);
    if (err >= 0) err = swr_init(raw);
    if (err < 0) throw error("cannot set up resampling (" + ffmpeg::error_string(err) + ")");
    swr_format = in->format;
    swr_rate = in->sample_rate;
    av_channel_layout_uninit(&swr_layout);
    av_channel_layout_copy(&swr_layout, &in->ch_layout);
}

void AudioFileReader::Impl::convert(const AVFrame* in) {
    configure_swr(in);
    const int capacity = swr_get_out_samples(swr.get(), in->nb_samples);
    if (capacity < 0) throw error("resampling failed (" + ffmpeg::error_string(capacity) + ")");
    const std::size_t old = buffer.size();
    buffer.resize(old + static_cast<std::size_t>(capacity));
    auto* out = reinterpret_cast<uint8_t*>(buffer.data() + old);
    const int n = swr_convert(swr.get(), &out, capacity,
                              const_cast<const uint8_t**>(in->extended_data), in->nb_samples);
    if (n < 0) throw error("resampling failed (" + ffmpeg::error_string(n) + ")");
    buffer.resize(old + static_cast<std::size_t>(n));
    samples_out += n;
    peak = std::max(peak, buffer.size());
}

// The resampler holds a few samples of filter delay; they belong at the end of the output.
void AudioFileReader::Impl::drain_swr() {
    for (;;) {
        const int capacity = std::max(swr_get_out_samples(swr.get(), 0), 256);
        const std::size_t old = buffer.size();
        buffer.resize(old + static_cast<std::size_t>(capacity));
        auto* out = reinterpret_cast<uint8_t*>(buffer.data() + old);
        const int n = swr_convert(swr.get(), &out, capacity, nullptr, 0);
        buffer.resize(old + static_cast<std::size_t>(std::max(n, 0)));
        if (n <= 0) break;
        samples_out += n;
    }
    peak = std::max(peak, buffer.size());
}

void AudioFileReader::Impl::finish() {
    finished = true;
    if (frames_decoded == 0) throw error("contains no decodable audio");
    if (swr) drain_swr();
    const double decoded = static_cast<double>(samples_out) / out_rate;
    const double slack = std::max(0.25, 0.02 * source_duration);
    if (!duration_is_guess && source_duration - decoded > slack) {
        damaged = true;
        logger()->warn(
            "{}: the audio ends early: {:.2f} s decoded of the {:.2f} s declared "
            "(truncated file?)",
            path, decoded, source_duration);
    }
    if (bad_packets > 0)
        logger()->warn(
            "{}: skipped {} unreadable or undecodable audio packet(s); the file is "
            "damaged",
            path, bad_packets);
}

AudioFileReader::AudioFileReader(const std::string& path, int sample_rate)
    : impl_(std::make_unique<Impl>()) {
    impl_->path = path;
    if (sample_rate <= 0) throw impl_->error("invalid target sample rate");
    impl_->out_rate = sample_rate;
    impl_->open();
}

AudioFileReader::~AudioFileReader() = default;

bool AudioFileReader::read(std::vector<float>& chunk, std::size_t max_samples) {
    chunk.clear();
    max_samples = std::max<std::size_t>(max_samples, 1);
    impl_->fill(max_samples);
    auto& buffer = impl_->buffer;
    const std::size_t n = std::min(max_samples, buffer.size());
    chunk.assign(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
    buffer.erase(buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(n));
    return n > 0;
}

int AudioFileReader::sample_rate() const {
    return impl_->out_rate;
}
int AudioFileReader::source_sample_rate() const {
    return impl_->source_rate;
}
int AudioFileReader::source_channels() const {
    return impl_->source_channels;
}
double AudioFileReader::source_duration() const {
    return impl_->source_duration;
}
bool AudioFileReader::damaged() const {
    return impl_->damaged;
}
const std::string& AudioFileReader::path() const {
    return impl_->path;
}
std::size_t AudioFileReader::peak_buffered_samples() const {
    return impl_->peak;
}

DecodedAudio decode_audio_file(const std::string& path, int sample_rate) {
    AudioFileReader reader(path, sample_rate);
    DecodedAudio result;
    // The declared duration is only a hint (capped: a header may lie); it saves regrowing.
    const double hint = std::min(reader.source_duration(), 3600.0);
    if (hint > 0) result.samples.reserve(static_cast<std::size_t>((hint + 1) * sample_rate));
    std::vector<float> chunk;
    while (reader.read(chunk, 1 << 18))
        result.samples.insert(result.samples.end(), chunk.begin(), chunk.end());
    result.sample_rate = reader.sample_rate();
    result.source_sample_rate = reader.source_sample_rate();
    result.source_channels = reader.source_channels();
    result.source_duration = reader.source_duration();
    result.damaged = reader.damaged();
    return result;
}

}  // namespace loopy::audio
