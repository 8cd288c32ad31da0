#pragma once
// PNG frames (the optional `--frames-dir` sequence, contact sheets). Qt-free; part of loopy_image.
#include <cstdint>
#include <string>

namespace loopy::render {

// Writes an RGB24 image atomically (temporary file, then rename); throws loopy::Error.
void write_png(const std::string& path, const std::uint8_t* rgb, int width, int height);

}  // namespace loopy::render
