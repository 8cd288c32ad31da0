#pragma once
// Between 8-bit RGB pictures and the VAE's [-1, 1] images: one rule for every place that encodes
// pictures or shows and scores generated frames.
#include <torch/torch.h>

namespace loopy::model {

// uint8 RGB [N, 3, H, W] (any device) -> float32 [N, 3, H, W] in [-1, 1], on the same device.
inline torch::Tensor from_rgb8(const torch::Tensor& rgb) {
    return rgb.to(torch::kFloat32).div(127.5).sub(1.0);
}

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
