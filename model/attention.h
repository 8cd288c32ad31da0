#pragma once
// diffusers' attention building blocks: Attention, FeedForward (GEGLU), BasicTransformerBlock and
// the spatial Transformer2DModel. Child modules carry diffusers' names so checkpoints load by key
// (e.g. `transformer_blocks.0.attn1.to_out.0.weight`).
//
// Only what Stable Diffusion 1.x / AnimateDiff use is built: LayerNorm blocks, GEGLU, no attention
// masks. Dropout is ignored (inference only).
#include <torch/torch.h>

#include <array>
#include <cstdint>
#include <functional>
#include <vector>

namespace loopy::model {

struct AttentionOptions {
    AttentionOptions(int64_t query_dim, int64_t heads, int64_t dim_head)
        : query_dim_(query_dim), heads_(heads), dim_head_(dim_head) {}
    TORCH_ARG(int64_t, query_dim);
    TORCH_ARG(int64_t, heads);
    TORCH_ARG(int64_t, dim_head);
    // Width of the key/value input (the text encoder's for cross-attention); 0 means query_dim.
    TORCH_ARG(int64_t, cross_attention_dim) = 0;
    TORCH_ARG(bool, bias) = false;     // to_q / to_k / to_v bias (off in SD and AnimateDiff)
    TORCH_ARG(bool, out_bias) = true;  // to_out.0 bias
};

// Multi-head attention with diffusers' keys: to_q, to_k, to_v, to_out.0.
class AttentionImpl : public torch::nn::Module {
  public:
    explicit AttentionImpl(const AttentionOptions& options);

    // x [B, Lq, query_dim]. `context` [B, Lk, kv_dim] supplies the keys and values; undefined
    // means self-attention. Returns [B, Lq, query_dim], plus `residual` (shaped like it) when
    // given: the out-projection starts from it (model/cpu_linear.h, forward_linear_plus).
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {},
                          const torch::Tensor& residual = {});

    // Self-attention over x's own tokens and extra keys/values, already projected and split
    // into heads (the reference attention: the reference tokens' to_k/to_v once per portrait,
    // not once per frame). keys/values [P, heads, Le, dim_head] with P dividing B (item r uses
    // row r mod P); item_mask bool [B]: the items that attend to them (undefined: all).
    torch::Tensor forward_with_extra(const torch::Tensor& x, const torch::Tensor& keys,
                                     const torch::Tensor& values,
                                     const torch::Tensor& item_mask = {},
                                     const torch::Tensor& residual = {});

    // out_proj(merge_heads(heads)) [+ residual]: the attention's output from the products'
    // [B, heads, L, dim_head].
    torch::Tensor project_out(const torch::Tensor& heads, const torch::Tensor& residual = {});

    // With one key the softmax is exactly 1 and the output is out(to_v(context)) for every
    // query: true for a one-token `context` [B, 1, kv_dim] (the null text context) when no
    // autograd is recording, so inference can skip the queries. See single_key_output.
    static bool output_ignores_queries(const torch::Tensor& context);
    // out(to_v(context)) [B, 1, query_dim]: forward's result for every query in that case.
    torch::Tensor single_key_output(const torch::Tensor& context);

    // q, k and v of self-attention over x [B, L, query_dim], split into heads.
    std::array<torch::Tensor, 3> self_projections(const torch::Tensor& x);

    // [B, L, heads*dim_head] <-> [B, heads, L, dim_head].
    torch::Tensor split_heads(const torch::Tensor& t) const;
    torch::Tensor merge_heads(const torch::Tensor& t) const;

    AttentionOptions options;
    torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
    torch::nn::ModuleList to_out{
        nullptr};                         // [0] Linear(inner, query_dim); diffusers' [1] is dropout
    torch::nn::Linear out_proj{nullptr};  // the same module as to_out[0], typed
};
TORCH_MODULE(Attention);

// GEGLU feed-forward: net.0.proj Linear(dim, 2*inner) split into value and gate,
// value * gelu(gate), then net.2 Linear(inner, dim). inner = mult * dim.
class FeedForwardImpl : public torch::nn::Module {
  public:
    explicit FeedForwardImpl(int64_t dim, int64_t mult = 4);
    torch::Tensor forward(const torch::Tensor& x);

    torch::nn::Linear proj{nullptr};  // net.0.proj
    torch::nn::Linear out{nullptr};   // net.2
};
TORCH_MODULE(FeedForward);

// Adds fixed sinusoidal positions to a sequence [B, L, dim]; buffer `pe` [1, max_len, dim]
// (saved in checkpoints, so it loads by name like a weight).
class SinusoidalPositionalEmbeddingImpl : public torch::nn::Module {
  public:
    SinusoidalPositionalEmbeddingImpl(int64_t dim, int64_t max_len);
    torch::Tensor forward(const torch::Tensor& x);

    torch::Tensor pe;
};
TORCH_MODULE(SinusoidalPositionalEmbedding);

struct BasicTransformerBlockOptions {
    BasicTransformerBlockOptions(int64_t dim, int64_t heads, int64_t dim_head)
        : dim_(dim), heads_(heads), dim_head_(dim_head) {}
    TORCH_ARG(int64_t, dim);
    TORCH_ARG(int64_t, heads);
    TORCH_ARG(int64_t, dim_head);
    // > 0: attn2 cross-attends to encoder states of this width. 0 and !double_self_attention:
    // no attn2/norm2 at all.
    TORCH_ARG(int64_t, cross_attention_dim) = 0;
    TORCH_ARG(bool, double_self_attention) = false;  // attn2 is a second self-attention
    // > 0 adds `pos_embed` (sinusoidal, this many positions), applied before attn1 and attn2.
    TORCH_ARG(int64_t, num_positional_embeddings) = 0;
    TORCH_ARG(double, norm_eps) = 1e-5;
};

// Pre-norm transformer block: x += attn1(norm1 x); x += attn2(norm2 x, ctx); x += ff(norm3 x).
class BasicTransformerBlockImpl : public torch::nn::Module {
  public:
    explicit BasicTransformerBlockImpl(const BasicTransformerBlockOptions& options);

    // x [B, L, dim]; encoder_hidden_states [B, Lc, cross_dim] for attn2 (undefined: attn2 is a
    // self-attention, as in the temporal blocks). `positions` [1, L, dim] (optional) are added to
    // attn1's normalised input before the reference hook sees it.
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& encoder_hidden_states = {},
                          const torch::Tensor& positions = {});

    // The block's end, h + ff(norm3(h)) (fused on the CPU: model/cpu_feed_forward.h).
    torch::Tensor feed_forward_residual(const torch::Tensor& h);

    // Reference attention hook. When set, it receives attn1's normalised input [B, L, dim] and
    // returns extra keys and values for attn1 (see AttentionImpl::forward_with_extra; undefined
    // keys: plain self-attention). A reference network records its input here ("bank"); the
    // denoiser returns attn1's projections of the bank.
    struct ExtraKeyValues {
        torch::Tensor keys, values;  // [P, heads, Le, dim_head], P dividing B
        torch::Tensor item_mask;     // bool [B]: items that attend to them; undefined: all
    };
    using KeyValueHook = std::function<ExtraKeyValues(const torch::Tensor& normed)>;
    KeyValueHook self_attention_kv;

    BasicTransformerBlockOptions options;
    SinusoidalPositionalEmbedding pos_embed{nullptr};
    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
    Attention attn1{nullptr}, attn2{nullptr};
    FeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

struct Transformer2DModelOptions {
    Transformer2DModelOptions(int64_t in_channels, int64_t heads, int64_t dim_head)
        : in_channels_(in_channels), heads_(heads), dim_head_(dim_head) {}
    TORCH_ARG(int64_t, in_channels);
    TORCH_ARG(int64_t, heads);
    TORCH_ARG(int64_t, dim_head);
    TORCH_ARG(int64_t, num_layers) = 1;
    TORCH_ARG(int64_t, cross_attention_dim) = 0;
    TORCH_ARG(int64_t, norm_num_groups) = 32;
    TORCH_ARG(bool, use_linear_projection) = false;  // Linear proj_in/out instead of 1x1 convs
    // Adds fixed 2-D sinusoidal positions to each block's self-attention input (a Loopy option,
    // not SD's): see spatial_positions() below.
    TORCH_ARG(bool, spatial_positions) = false;
};

// Fixed 2-D sinusoidal positions [1, height*width, dim] (row-major tokens): the first half of the
// channels encodes the row, the second the column, each as sin/cos pairs at geometric
// frequencies. dim must be a multiple of 4.
torch::Tensor spatial_positions(int64_t height, int64_t width, int64_t dim,
                                const torch::TensorOptions& options);

// Spatial transformer over [B, C, H, W]: GroupNorm(eps 1e-6) -> proj_in -> H*W tokens ->
// transformer_blocks -> proj_out -> + input.
class Transformer2DModelImpl : public torch::nn::Module {
  public:
    explicit Transformer2DModelImpl(const Transformer2DModelOptions& options);
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& encoder_hidden_states = {});

    Transformer2DModelOptions options;
    torch::nn::GroupNorm norm{nullptr};
    // proj_in / proj_out: 1x1 convolutions, or Linear layers with use_linear_projection.
    torch::nn::Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};
    torch::nn::Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};
    torch::nn::ModuleList transformer_blocks{nullptr};
    std::vector<BasicTransformerBlock> blocks;  // transformer_blocks, typed
};
TORCH_MODULE(Transformer2DModel);

}  // namespace loopy::model
