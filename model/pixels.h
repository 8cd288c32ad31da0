#pragma once
// Between decoder outputs and 8-bit RGB pictures: one rounding rule for every place that shows
// or scores generated frames.
#include <torch/torch.h>

namespace loopy::model {

// image [N, 3, H, W] in [-1, 1] (any dtype or device) -> uint8 RGB [N, H, W, 3], contiguous, on
// the CPU: clamped, scaled to 0..255 and rounded.
inline torch::Tensor to_rgb8(const torch::Tensor& image) {
    return image.to(torch::kFloat32)
        .clamp(-1.0, 1.0)
        .add(1.0)
        .mul(127.5)
        .round()
        .to(torch::kUInt8)
        .permute({0, 2, 3, 1})
        .contiguous()
        .cpu();
}

}  // namespace loopy::model
