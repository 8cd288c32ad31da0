#include "render/image_header.h"

#include <cstdlib>
#include <cstring>

namespace loopy::render {
namespace {

using Bytes = const unsigned char*;

std::uint32_t be16(Bytes p) {
    return (std::uint32_t{p[0]} << 8) | p[1];
}
std::uint32_t be32(Bytes p) {
    return (be16(p) << 16) | be16(p + 2);
}
std::uint32_t le16(Bytes p) {
    return (std::uint32_t{p[1]} << 8) | p[0];
}
std::uint32_t le24(Bytes p) {
    return (std::uint32_t{p[2]} << 16) | le16(p);
}
std::uint32_t le32(Bytes p) {
    return (std::uint32_t{p[3]} << 24) | le24(p);
}

bool starts(Bytes p, const char* magic, std::size_t n) {
    return std::memcmp(p, magic, n) == 0;
}

// PNG: the first chunk must be IHDR, which holds the size.
ImageHeader png(Bytes h) {
    ImageHeader r{ImageFormat::png};
    if (starts(h + 12, "IHDR", 4)) {
        r.width = be32(h + 16);
        r.height = be32(h + 20);
    }
    return r;
}

// BMP: the DIB header follows the 14-byte file header; a negative height means top-down rows.
ImageHeader bmp(Bytes h) {
    ImageHeader r{ImageFormat::bmp};
    if (le32(h + 14) == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
        r.width = le16(h + 18);
        r.height = le16(h + 20);
    } else {
        r.width = static_cast<std::int32_t>(le32(h + 18));
        r.height = std::llabs(static_cast<std::int32_t>(le32(h + 22)));
        if (r.width < 0) r.width = r.height = 0;
    }
    return r;
}

// WebP: RIFF container whose first chunk is lossy (VP8), lossless (VP8L) or extended (VP8X).
ImageHeader webp(Bytes h) {
    ImageHeader r{ImageFormat::webp};
    if (starts(h + 12, "VP8X", 4)) {
        r.width = le24(h + 24) + 1;
        r.height = le24(h + 27) + 1;
    } else if (starts(h + 12, "VP8L", 4) && h[20] == 0x2f) {
        const std::uint32_t bits = le32(h + 21);
        r.width = (bits & 0x3fff) + 1;
        r.height = ((bits >> 14) & 0x3fff) + 1;
    } else if (starts(h + 12, "VP8 ", 4) && starts(h + 23, "\x9d\x01\x2a", 3)) {
        r.width = le16(h + 26) & 0x3fff;
        r.height = le16(h + 28) & 0x3fff;
    }
    return r;
}

// SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
bool is_start_of_frame(int marker) {
    return marker >= 0xc0 && marker <= 0xcf && marker != 0xc4 && marker != 0xc8 && marker != 0xcc;
}

// JPEG: walks the marker segments after SOI up to the first SOF (EXIF/ICC data may come first).
ImageHeader jpeg(std::istream& in, std::streamoff start) {
    ImageHeader r{ImageFormat::jpeg};
    std::streamoff at = start + 2;
    unsigned char s[9];
    while (in.seekg(at) && in.read(reinterpret_cast<char*>(s), 2) && s[0] == 0xff) {
        const int marker = s[1];
        if (marker == 0xff) {  // fill byte
            at += 1;
        } else if (marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) {  // no payload
            at += 2;
        } else if (marker == 0xd9 || marker == 0xda) {  // image end or scan data: no SOF seen
            break;
        } else if (!in.read(reinterpret_cast<char*>(s + 2), 7)) {
            break;
        } else if (is_start_of_frame(marker)) {
            r.height = be16(s + 5);
            r.width = be16(s + 7);
            break;
        } else {
            const std::uint32_t length = be16(s + 2);
            if (length < 2) break;
            at += 2 + length;
        }
    }
    return r;
}

}  // namespace

ImageHeader read_image_header(std::istream& in) {
    const std::streamoff start = in.tellg();
    unsigned char h[32] = {};
    in.read(reinterpret_cast<char*>(h), sizeof(h));
    const std::streamsize n = in.gcount();
    in.clear();
    if (n >= 24 && starts(h, "\x89PNG\r\n\x1a\n", 8)) return png(h);
    if (n >= 3 && starts(h, "\xff\xd8\xff", 3)) return jpeg(in, start);
    if (n >= 30 && starts(h, "RIFF", 4) && starts(h + 8, "WEBP", 4)) return webp(h);
    if (n >= 26 && starts(h, "BM", 2)) return bmp(h);
    return {};
}

const char* format_name(ImageFormat format) {
    switch (format) {
        case ImageFormat::png:
            return "PNG";
        case ImageFormat::jpeg:
            return "JPEG";
        case ImageFormat::webp:
            return "WebP";
        case ImageFormat::bmp:
            return "BMP";
        case ImageFormat::unknown:
            break;
    }
    return "unknown";
}

}  // namespace loopy::render
