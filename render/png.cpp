#include "render/png.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <vector>

#include "core/atomic_file.h"
#include "core/error.h"

namespace loopy::render {

void write_png(const std::string& path, const std::uint8_t* rgb, int width, int height) {
    if (!rgb || width <= 0 || height <= 0) throw Error(path + ": no image to write");
    const cv::Mat image(height, width, CV_8UC3, const_cast<std::uint8_t*>(rgb));
    cv::Mat bgr;
    cv::cvtColor(image, bgr, cv::COLOR_RGB2BGR);
    std::vector<unsigned char> bytes;
    if (!cv::imencode(".png", bgr, bytes)) throw Error(path + ": PNG encoding failed");
    write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace loopy::render
