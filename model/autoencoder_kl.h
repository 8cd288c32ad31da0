#pragma once
// diffusers' AutoencoderKL (the Stable Diffusion VAE): image in [-1, 1] <-> latent at 1/8 size
// (for SD's four blocks). Module names follow diffusers, so its checkpoints load by key.
#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/resnet.h"

namespace loopy::model {

struct AutoencoderKLConfig {
    int64_t in_channels = 3;
    int64_t out_channels = 3;
    std::vector<std::string> down_block_types{"DownEncoderBlock2D"};
    std::vector<std::string> up_block_types{"UpDecoderBlock2D"};
    std::vector<int64_t> block_out_channels{64};
    int64_t layers_per_block = 1;
    std::string act_fn = "silu";
    int64_t latent_channels = 4;
    int64_t norm_num_groups = 32;
    int64_t sample_size = 32;
    double scaling_factor = 0.18215;  // latents are scaled by this before the U-Net sees them
    bool mid_block_add_attention = true;
    bool use_quant_conv = true;
    bool use_post_quant_conv = true;

    // Reads a diffusers config.json; absent keys keep diffusers' defaults. Throws loopy::Error for
    // anything this implementation does not build (block types, activation) or inconsistent
    // sizes.
    static AutoencoderKLConfig from_json(const nlohmann::json& json);
    // The Stable Diffusion 1.x / 2.x VAE (83,653,863 parameters).
    static AutoencoderKLConfig stable_diffusion();
    void validate() const;
};

// Single-head self-attention over the H*W positions with a residual connection, diffusers'
// `Attention` as built by UNetMidBlock2D for the VAE. Keys: group_norm, to_q, to_k, to_v, to_out.0.
class VaeAttentionImpl : public torch::nn::Module {
  public:
    VaeAttentionImpl(int64_t channels, int64_t groups, double eps);
    torch::Tensor forward(const torch::Tensor& x);

    torch::nn::GroupNorm group_norm{nullptr};
    torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
    torch::nn::ModuleList to_out{nullptr};  // [Linear] (diffusers' dropout slot is not built)
};
TORCH_MODULE(VaeAttention);

// resnets.0 -> attentions.0 -> resnets.1, all at constant width, no time embedding.
class VaeMidBlockImpl : public torch::nn::Module {
  public:
    VaeMidBlockImpl(int64_t channels, int64_t groups, double eps, bool add_attention);
    torch::Tensor forward(const torch::Tensor& x);

    torch::nn::ModuleList resnets{nullptr};
    torch::nn::ModuleList attentions{nullptr};  // empty without attention
};
TORCH_MODULE(VaeMidBlock);

// DownEncoderBlock2D: `layers` ResnetBlock2Ds, then optionally downsamplers.0 (padding 0).
class DownEncoderBlock2DImpl : public torch::nn::Module {
  public:
    DownEncoderBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t layers,
                           int64_t groups, double eps, bool add_downsample);
    torch::Tensor forward(torch::Tensor x);

    torch::nn::ModuleList resnets{nullptr};
    torch::nn::ModuleList downsamplers{nullptr};
};
TORCH_MODULE(DownEncoderBlock2D);

// UpDecoderBlock2D: `layers` ResnetBlock2Ds, then optionally upsamplers.0.
class UpDecoderBlock2DImpl : public torch::nn::Module {
  public:
    UpDecoderBlock2DImpl(int64_t in_channels, int64_t out_channels, int64_t layers, int64_t groups,
                         double eps, bool add_upsample);
    torch::Tensor forward(torch::Tensor x);

    torch::nn::ModuleList resnets{nullptr};
    torch::nn::ModuleList upsamplers{nullptr};
};
TORCH_MODULE(UpDecoderBlock2D);

// Image [B, in_channels, H, W] -> moments [B, 2 * latent_channels, H/f, W/f] (mean, logvar).
class EncoderImpl : public torch::nn::Module {
  public:
    explicit EncoderImpl(const AutoencoderKLConfig& config);
    torch::Tensor forward(const torch::Tensor& x);

    torch::nn::Conv2d conv_in{nullptr};
    torch::nn::ModuleList down_blocks{nullptr};
    VaeMidBlock mid_block{nullptr};
    torch::nn::GroupNorm conv_norm_out{nullptr};
    torch::nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(Encoder);

// Latent [B, latent_channels, h, w] -> image [B, out_channels, h*f, w*f].
class DecoderImpl : public torch::nn::Module {
  public:
    explicit DecoderImpl(const AutoencoderKLConfig& config);
    torch::Tensor forward(const torch::Tensor& z);

    torch::nn::Conv2d conv_in{nullptr};
    VaeMidBlock mid_block{nullptr};
    torch::nn::ModuleList up_blocks{nullptr};
    torch::nn::GroupNorm conv_norm_out{nullptr};
    torch::nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(Decoder);

// The encoder's posterior: a diagonal Gaussian per latent element.
struct DiagonalGaussian {
    torch::Tensor mean;
    torch::Tensor logvar;  // clamped to [-30, 20], as diffusers does
    torch::Tensor std;     // exp(logvar / 2)

    // Builds it from the moments [B, 2C, h, w] (mean first, then logvar, along channels).
    static DiagonalGaussian from_moments(const torch::Tensor& moments);
    // mean + std * noise with noise drawn from `generator` (the default one when undefined).
    torch::Tensor sample(c10::optional<at::Generator> generator = c10::nullopt) const;
    // mean + std * noise with caller-supplied standard-normal noise of mean's shape.
    torch::Tensor sample_with_noise(const torch::Tensor& noise) const;
    torch::Tensor mode() const { return mean; }
};

class AutoencoderKLImpl : public torch::nn::Module {
  public:
    explicit AutoencoderKLImpl(const AutoencoderKLConfig& config);

    // image [B, in_channels, H, W] in [-1, 1] (H, W multiples of the downscale factor).
    DiagonalGaussian encode(const torch::Tensor& image);
    // latent [B, latent_channels, h, w], unscaled (divide by scaling_factor first) -> image,
    // nominally in [-1, 1] (not clamped).
    torch::Tensor decode(const torch::Tensor& latent);

    // 2^(number of blocks - 1): 8 for Stable Diffusion.
    int64_t downscale_factor() const;

    AutoencoderKLConfig config;
    Encoder encoder{nullptr};
    Decoder decoder{nullptr};
    torch::nn::Conv2d quant_conv{nullptr};       // null when !use_quant_conv
    torch::nn::Conv2d post_quant_conv{nullptr};  // null when !use_post_quant_conv
};
TORCH_MODULE(AutoencoderKL);

// A diffusers VAE folder: dir/config.json and dir/diffusion_pytorch_model.safetensors (or, when
// that is absent, diffusion_pytorch_model.fp16.safetensors, converted to float32). Loading is
// strict: missing, unexpected or mis-shaped tensors throw a loopy::Error naming them. The model
// is returned in eval mode on the CPU, float32.
AutoencoderKL load_autoencoder_kl_folder(const std::string& dir);

}  // namespace loopy::model
