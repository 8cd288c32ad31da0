#pragma once
// Identifies a still image and reads its pixel size from the header bytes alone, so oversized or
// unsupported files are refused before anything is decoded or allocated.
#include <cstdint>
#include <istream>

namespace loopy::render {

enum class ImageFormat { unknown, png, jpeg, webp, bmp };

struct ImageHeader {
    ImageFormat format = ImageFormat::unknown;
    std::int64_t width = 0;  // 0 when the format is known but the size could not be read
    std::int64_t height = 0;
};

// Reads from the stream's current position; never throws (a short or odd header gives zeros).
ImageHeader read_image_header(std::istream& in);

const char* format_name(ImageFormat format);

}  // namespace loopy::render
