// The portrait loader: images written here with FFmpeg's encoders (or by hand: BMP, broken and
// oversized headers) come back with the right pixels, crop and size; bad files are refused with
// the file named; the face detector finds a real face (NASA's public-domain astronaut photo).
#include <QtTest>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavutil/crc.h>
#include <libavutil/opt.h>
#include <libswscale/swscale.h>
}

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "render/portrait.h"

using loopy::render::CropRect;
using loopy::render::load_portrait;
using loopy::render::Portrait;
using loopy::render::PortraitOptions;
using Bytes = std::vector<std::uint8_t>;

namespace {

// NASA's public-domain portrait of Eileen Collins (see tests/data/faces/README.md).
const char* const kFacePhoto = LOOPY_TEST_DATA "/faces/astronaut.png";

// Packed pixels of any FFmpeg format with one plane (RGB24, RGBA, GRAY8).
struct Image {
    int width = 0;
    int height = 0;
    AVPixelFormat format = AV_PIX_FMT_RGB24;
    Bytes px;
    int channels() const { return static_cast<int>(px.size() / (std::size_t(width) * height)); }
    std::uint8_t at(int x, int y, int c) const {
        return px[(std::size_t(y) * width + x) * channels() + c];
    }
};

// Busy texture: every pixel differs from its neighbours, so any misplaced row or column shows.
Image pattern(int width, int height) {
    Image img{width, height, AV_PIX_FMT_RGB24, Bytes(std::size_t(width) * height * 3)};
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
            for (int c = 0; c < 3; ++c)
                img.px[(std::size_t(y) * width + x) * 3 + c] =
                    static_cast<std::uint8_t>((x * 7 + y * 13 + c * 85 + x * y) & 255);
    return img;
}

// Smooth colours, which lossy codecs keep within a few levels.
Image gradient(int width, int height) {
    Image img{width, height, AV_PIX_FMT_RGB24, Bytes(std::size_t(width) * height * 3)};
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x) {
            std::uint8_t* p = &img.px[(std::size_t(y) * width + x) * 3];
            p[0] = static_cast<std::uint8_t>(40 + 160 * x / width);
            p[1] = static_cast<std::uint8_t>(200 - 150 * y / height);
            p[2] = 120;
        }
    return img;
}

Image flat(int width, int height, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
    Image img{width, height, AV_PIX_FMT_RGB24, Bytes(std::size_t(width) * height * 3)};
    for (std::size_t i = 0; i < img.px.size(); i += 3) {
        img.px[i] = r;
        img.px[i + 1] = g;
        img.px[i + 2] = b;
    }
    return img;
}

void fill_frame(AVFrame* frame, const Image& img) {
    if (frame->format == img.format) {  // bit-exact copy for the lossless cases
        const std::size_t row = std::size_t(img.width) * img.channels();
        for (int y = 0; y < img.height; ++y)
            std::memcpy(frame->data[0] + std::size_t(y) * frame->linesize[0],
                        &img.px[std::size_t(y) * row], row);
        return;
    }
    SwsContext* sws = sws_getContext(img.width, img.height, img.format, img.width, img.height,
                                     static_cast<AVPixelFormat>(frame->format),
                                     SWS_BICUBIC | SWS_ACCURATE_RND, nullptr, nullptr, nullptr);
    const std::uint8_t* src[4] = {img.px.data()};
    const int stride[4] = {img.width * img.channels()};
    sws_scale(sws, src, stride, 0, img.height, frame->data, frame->linesize);
    sws_freeContext(sws);
}

// One still picture through the named FFmpeg encoder; empty when FFmpeg lacks the encoder.
Bytes encode(const char* encoder, AVPixelFormat format, const Image& img, int qscale = 0,
             const char* option = nullptr, const char* value = nullptr) {
    const AVCodec* codec = avcodec_find_encoder_by_name(encoder);
    if (!codec) return {};
    AVCodecContext* ctx = avcodec_alloc_context3(codec);
    ctx->width = img.width;
    ctx->height = img.height;
    ctx->pix_fmt = format;
    ctx->time_base = {1, 25};
    if (qscale > 0) {
        ctx->flags |= AV_CODEC_FLAG_QSCALE;
        ctx->global_quality = FF_QP2LAMBDA * qscale;
    }
    if (option) av_opt_set(ctx->priv_data, option, value, 0);
    Bytes out;
    if (avcodec_open2(ctx, codec, nullptr) >= 0) {
        AVFrame* frame = av_frame_alloc();
        frame->width = img.width;
        frame->height = img.height;
        frame->format = format;
        av_frame_get_buffer(frame, 0);
        fill_frame(frame, img);
        AVPacket* packet = av_packet_alloc();
        avcodec_send_frame(ctx, frame);
        avcodec_send_frame(ctx, nullptr);
        if (avcodec_receive_packet(ctx, packet) >= 0)
            out.assign(packet->data, packet->data + packet->size);
        av_packet_free(&packet);
        av_frame_free(&frame);
    }
    avcodec_free_context(&ctx);
    return out;
}

void put16le(Bytes& b, unsigned v) {
    b.push_back(v & 255);
    b.push_back((v >> 8) & 255);
}
void put32le(Bytes& b, std::uint32_t v) {
    put16le(b, v & 0xffff);
    put16le(b, v >> 16);
}
void put32be(Bytes& b, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8)
        b.push_back((v >> shift) & 255);
}

// 24-bit BMP by hand; `pixels` false writes the header alone (for the size checks).
Bytes bmp(const Image& img, bool top_down, bool pixels = true) {
    const std::uint32_t row = (std::uint32_t(img.width) * 3 + 3) & ~3u;
    const std::uint32_t data = row * std::uint32_t(img.height);
    Bytes b{'B', 'M'};
    put32le(b, 54 + data);
    put32le(b, 0);
    put32le(b, 54);
    put32le(b, 40);
    put32le(b, img.width);
    put32le(b, static_cast<std::uint32_t>(top_down ? -img.height : img.height));
    put16le(b, 1);
    put16le(b, 24);
    for (std::uint32_t v : {0u, data, 2835u, 2835u, 0u, 0u})
        put32le(b, v);
    if (!pixels) return b;
    for (int r = 0; r < img.height; ++r) {
        const int y = top_down ? r : img.height - 1 - r;
        for (int x = 0; x < img.width; ++x)
            for (int c = 2; c >= 0; --c)
                b.push_back(img.at(x, y, c));
        b.resize(b.size() + row - img.width * 3, 0);
    }
    return b;
}

void png_chunk(Bytes& b, const char* type, const Bytes& payload) {
    put32be(b, static_cast<std::uint32_t>(payload.size()));
    Bytes body(type, type + 4);
    body.insert(body.end(), payload.begin(), payload.end());
    b.insert(b.end(), body.begin(), body.end());
    const AVCRC* table = av_crc_get_table(AV_CRC_32_IEEE_LE);
    put32be(b, av_crc(table, 0xffffffff, body.data(), body.size()) ^ 0xffffffff);
}

// A PNG whose IHDR declares the size but whose IDAT is a few bytes of nothing.
Bytes png_header_only(std::uint32_t width, std::uint32_t height) {
    Bytes b{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    Bytes ihdr;
    put32be(ihdr, width);
    put32be(ihdr, height);
    for (std::uint8_t v : {8, 2, 0, 0, 0})
        ihdr.push_back(v);
    png_chunk(b, "IHDR", ihdr);
    png_chunk(b, "IDAT", {0x78, 0x9c, 0x03, 0x00});
    png_chunk(b, "IEND", {});
    return b;
}

// Inserts an EXIF APP1 segment with one tag, Orientation, right after the JPEG's SOI.
Bytes with_exif_orientation(Bytes jpeg, int orientation) {
    const Bytes app1{0xff, 0xe1,
                     0x00, 0x22,
                     'E',  'x',
                     'i',  'f',
                     0,    0,  // APP1, length 34
                     'M',  'M',
                     0x00, 0x2a,
                     0,    0,
                     0,    8,  // TIFF, IFD0 at 8
                     0,    1,  // one entry
                     0x01, 0x12,
                     0x00, 0x03,
                     0,    0,
                     0,    1,  // Orientation SHORT
                     0,    static_cast<std::uint8_t>(orientation),
                     0,    0,  // its value
                     0,    0,
                     0,    0};  // no next IFD
    jpeg.insert(jpeg.begin() + 2, app1.begin(), app1.end());
    return jpeg;
}

struct Diff {
    int max = 0;
    double mean = 0;
};

// Compares the portrait with the source pixels under its crop (crop side == output size).
Diff diff(const Portrait& p, const Image& src) {
    Diff d;
    for (int y = 0; y < p.height; ++y)
        for (int x = 0; x < p.width; ++x)
            for (int c = 0; c < 3; ++c) {
                const int want = src.at(p.crop.x + x, p.crop.y + y, c);
                const int got = p.rgb[(std::size_t(y) * p.width + x) * 3 + c];
                d.max = std::max(d.max, std::abs(want - got));
                d.mean += std::abs(want - got);
            }
    d.mean /= double(p.width) * p.height * 3;
    return d;
}

std::array<double, 3> mean_colour(const Portrait& p) {
    std::array<double, 3> m{};
    for (std::size_t i = 0; i < p.rgb.size(); ++i)
        m[i % 3] += p.rgb[i];
    for (auto& v : m)
        v /= double(p.rgb.size() / 3);
    return m;
}

template <class F>
QString expect_error(F&& body) {
    try {
        body();
    } catch (const loopy::Error& e) {
        return QString::fromStdString(e.what());
    }
    return QString("(no error)");
}

PortraitOptions sized(int size, std::optional<CropRect> crop = std::nullopt) {
    PortraitOptions o;
    o.size = size;
    o.crop = crop;
    return o;
}

bool contains(const CropRect& outer, const CropRect& inner) {
    return inner.x >= outer.x && inner.y >= outer.y &&
           inner.x + inner.width <= outer.x + outer.width &&
           inner.y + inner.height <= outer.y + outer.height;
}

}  // namespace

class PortraitTest : public QObject {
    Q_OBJECT
    QTemporaryDir dir_;

    std::string write(const char* name, const Bytes& bytes) const {
        const std::string p = dir_.filePath(name).toStdString();
        std::ofstream(p, std::ios::binary)
            .write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
        return p;
    }

    // The error names the file and says what is wrong.
    void check_refused(const std::string& path, const PortraitOptions& options,
                       const char* what) const {
        const QString e = expect_error([&] { load_portrait(path, options); });
        QVERIFY2(e.contains(QString::fromStdString(path)), qPrintable(e));
        QVERIFY2(e.contains(what), qPrintable(e));
    }

  private Q_SLOTS:
    void initTestCase() { QVERIFY(dir_.isValid()); }

    // PNG is lossless: a square crop at the output size is the source pixels, bit for bit.
    void pngPixelsExact() {
        const Image src = pattern(100, 72);
        const std::string p = write("pattern.png", encode("png", AV_PIX_FMT_RGB24, src));
        const Portrait out = load_portrait(p, sized(64, CropRect{10, 4, 64, 64}));
        QCOMPARE(out.source_width, 100);
        QCOMPARE(out.source_height, 72);
        QCOMPARE(out.width, 64);
        QCOMPARE(out.height, 64);
        QCOMPARE(out.rgb.size(), std::size_t(64 * 64 * 3));
        QCOMPARE(diff(out, src).max, 0);
    }

    // Grey PNGs are full range (0 stays 0, 255 stays 255); transparency lands on white.
    void pngGreyAndAlpha() {
        Image grey{96, 64, AV_PIX_FMT_GRAY8, Bytes(96 * 64)};
        for (int y = 0; y < 64; ++y)
            for (int x = 0; x < 96; ++x)
                grey.px[y * 96 + x] = static_cast<std::uint8_t>(x < 32 ? 0 : x < 64 ? 128 : 255);
        const std::string gp = write("grey.png", encode("png", AV_PIX_FMT_GRAY8, grey));
        const Portrait g = load_portrait(gp, sized(64, CropRect{0, 0, 64, 64}));
        QCOMPARE(int(g.rgb[0]), 0);
        QCOMPARE(int(g.rgb[(10 * 64 + 40) * 3 + 1]), 128);
        const Portrait g2 = load_portrait(gp, sized(64, CropRect{32, 0, 64, 64}));
        QCOMPARE(int(g2.rgb[(5 * 64 + 63) * 3 + 2]), 255);

        Image rgba{64, 64, AV_PIX_FMT_RGBA, Bytes(64 * 64 * 4)};
        for (int i = 0; i < 64 * 64; ++i) {
            const bool opaque = (i % 64) < 32;
            const std::uint8_t v[4] = {200, 40, 10, static_cast<std::uint8_t>(opaque ? 255 : 0)};
            std::memcpy(&rgba.px[std::size_t(i) * 4], v, 4);
        }
        const std::string ap = write("alpha.png", encode("png", AV_PIX_FMT_RGBA, rgba));
        const Portrait a = load_portrait(ap, sized(64, CropRect{0, 0, 64, 64}));
        QCOMPARE(int(a.rgb[0]), 200);
        QCOMPARE(int(a.rgb[1]), 40);
        QCOMPARE(int(a.rgb[2]), 10);
        QCOMPARE(int(a.rgb[40 * 3 + 0]), 255);
        QCOMPARE(int(a.rgb[40 * 3 + 1]), 255);
    }

    // JPEG is lossy: at high quality, colours come back within a few levels.
    void jpegPixelsClose() {
        const Image src = gradient(128, 96);
        const std::string p = write("gradient.jpg", encode("mjpeg", AV_PIX_FMT_YUVJ444P, src, 2));
        const Portrait out = load_portrait(p, sized(96, CropRect{16, 0, 96, 96}));
        QCOMPARE(out.source_width, 128);
        const Diff d = diff(out, src);
        QVERIFY2(d.mean < 2.0 && d.max <= 12,
                 qPrintable(QString("mean %1 max %2").arg(d.mean).arg(d.max)));
    }

    void webpPixelsClose() {
        const Image src = gradient(128, 96);
        const Bytes webp = encode("libwebp", AV_PIX_FMT_YUV420P, src, 0, "quality", "95");
        if (webp.empty())
            QSKIP(
                "this FFmpeg has no libwebp encoder to write the test image (decoding is built "
                "in)");
        const std::string p = write("gradient.webp", webp);
        const Portrait out = load_portrait(p, sized(96, CropRect{16, 0, 96, 96}));
        const Diff d = diff(out, src);
        QVERIFY2(d.mean < 3.0 && d.max <= 24,
                 qPrintable(QString("mean %1 max %2").arg(d.mean).arg(d.max)));
    }

    // BMP written by hand, bottom-up (the usual) and top-down (negative height): exact.
    void bmpPixelsExact() {
        const Image src = pattern(90, 70);
        for (bool top_down : {false, true}) {
            const std::string p = write(top_down ? "td.bmp" : "bu.bmp", bmp(src, top_down));
            const Portrait out = load_portrait(p, sized(70, CropRect{20, 0, 70, 70}));
            QCOMPARE(out.source_height, 70);
            QCOMPARE(diff(out, src).max, 0);
        }
    }

    // EXIF orientations 1..8: a red block stored at the top-left corner of a 128x80 picture is
    // shown at the corner the orientation names; 5..8 show the picture 80x128 (6: a phone held
    // upright).
    void jpegExifOrientation() {
        Image src = flat(128, 80, 128, 128, 128);
        for (int y = 0; y < 24; ++y)
            for (int x = 0; x < 24; ++x) {
                std::uint8_t* px = &src.px[(std::size_t(y) * 128 + x) * 3];
                px[0] = 220;
                px[1] = px[2] = 30;
            }
        const Bytes jpeg = encode("mjpeg", AV_PIX_FMT_YUVJ444P, src, 2);
        // Where the block shows: {right, bottom} for orientations 1..8.
        const bool corner[8][2] = {{false, false}, {true, false}, {true, true}, {false, true},
                                   {false, false}, {true, false}, {true, true}, {false, true}};
        for (int o = 1; o <= 8; ++o) {
            const std::string p = write("rotated.jpg", with_exif_orientation(jpeg, o));
            const bool swapped = o >= 5, right = corner[o - 1][0], bottom = corner[o - 1][1];
            const int w = swapped ? 80 : 128, h = swapped ? 128 : 80;
            const CropRect crop{right ? w - 80 : 0, bottom ? h - 80 : 0, 80, 80};
            const Portrait out = load_portrait(p, sized(80, crop));
            QCOMPARE(out.source_width, w);
            QCOMPARE(out.source_height, h);
            const auto red = [&](int x, int y) { return out.rgb[(std::size_t(y) * 80 + x) * 3]; };
            const int x = right ? 70 : 10, y = bottom ? 70 : 10;
            QVERIFY2(red(x, y) > 180, qPrintable(QString("orientation %1").arg(o)));
            QVERIFY2(std::abs(red(80 - x, y) - 128) < 10,
                     qPrintable(QString("orientation %1").arg(o)));
        }
    }

    // No face: the largest centred square, resized (area filter) to 128x128; a warning is logged.
    void noFaceCentreCrop() {
        std::vector<std::string> warnings;
        const auto saved_sinks = loopy::logger()->sinks();
        loopy::set_log_sinks({loopy::make_callback_sink(
            [&](spdlog::level::level_enum level, const std::string& line) {
                if (level == spdlog::level::warn) warnings.push_back(line);
            })});
        const Image src = gradient(300, 200);
        const std::string p = write("noface.png", encode("png", AV_PIX_FMT_RGB24, src));
        const Portrait out = load_portrait(p, sized(128));
        loopy::set_log_sinks(saved_sinks);
        QVERIFY(!out.face_found);
        QVERIFY(out.face.empty());
        QCOMPARE(out.crop.x, 50);
        QCOMPARE(out.crop.y, 0);
        QCOMPARE(out.crop.width, 200);
        QCOMPARE(out.crop.height, 200);
        QCOMPARE(out.width, 128);
        QCOMPARE(out.rgb.size(), std::size_t(128 * 128 * 3));
        QCOMPARE(warnings.size(), std::size_t(1));
        QVERIFY(QString::fromStdString(warnings[0]).contains("no face found"));
        // The centre pixel of the output is the centre of the crop, blurred only a little.
        const std::uint8_t* centre = &out.rgb[(64 * 128 + 64) * 3];
        QVERIFY(std::abs(int(centre[0]) - int(src.at(150, 100, 0))) <= 2);

        const Portrait flat_out = load_portrait(
            write("flat.png", encode("png", AV_PIX_FMT_RGB24, flat(64, 160, 90, 160, 30))),
            sized(128));
        QVERIFY(!flat_out.face_found);
        QCOMPARE(flat_out.crop.y, 48);
        const auto m = mean_colour(flat_out);
        QVERIFY(std::abs(m[0] - 90) < 1 && std::abs(m[1] - 160) < 1 && std::abs(m[2] - 30) < 1);
    }

    // A manual crop picks exactly that square: the red quadrant of a four-colour image.
    void manualCropHonoured() {
        Image src = flat(200, 160, 0, 0, 255);
        for (int y = 0; y < 80; ++y)
            for (int x = 100; x < 200; ++x) {
                std::uint8_t* px = &src.px[(std::size_t(y) * 200 + x) * 3];
                px[0] = 255;
                px[2] = 0;
            }
        const std::string p = write("quadrants.png", encode("png", AV_PIX_FMT_RGB24, src));
        const Portrait out = load_portrait(p, sized(128, CropRect{110, 5, 70, 70}));
        QVERIFY(!out.face_found);
        QCOMPARE(out.crop.x, 110);
        QCOMPARE(out.crop.width, 70);
        const auto m = mean_colour(out);
        QVERIFY2(m[0] > 254 && m[2] < 1, qPrintable(QString("%1 %2").arg(m[0]).arg(m[2])));
    }

    void manualCropOutsideRefused() {
        const std::string p =
            write("crop.png", encode("png", AV_PIX_FMT_RGB24, gradient(200, 100)));
        check_refused(p, sized(128, CropRect{150, 0, 64, 64}), "outside the 200x100 image");
        check_refused(p, sized(128, CropRect{-1, 0, 64, 64}), "outside");
        check_refused(p, sized(128, CropRect{0, 50, 64, 64}), "outside");
        check_refused(p, sized(128, CropRect{0, 0, 64, 48}), "not square");
        check_refused(p, sized(128, CropRect{0, 0, 0, 0}), "empty");
    }

    // The Haar cascade finds the astronaut's face; the crop holds it, squared, inside the image.
    void realFaceDetected() {
        if (!std::filesystem::exists(kFacePhoto))
            QFAIL("the face photo tests/data/faces/astronaut.png is missing");
        const Portrait out = load_portrait(kFacePhoto, sized(128));
        QVERIFY(out.face_found);
        QCOMPARE(out.source_width, 512);
        QCOMPARE(out.source_height, 512);
        // Her face is around x 180..270, y 70..160 in the 512x512 photo.
        const double fx = out.face.x + out.face.width / 2.0;
        const double fy = out.face.y + out.face.height / 2.0;
        QVERIFY2(fx > 190 && fx < 260 && fy > 80 && fy < 150,
                 qPrintable(QString("face centre %1, %2").arg(fx).arg(fy)));
        QVERIFY(out.face.width > 60 && out.face.width < 160);
        QCOMPARE(out.crop.width, out.crop.height);
        QVERIFY(contains(out.crop, out.face));
        QVERIFY(contains(CropRect{0, 0, 512, 512}, out.crop));
        QVERIFY(out.crop.width < 512);  // a face crop, not the whole picture
        QCOMPARE(out.width, 128);
        QCOMPARE(out.rgb.size(), std::size_t(128 * 128 * 3));

        PortraitOptions no_cascade = sized(128);
        no_cascade.cascade_path = dir_.filePath("missing-cascade.xml").toStdString();
        const Portrait fallback = load_portrait(kFacePhoto, no_cascade);
        QVERIFY(!fallback.face_found);
        QCOMPARE(fallback.crop.width, 512);
    }

    // The crop rule: 2.4x the face, centred 0.1 face above its centre, shifted inside the image,
    // shrunk only to the image's shorter side.
    void cropRule() {
        using loopy::render::crop_around_face;
        const CropRect mid = crop_around_face({400, 300, 100, 100}, 1000, 1000);
        QCOMPARE(mid.width, 240);
        QCOMPARE(mid.x, 330);  // centre x 450
        QCOMPARE(mid.y, 220);  // centre y 350 - 10
        const CropRect edge = crop_around_face({0, 10, 100, 100}, 1000, 1000);
        QCOMPARE(edge.x, 0);
        QCOMPARE(edge.y, 0);
        QCOMPARE(edge.width, 240);
        const CropRect big = crop_around_face({100, 50, 300, 300}, 640, 480);
        QCOMPARE(big.width, 480);
        QCOMPARE(big.y, 0);
        QCOMPARE(big.x, 10);  // centre x 250, side 480
    }

    void tooSmallRefused() {
        check_refused(write("one.png", encode("png", AV_PIX_FMT_RGB24, flat(1, 1, 9, 9, 9))),
                      sized(128), "too small");
        check_refused(write("thin.bmp", bmp(flat(200, 40, 9, 9, 9), false)), sized(128),
                      "too small");
    }

    // Refused from the header alone: the bodies hold no pixel data, so an error that came from
    // decoding would say "corrupt", not "too large".
    void tooLargeRefusedFromHeader() {
        check_refused(write("huge.png", png_header_only(20000, 20000)), sized(128),
                      "too large: 20000x20000");
        check_refused(write("wide.png", png_header_only(0xffffffffu, 0xffffffffu)), sized(128),
                      "too large");
        check_refused(
            write("huge.bmp", bmp(Image{12000, 9000, AV_PIX_FMT_RGB24, {}}, false, false)),
            sized(128), "too large: 12000x9000");
        // A JPEG whose SOF0 (after an APP1 it must skip) declares 10001x10000.
        Bytes jpeg = with_exif_orientation({0xff, 0xd8}, 1);
        for (std::uint8_t v : {0xff, 0xc0, 0x00, 0x11, 8, 0x27, 0x10, 0x27, 0x11, 3})
            jpeg.push_back(v);
        jpeg.resize(jpeg.size() + 9, 0);
        check_refused(write("huge.jpg", jpeg), sized(128), "too large: 10001x10000");
    }

    void truncatedRefused() {
        const Bytes png = encode("png", AV_PIX_FMT_RGB24, pattern(160, 120));
        check_refused(write("half.png", Bytes(png.begin(), png.begin() + png.size() / 2)),
                      sized(128), "corrupt or truncated PNG");
        const Bytes jpeg = encode("mjpeg", AV_PIX_FMT_YUVJ420P, pattern(160, 120), 2);
        check_refused(write("half.jpg", Bytes(jpeg.begin(), jpeg.begin() + jpeg.size() / 2)),
                      sized(128), "corrupt or truncated JPEG");
        const Bytes bmp_full = bmp(pattern(160, 120), false);
        check_refused(write("half.bmp", Bytes(bmp_full.begin(), bmp_full.begin() + 20000)),
                      sized(128), "corrupt or truncated BMP");
        Bytes flipped = png;  // one damaged byte inside the image data fails the chunk CRC
        flipped[png.size() / 2] ^= 0x55;
        check_refused(write("flipped.png", flipped), sized(128), "corrupt or truncated PNG");
    }

    void notAnImageRefused() {
        check_refused(dir_.filePath("nothing-here.png").toStdString(), sized(128), "no such file");
        check_refused(write("empty.png", {}), sized(128), "empty file");
        const std::string text = "This is a text file, not a picture.\n";
        check_refused(write("notes.png", Bytes(text.begin(), text.end())), sized(128),
                      "unsupported or unrecognised image format");
        const std::string gif = "GIF89a\x40\x00\x40\x00";
        check_refused(write("anim.gif", Bytes(gif.begin(), gif.end())), sized(128), "unsupported");
        check_refused(dir_.path().toStdString(), sized(128), "not a regular file");
    }

    void badSizeOptionRefused() {
        const std::string p = write("ok.png", encode("png", AV_PIX_FMT_RGB24, gradient(64, 64)));
        QVERIFY(expect_error([&] { load_portrait(p, sized(0)); }).contains("portrait size"));
        QVERIFY(expect_error([&] { load_portrait(p, sized(5000)); }).contains("portrait size"));
    }
};

QTEST_GUILESS_MAIN(PortraitTest)
#include "test_portrait.moc"
