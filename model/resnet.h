#pragma once
// The convolutional building blocks shared by the VAE and the U-Net: diffusers' ResnetBlock2D,
// Downsample2D and Upsample2D. Child modules carry diffusers' names, so checkpoints load by key.
//
// Only what Stable Diffusion 1.x / AnimateDiff use is built: time_embedding_norm "default",
// SiLU, output_scale_factor 1, convolutional resampling. Dropout is ignored (inference only).
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace loopy::model {

struct ResnetBlock2DOptions {
    ResnetBlock2DOptions(int64_t in_channels, int64_t out_channels)
        : in_channels_(in_channels), out_channels_(out_channels) {}
    TORCH_ARG(int64_t, in_channels);
    TORCH_ARG(int64_t, out_channels);
    // > 0 builds `time_emb_proj` (Linear(temb_channels, out_channels)); 0 means no time input.
    TORCH_ARG(int64_t, temb_channels) = 0;
    TORCH_ARG(int64_t, groups) = 32;  // GroupNorm groups, for both norm1 and norm2
    TORCH_ARG(double, eps) = 1e-6;    // GroupNorm epsilon (the VAE uses 1e-6, the U-Net 1e-5)
};

// x -> norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb)) per channel) -> norm2 -> SiLU -> conv2,
// plus the input (through the 1x1 `conv_shortcut` when in_channels != out_channels).
// Keys: norm1, conv1, [time_emb_proj], norm2, conv2, [conv_shortcut].
class ResnetBlock2DImpl : public torch::nn::Module {
  public:
    explicit ResnetBlock2DImpl(const ResnetBlock2DOptions& options);

    // x [B, in, H, W]; temb [B, temb_channels], or an undefined tensor when there is no time
    // input (it must be defined iff temb_channels > 0). Returns [B, out, H, W].
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb = {});

    ResnetBlock2DOptions options;
    torch::nn::GroupNorm norm1{nullptr};
    torch::nn::Conv2d conv1{nullptr};
    torch::nn::Linear time_emb_proj{nullptr};  // null when temb_channels == 0
    torch::nn::GroupNorm norm2{nullptr};
    torch::nn::Conv2d conv2{nullptr};
    torch::nn::Conv2d conv_shortcut{nullptr};  // null when in_channels == out_channels
};
TORCH_MODULE(ResnetBlock2D);

struct Downsample2DOptions {
    Downsample2DOptions(int64_t channels, int64_t out_channels)
        : channels_(channels), out_channels_(out_channels) {}
    explicit Downsample2DOptions(int64_t channels) : Downsample2DOptions(channels, channels) {}
    TORCH_ARG(int64_t, channels);
    TORCH_ARG(int64_t, out_channels);
    // 1 for the U-Net. 0 (the VAE encoder) pads right and bottom by one first, as diffusers does.
    TORCH_ARG(int64_t, padding) = 1;
};

// 3x3 convolution with stride 2, key `conv`. Halves H and W (rounding up for padding 1 and odd
// sizes, like PyTorch's conv arithmetic).
class Downsample2DImpl : public torch::nn::Module {
  public:
    explicit Downsample2DImpl(const Downsample2DOptions& options);
    torch::Tensor forward(const torch::Tensor& x);

    Downsample2DOptions options;
    torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample2D);

struct Upsample2DOptions {
    Upsample2DOptions(int64_t channels, int64_t out_channels)
        : channels_(channels), out_channels_(out_channels) {}
    explicit Upsample2DOptions(int64_t channels) : Upsample2DOptions(channels, channels) {}
    TORCH_ARG(int64_t, channels);
    TORCH_ARG(int64_t, out_channels);
};

// Nearest-neighbour 2x upsampling, then a 3x3 convolution (padding 1), key `conv`.
class Upsample2DImpl : public torch::nn::Module {
  public:
    explicit Upsample2DImpl(const Upsample2DOptions& options);

    // output_size {H, W}: interpolate to exactly that size instead of 2x (the U-Net passes the
    // skip connection's size when the input resolution is not a multiple of the total downscale).
    torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& output_size = {});

    Upsample2DOptions options;
    torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

}  // namespace loopy::model
