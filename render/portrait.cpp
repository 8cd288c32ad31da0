#include "render/portrait.h"

extern "C" {
#include <libavutil/dict.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "audio/ffmpeg_raii.h"
#include "core/error.h"
#include "core/log.h"
#include "render/image_header.h"

#ifndef LOOPY_FACE_CASCADE
#define LOOPY_FACE_CASCADE "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml"
#endif

namespace loopy::render {
namespace {

namespace fs = std::filesystem;

// A 100-megapixel 32-bit BMP is ~400 MB; anything past this is not a portrait.
constexpr std::uintmax_t kMaxFileBytes = 512u << 20;

struct SwsDeleter {
    void operator()(SwsContext* s) const { sws_freeContext(s); }
};
using SwsPtr = std::unique_ptr<SwsContext, SwsDeleter>;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
    throw Error(path + ": " + what);
}

std::string dims(std::int64_t width, std::int64_t height) {
    return std::to_string(width) + "x" + std::to_string(height);
}

std::string describe(const CropRect& c) {
    return dims(c.width, c.height) + " at (" + std::to_string(c.x) + ", " + std::to_string(c.y) +
           ")";
}

// Everything that can be refused without decoding: the file itself and the header's size.
ImageHeader check_file(const std::string& path) {
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (!fs::exists(status)) fail(path, "no such file");
    if (!fs::is_regular_file(status)) fail(path, "not a regular file");
    const std::uintmax_t bytes = fs::file_size(path, ec);
    if (ec) fail(path, "cannot read its size (" + ec.message() + ")");
    if (bytes == 0) fail(path, "empty file (0 bytes)");
    if (bytes > kMaxFileBytes) fail(path, "file too large for a portrait (over 512 MiB)");

    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open for reading");
    const ImageHeader h = read_image_header(in);
    if (h.format == ImageFormat::unknown)
        fail(path, "unsupported or unrecognised image format (expected PNG, JPEG, WebP or BMP)");
    const std::string kind = format_name(h.format);
    if (h.width <= 0 || h.height <= 0) fail(path, "corrupt " + kind + " header: no image size");
    if (h.width > kMaxPortraitPixels / h.height)
        fail(path, "too large: " + dims(h.width, h.height) + " is over the 100-megapixel limit");
    if (h.width < kMinPortraitSide || h.height < kMinPortraitSide)
        fail(path, "too small: " + dims(h.width, h.height) + "; at least 64x64 pixels");
    return h;
}

// The whole file plus the zeroed padding FFmpeg's bitstream readers may overread into.
std::vector<std::uint8_t> read_padded(const std::string& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    const std::streamsize size = in.tellg();
    if (!in || size <= 0) fail(path, "cannot read");
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size) + AV_INPUT_BUFFER_PADDING_SIZE);
    in.seekg(0);
    if (!in.read(reinterpret_cast<char*>(bytes.data()), size)) fail(path, "cannot read");
    return bytes;
}

AVCodecID codec_id(ImageFormat format) {
    switch (format) {
        case ImageFormat::png:
            return AV_CODEC_ID_PNG;
        case ImageFormat::jpeg:
            return AV_CODEC_ID_MJPEG;
        case ImageFormat::webp:
            return AV_CODEC_ID_WEBP;
        case ImageFormat::bmp:
            return AV_CODEC_ID_BMP;
        case ImageFormat::unknown:
            break;
    }
    return AV_CODEC_ID_NONE;
}

// One file is one packet: no demuxer, so nothing splits a JPEG at an embedded EXIF thumbnail.
ffmpeg::FramePtr decode(const std::string& path, ImageFormat format,
                        std::vector<std::uint8_t> bytes) {
    const std::string kind = format_name(format);
    const AVCodec* codec = avcodec_find_decoder(codec_id(format));
    if (!codec) fail(path, "this FFmpeg build has no " + kind + " decoder");
    ffmpeg::CodecContextPtr ctx(avcodec_alloc_context3(codec));
    if (!ctx) throw std::bad_alloc();
    ctx->max_pixels = kMaxPortraitPixels;  // second guard behind the header check
    // A damaged file must be an error, never a silently half-grey picture.
    ctx->err_recognition = AV_EF_EXPLODE | AV_EF_CRCCHECK;
    int err = avcodec_open2(ctx.get(), codec, nullptr);
    if (err < 0)
        fail(path, "cannot open the " + kind + " decoder (" + ffmpeg::error_string(err) + ")");

    auto packet = ffmpeg::make_packet();
    packet->data = bytes.data();  // not reference-counted: the decoder copies what it keeps
    packet->size = static_cast<int>(bytes.size() - AV_INPUT_BUFFER_PADDING_SIZE);
    auto frame = ffmpeg::make_frame();
    err = avcodec_send_packet(ctx.get(), packet.get());
    if (err >= 0) err = avcodec_send_packet(ctx.get(), nullptr);
    if (err >= 0) err = avcodec_receive_frame(ctx.get(), frame.get());
    if (err < 0)
        fail(path, "corrupt or truncated " + kind + " (" + ffmpeg::error_string(err) + ")");
    if (frame->decode_error_flags != 0 || (frame->flags & AV_FRAME_FLAG_CORRUPT))
        fail(path, "corrupt or truncated " + kind + ": the decoder reported damaged data");
    return frame;
}

// swscale wants the deprecated full-range "J" formats spelled as plain YUV plus a range flag.
AVPixelFormat plain_yuv(AVPixelFormat format, bool& full_range) {
    switch (format) {
        case AV_PIX_FMT_YUVJ420P:
            full_range = true;
            return AV_PIX_FMT_YUV420P;
        case AV_PIX_FMT_YUVJ422P:
            full_range = true;
            return AV_PIX_FMT_YUV422P;
        case AV_PIX_FMT_YUVJ444P:
            full_range = true;
            return AV_PIX_FMT_YUV444P;
        case AV_PIX_FMT_YUVJ440P:
            full_range = true;
            return AV_PIX_FMT_YUV440P;
        case AV_PIX_FMT_YUVJ411P:
            full_range = true;
            return AV_PIX_FMT_YUV411P;
        default:
            return format;
    }
}

// Transparent portraits (cut-outs) go on white rather than on whatever RGB hides under alpha 0.
cv::Mat over_white(const cv::Mat& rgba) {
    cv::Mat rgb(rgba.rows, rgba.cols, CV_8UC3);
    for (int y = 0; y < rgba.rows; ++y) {
        const std::uint8_t* s = rgba.ptr<std::uint8_t>(y);
        std::uint8_t* d = rgb.ptr<std::uint8_t>(y);
        for (int x = 0; x < rgba.cols; ++x, s += 4, d += 3) {
            const int a = s[3];
            for (int c = 0; c < 3; ++c)
                d[c] = static_cast<std::uint8_t>((s[c] * a + 255 * (255 - a) + 127) / 255);
        }
    }
    return rgb;
}

cv::Mat to_rgb(const AVFrame* frame, const std::string& path) {
    const int w = frame->width, h = frame->height;
    bool full_range = frame->color_range == AVCOL_RANGE_JPEG;
    const AVPixelFormat src = plain_yuv(static_cast<AVPixelFormat>(frame->format), full_range);
    const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(src);
    if (!desc) fail(path, "decoded to an unknown pixel format");
    const bool alpha = desc->flags & AV_PIX_FMT_FLAG_ALPHA;
    const AVPixelFormat dst = alpha ? AV_PIX_FMT_RGBA : AV_PIX_FMT_RGB24;
    // Accurate rounding and full chroma interpolation: the PNG path must be bit-exact.
    SwsPtr sws(sws_getContext(w, h, src, w, h, dst,
                              SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT, nullptr, nullptr,
                              nullptr));
    if (!sws) fail(path, std::string("cannot convert ") + desc->name + " to RGB");
    const bool yuv =
        !(desc->flags & (AV_PIX_FMT_FLAG_RGB | AV_PIX_FMT_FLAG_PAL)) && desc->nb_components >= 3;
    if (yuv) {  // only YUV has a matrix and a range to honour
        const int space = frame->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_DEFAULT;
        sws_setColorspaceDetails(sws.get(), sws_getCoefficients(space), full_range ? 1 : 0,
                                 sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
    }
    cv::Mat out(h, w, alpha ? CV_8UC4 : CV_8UC3);
    std::uint8_t* dst_data[4] = {out.data, nullptr, nullptr, nullptr};
    const int dst_stride[4] = {static_cast<int>(out.step), 0, 0, 0};
    sws_scale(sws.get(), frame->data, frame->linesize, 0, h, dst_data, dst_stride);
    return alpha ? over_white(out) : out;
}

// FFmpeg's JPEG decoder puts the EXIF tags in the frame metadata; 1 (or none) is upright.
int exif_orientation(const AVFrame* frame) {
    const AVDictionaryEntry* e = av_dict_get(frame->metadata, "Orientation", nullptr, 0);
    return e ? std::atoi(e->value) : 1;
}

// Turns the stored pixels into the picture as a viewer shows it (EXIF orientations 2..8).
cv::Mat apply_orientation(cv::Mat img, int orientation) {
    cv::Mat out;
    switch (orientation) {
        case 2:
            cv::flip(img, out, 1);
            return out;
        case 3:
            cv::rotate(img, out, cv::ROTATE_180);
            return out;
        case 4:
            cv::flip(img, out, 0);
            return out;
        case 5:
            cv::transpose(img, out);
            return out;
        case 6:
            cv::rotate(img, out, cv::ROTATE_90_CLOCKWISE);
            return out;
        case 7:
            cv::transpose(img, out);
            cv::rotate(out, out, cv::ROTATE_180);
            return out;
        case 8:
            cv::rotate(img, out, cv::ROTATE_90_COUNTERCLOCKWISE);
            return out;
        default:
            return img;
    }
}

cv::Mat decode_rgb(const std::string& path, const ImageHeader& header) {
    const ffmpeg::FramePtr frame = decode(path, header.format, read_padded(path));
    if (frame->width != header.width || frame->height != header.height)
        fail(path, "decoded size " + dims(frame->width, frame->height) +
                       " differs from the header's " + dims(header.width, header.height));
    return apply_orientation(to_rgb(frame.get(), path), exif_orientation(frame.get()));
}

std::unique_ptr<cv::CascadeClassifier> load_cascade(const std::string& file,
                                                    const std::string& path) {
    auto cascade = std::make_unique<cv::CascadeClassifier>();
    try {
        if (fs::exists(file) && cascade->load(file)) return cascade;
    } catch (const cv::Exception&) {
    }
    logger()->warn("{}: cannot load the face detector '{}' (package opencv-data)", path, file);
    return nullptr;
}

// Haar cascade on a copy of at most 1024 px a side: portraits have large faces, and a full
// 100-megapixel scan would take seconds. Returns the largest face in source pixels.
std::optional<CropRect> largest_face(const cv::Mat& rgb, const std::string& cascade_file,
                                     const std::string& path) {
    const auto cascade = load_cascade(cascade_file, path);
    if (!cascade) return std::nullopt;
    const double scale = std::min(1.0, 1024.0 / std::max(rgb.cols, rgb.rows));
    cv::Mat gray;
    cv::cvtColor(rgb, gray, cv::COLOR_RGB2GRAY);
    if (scale < 1) cv::resize(gray, gray, cv::Size(), scale, scale, cv::INTER_AREA);
    cv::equalizeHist(gray, gray);
    const int min_side = std::max(24, std::min(gray.cols, gray.rows) / 16);
    std::vector<cv::Rect> faces;
    cascade->detectMultiScale(gray, faces, 1.1, 5, 0, cv::Size(min_side, min_side));
    if (faces.empty()) return std::nullopt;
    const cv::Rect f =
        *std::max_element(faces.begin(), faces.end(),
                          [](const auto& a, const auto& b) { return a.area() < b.area(); });
    const auto px = [scale](int v) { return static_cast<int>(std::lround(v / scale)); };
    CropRect face{px(f.x), px(f.y), px(f.width), px(f.height)};
    face.width = std::min(face.width, rgb.cols - face.x);
    face.height = std::min(face.height, rgb.rows - face.y);
    return face;
}

CropRect centre_square(int width, int height) {
    const int side = std::min(width, height);
    return {(width - side) / 2, (height - side) / 2, side, side};
}

void check_manual_crop(const CropRect& c, int width, int height, const std::string& path) {
    if (c.empty()) fail(path, "crop " + describe(c) + " is empty");
    if (c.width != c.height) fail(path, "crop " + describe(c) + " is not square");
    if (c.x < 0 || c.y < 0 || c.x > width - c.width || c.y > height - c.height)
        fail(path, "crop " + describe(c) + " lies outside the " + dims(width, height) + " image");
}

std::vector<std::uint8_t> crop_and_resize(const cv::Mat& rgb, const CropRect& c, int size) {
    const cv::Mat square = rgb(cv::Rect(c.x, c.y, c.width, c.height));
    cv::Mat out;
    // Area averaging when shrinking (no aliasing); bicubic when a small crop must grow.
    cv::resize(square, out, cv::Size(size, size), 0, 0,
               c.width >= size ? cv::INTER_AREA : cv::INTER_CUBIC);
    return std::vector<std::uint8_t>(out.data, out.data + out.total() * out.elemSize());
}

void choose_crop(Portrait& p, const cv::Mat& rgb, const PortraitOptions& options,
                 const std::string& path) {
    if (options.crop) {
        check_manual_crop(*options.crop, rgb.cols, rgb.rows, path);
        p.crop = *options.crop;
        return;
    }
    if (options.detect_face) {
        const std::string cascade =
            options.cascade_path.empty() ? LOOPY_FACE_CASCADE : options.cascade_path;
        if (auto face = largest_face(rgb, cascade, path)) {
            p.face = *face;
            p.face_found = true;
            p.crop = crop_around_face(p.face, rgb.cols, rgb.rows);
            logger()->info("{}: face {}, crop {}", path, describe(p.face), describe(p.crop));
            return;
        }
    }
    p.crop = centre_square(rgb.cols, rgb.rows);
    if (options.detect_face)
        logger()->warn("{}: no face found; using the centre square {}", path, describe(p.crop));
}

}  // namespace

CropRect crop_around_face(const CropRect& face, int image_width, int image_height) {
    const double f = std::max(face.width, face.height);
    const double cx = face.x + face.width / 2.0;
    const double cy = face.y + face.height / 2.0 - 0.1 * f;
    const int side =
        std::max(1, std::min({static_cast<int>(std::lround(2.4 * f)), image_width, image_height}));
    const auto place = [side](double centre, int extent) {
        return std::clamp(static_cast<int>(std::lround(centre - side / 2.0)), 0, extent - side);
    };
    return {place(cx, image_width), place(cy, image_height), side, side};
}

Portrait load_portrait(const std::string& path, const PortraitOptions& options) {
    if (options.size < 8 || options.size > 4096)
        throw Error("portrait size must be 8..4096 pixels, got " + std::to_string(options.size));
    const ImageHeader header = check_file(path);
    try {
        const cv::Mat rgb = decode_rgb(path, header);
        Portrait p;
        p.source_width = rgb.cols;
        p.source_height = rgb.rows;
        choose_crop(p, rgb, options, path);
        p.rgb = crop_and_resize(rgb, p.crop, options.size);
        p.width = p.height = options.size;
        return p;
    } catch (const cv::Exception& e) {
        fail(path, std::string("image processing failed: ") + e.what());
    }
}

}  // namespace loopy::render
