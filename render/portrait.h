#pragma once
// The portrait path of the generation pipeline: decode one still image (PNG, JPEG, WebP, BMP) with
// FFmpeg, find the face, crop a square around it and resize it to the model's resolution.
// Qt-free and LibTorch-free: the engine turns the RGB bytes into a tensor itself.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace loopy::render {

// Pixels of the (EXIF-oriented) source image: x to the right, y down.
struct CropRect {
    int x = 0;
    int y = 0;
    int width = 0;
    int height = 0;
    bool empty() const { return width <= 0 || height <= 0; }
};

struct PortraitOptions {
    int size = 512;  // output is size x size (8..4096)
    // Square crop in source pixels; when set, face detection is skipped. It must lie inside the
    // image.
    std::optional<CropRect> crop;
    bool detect_face = true;  // false: centre square, no detection
    // Haar cascade for frontal faces; "" uses the one OpenCV's data package installs.
    std::string cascade_path;
};

struct Portrait {
    std::vector<std::uint8_t> rgb;  // RGB24, row-major, width * height * 3 bytes
    int width = 0;
    int height = 0;
    CropRect crop;  // the square taken from the source image
    CropRect face;  // the detected face box in source pixels; empty when none
    bool face_found = false;
    int source_width = 0;  // after EXIF orientation
    int source_height = 0;
};

// Images are refused outside these sizes (checked from the header, before decoding).
constexpr int kMinPortraitSide = 64;
constexpr std::int64_t kMaxPortraitPixels = 100'000'000;

// Throws loopy::Error naming the file when it is missing, empty, not a supported image, corrupt
// or truncated, too small or too large, or when options.crop is invalid.
//
// Crop rule (no manual crop): the largest detected face box F (side f, centre c) gives a square of
// side 2.4 f centred 0.1 f above c, so hair, chin and the top of the shoulders fit. The square is
// shifted to lie inside the image, and shrunk to the image's shorter side only when larger than
// it. No face (or no cascade file): the largest centred square, with a logged warning.
Portrait load_portrait(const std::string& path, const PortraitOptions& options = {});

// The crop rule above, exposed for tests.
CropRect crop_around_face(const CropRect& face, int image_width, int image_height);

}  // namespace loopy::render
