#pragma once
// diffusers' UNet2DConditionModel (Stable Diffusion 1.x denoiser), with diffusers' module names so
// that its checkpoints load by key. Blocks are kept as named submodules with their own forward
// functions so that video / Loopy networks can reuse them and hook in after every layer.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/attention.h"
#include "model/resnet.h"

namespace loopy::model {

// The subset of diffusers' config.json that Stable Diffusion 1.x uses. parse() throws a
// loopy::Error naming the key and value of anything else (class embeddings, other block types...).
struct UNet2DConditionConfig {
    int64_t sample_size = 64;
    int64_t in_channels = 4;
    int64_t out_channels = 4;
    bool center_input_sample = false;
    bool flip_sin_to_cos = true;
    double freq_shift = 0;
    std::vector<std::string> down_block_types{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                              "CrossAttnDownBlock2D", "DownBlock2D"};
    std::string mid_block_type = "UNetMidBlock2DCrossAttn";
    std::vector<std::string> up_block_types{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                            "CrossAttnUpBlock2D"};
    std::vector<int64_t> block_out_channels{320, 640, 1280, 1280};
    int64_t layers_per_block = 2;
    int64_t downsample_padding = 1;  // 0: pad right/bottom, then a stride-2 conv
    int64_t norm_num_groups = 32;
    double norm_eps = 1e-5;
    int64_t cross_attention_dim = 768;
    // Attention heads per down block (diffusers' num_attention_heads, which SD configs spell
    // `attention_head_dim`); up blocks use them reversed, the mid block the last one.
    std::vector<int64_t> num_attention_heads{8, 8, 8, 8};
    bool use_linear_projection = false;
    int64_t transformer_layers_per_block = 1;
    int64_t conv_in_kernel = 3;
    int64_t conv_out_kernel = 3;
    // Not a diffusers key (parse() leaves it off): Loopy's `spatial_positions` option, see
    // Transformer2DModelOptions::spatial_positions.
    bool spatial_positions = false;

    static UNet2DConditionConfig parse(const nlohmann::json& config);
    static UNet2DConditionConfig parse_file(const std::string& path);  // config.json
    int64_t time_embed_dim() const { return block_out_channels.at(0) * 4; }
};

// Where a layer hook is called: after resnet (+ attention) `layer` of down/up block `block`
// (before any resampler), or in the mid block after attention `layer`, before the resnet that
// follows it (block 0) -- where AnimateDiff puts its motion modules.
struct UNetLayerSite {
    enum class Stage { Down, Mid, Up };
    Stage stage;
    int64_t block;
    int64_t layer;
};
// Returns the (possibly modified) hidden states; an empty hook is not called. The video networks
// use it to run temporal layers and audio attention after each spatial transformer.
using UNetLayerHook =
    std::function<torch::Tensor(const UNetLayerSite& site, const torch::Tensor& hidden)>;

struct UNetBlockOptions {
    UNetBlockOptions(int64_t in_channels, int64_t out_channels, int64_t temb_channels)
        : in_channels_(in_channels), out_channels_(out_channels), temb_channels_(temb_channels) {}
    TORCH_ARG(int64_t, in_channels);
    TORCH_ARG(int64_t, out_channels);
    TORCH_ARG(int64_t, temb_channels);
    TORCH_ARG(int64_t, prev_output_channels) = 0;  // up blocks: channels coming from below
    TORCH_ARG(int64_t, num_layers) = 1;
    TORCH_ARG(bool, cross_attention) = false;  // Cross* blocks: a Transformer2DModel per layer
    TORCH_ARG(bool, resample) = false;         // add the down/upsampler
    TORCH_ARG(int64_t, downsample_padding) = 1;
    TORCH_ARG(int64_t, heads) = 8;
    TORCH_ARG(int64_t, cross_attention_dim) = 768;
    TORCH_ARG(int64_t, transformer_layers) = 1;
    TORCH_ARG(bool, use_linear_projection) = false;
    TORCH_ARG(bool, spatial_positions) = false;
    TORCH_ARG(int64_t, groups) = 32;
    TORCH_ARG(double, eps) = 1e-5;
};

// DownBlock2D / CrossAttnDownBlock2D. Keys: resnets.N, [attentions.N], [downsamplers.0].
class UNetDownBlockImpl : public torch::nn::Module {
  public:
    explicit UNetDownBlockImpl(const UNetBlockOptions& options);

    // Returns the output and appends every skip connection (one per layer, plus the downsampled
    // output) to `skips`.
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb,
                          const torch::Tensor& encoder_hidden_states,
                          std::vector<torch::Tensor>& skips, const UNetLayerHook& hook = {},
                          int64_t block_index = 0);

    UNetBlockOptions options;
    std::vector<ResnetBlock2D> resnets;
    std::vector<Transformer2DModel> attentions;  // empty for DownBlock2D
    Downsample2D downsampler{nullptr};
};
TORCH_MODULE(UNetDownBlock);

// UNetMidBlock2DCrossAttn: resnets.0, attentions.0, resnets.1.
class UNetMidBlockImpl : public torch::nn::Module {
  public:
    explicit UNetMidBlockImpl(const UNetBlockOptions& options);
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb,
                          const torch::Tensor& encoder_hidden_states,
                          const UNetLayerHook& hook = {});

    UNetBlockOptions options;
    std::vector<ResnetBlock2D> resnets;
    std::vector<Transformer2DModel> attentions;
};
TORCH_MODULE(UNetMidBlock);

// UpBlock2D / CrossAttnUpBlock2D: each layer concatenates one skip connection (taken from the
// back of `skips`) to its input. Keys: resnets.N, [attentions.N], [upsamplers.0].
class UNetUpBlockImpl : public torch::nn::Module {
  public:
    explicit UNetUpBlockImpl(const UNetBlockOptions& options);

    // upsample_size {H, W}: the upsampler's exact output size (empty: 2x).
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb,
                          const torch::Tensor& encoder_hidden_states,
                          std::vector<torch::Tensor>& skips,
                          const std::vector<int64_t>& upsample_size = {},
                          const UNetLayerHook& hook = {}, int64_t block_index = 0);

    UNetBlockOptions options;
    std::vector<ResnetBlock2D> resnets;
    std::vector<Transformer2DModel> attentions;  // empty for UpBlock2D
    Upsample2D upsampler{nullptr};
};
TORCH_MODULE(UNetUpBlock);

// Keys: time_embedding.linear_1/2, conv_in, down_blocks.N, mid_block, up_blocks.N,
// conv_norm_out, conv_out (time_proj has no weights).
class UNet2DConditionModelImpl : public torch::nn::Module {
  public:
    explicit UNet2DConditionModelImpl(const UNet2DConditionConfig& config);

    // sample [B, in, h, w]; timestep [B] or a scalar / [1] (broadcast), integer or float;
    // encoder_hidden_states [B, L, cross_attention_dim]. Returns [B, out, h, w].
    // extra_time_embedding [B, time_embed_dim], if given, is added to the time embedding before
    // any block sees it (Loopy's audio-to-latents motion latent).
    torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep,
                          const torch::Tensor& encoder_hidden_states,
                          const UNetLayerHook& hook = {},
                          const torch::Tensor& extra_time_embedding = {});

    // The time embedding fed to every resnet: [B, time_embed_dim].
    torch::Tensor time_embedding(const torch::Tensor& timestep, int64_t batch,
                                 torch::ScalarType dtype);

    UNet2DConditionConfig config;
    torch::nn::Linear time_linear_1{nullptr}, time_linear_2{nullptr};  // time_embedding.*
    torch::nn::Conv2d conv_in{nullptr};
    std::vector<UNetDownBlock> down_blocks;
    UNetMidBlock mid_block{nullptr};
    std::vector<UNetUpBlock> up_blocks;
    torch::nn::GroupNorm conv_norm_out{nullptr};
    torch::nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(UNet2DConditionModel);

// diffusers' get_timestep_embedding: [N] -> [N, dim] sinusoids (float32), frequencies
// exp(-ln(max_period) * i / (dim/2 - freq_shift)); [cos, sin] order when flip_sin_to_cos.
torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                                 double freq_shift, double max_period = 10000.0);

// A diffusers model folder: config.json plus diffusion_pytorch_model.safetensors (or the
// .fp16.safetensors variant, converted to float32). Strict: throws loopy::Error on any missing,
// unexpected or wrong-shaped tensor, or a checkpoint of another architecture.
UNet2DConditionModel load_unet2d_condition_folder(const std::string& dir);

}  // namespace loopy::model
