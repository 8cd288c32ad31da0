#pragma once
// AnimateDiff's motion module block: diffusers' TransformerTemporalModel with sinusoidal frame
// positions, two self-attentions per block and GEGLU. Attention runs along the frame axis,
// independently at every spatial position.
#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "model/attention.h"

namespace loopy::model {

struct TransformerTemporalModelOptions {
    TransformerTemporalModelOptions(int64_t in_channels, int64_t heads, int64_t dim_head)
        : in_channels_(in_channels), heads_(heads), dim_head_(dim_head) {}
    TORCH_ARG(int64_t, in_channels);
    TORCH_ARG(int64_t, heads);     // num_attention_heads
    TORCH_ARG(int64_t, dim_head);  // attention_head_dim
    TORCH_ARG(int64_t, num_layers) = 1;
    TORCH_ARG(int64_t, norm_num_groups) = 32;
    TORCH_ARG(int64_t, num_positional_embeddings) = 32;  // 0: no positional embedding
    TORCH_ARG(bool, double_self_attention) = true;
};

// From diffusers' config keys (num_attention_heads, attention_head_dim, in_channels,
// norm_num_groups, num_layers, positional_embeddings, num_positional_embeddings,
// double_self_attention, activation_fn, ...). Throws loopy::Error naming any key whose value we do
// not build.
TransformerTemporalModelOptions transformer_temporal_options(const nlohmann::json& config);

// Keys: norm, proj_in, transformer_blocks.N (with pos_embed.pe), proj_out.
class TransformerTemporalModelImpl : public torch::nn::Module {
  public:
    explicit TransformerTemporalModelImpl(const TransformerTemporalModelOptions& options);

    // x [batch*num_frames, C, H, W], frames of one video consecutive. Returns the same shape.
    torch::Tensor forward(const torch::Tensor& x, int64_t num_frames);

    TransformerTemporalModelOptions options;
    torch::nn::GroupNorm norm{nullptr};
    torch::nn::Linear proj_in{nullptr}, proj_out{nullptr};
    torch::nn::ModuleList transformer_blocks{nullptr};
    std::vector<BasicTransformerBlock> blocks;  // transformer_blocks, typed
};
TORCH_MODULE(TransformerTemporalModel);

}  // namespace loopy::model
