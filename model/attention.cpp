#include "model/attention.h"

#include <ATen/record_function.h>

#include <cmath>
#include <string>

#include "core/error.h"
#include "model/cpu_attention.h"
#include "model/cpu_feed_forward.h"
#include "model/cpu_geglu.h"
#include "model/cpu_group_norm.h"
#include "model/cpu_layer_norm.h"
#include "model/cpu_linear.h"
#include "model/temporal_tokens.h"

namespace loopy::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

// --- Attention ---

AttentionImpl::AttentionImpl(const AttentionOptions& opts) : options(opts) {
    if (opts.heads() <= 0 || opts.dim_head() <= 0)
        throw Error("Attention: heads and dim_head must be positive");
    const int64_t inner = opts.heads() * opts.dim_head();
    const int64_t kv_dim =
        opts.cross_attention_dim() > 0 ? opts.cross_attention_dim() : opts.query_dim();
    to_q = register_module(
        "to_q", nn::Linear(nn::LinearOptions(opts.query_dim(), inner).bias(opts.bias())));
    to_k = register_module("to_k", nn::Linear(nn::LinearOptions(kv_dim, inner).bias(opts.bias())));
    to_v = register_module("to_v", nn::Linear(nn::LinearOptions(kv_dim, inner).bias(opts.bias())));
    out_proj = nn::Linear(nn::LinearOptions(inner, opts.query_dim()).bias(opts.out_bias()));
    to_out = register_module("to_out", nn::ModuleList(out_proj));
}

torch::Tensor AttentionImpl::split_heads(const torch::Tensor& t) const {
    return t.view({t.size(0), t.size(1), options.heads(), options.dim_head()}).transpose(1, 2);
}

torch::Tensor AttentionImpl::merge_heads(const torch::Tensor& t) const {
    return t.transpose(1, 2).reshape({t.size(0), t.size(2), options.heads() * options.dim_head()});
}

std::array<torch::Tensor, 3> AttentionImpl::self_projections(const torch::Tensor& x) {
    return {split_heads(forward_linear(to_q, x)), split_heads(forward_linear(to_k, x)),
            split_heads(forward_linear(to_v, x))};
}

torch::Tensor AttentionImpl::project_out(const torch::Tensor& heads,
                                         const torch::Tensor& residual) {
    const auto merged = merge_heads(heads);
    return residual.defined() ? forward_linear_plus(out_proj, merged, residual)
                              : forward_linear(out_proj, merged);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
                                     const torch::Tensor& residual) {
    if (!context.defined()) {
        const auto [q, k, v] = self_projections(x);
        return project_out(attention_product(q, k, v), residual);
    }
    auto q = split_heads(forward_linear(to_q, x));
    auto k = split_heads(forward_linear(to_k, context));
    auto v = split_heads(forward_linear(to_v, context));
    return project_out(attention_product(q, k, v), residual);
}

torch::Tensor AttentionImpl::forward_with_extra(const torch::Tensor& x, const torch::Tensor& keys,
                                                const torch::Tensor& values,
                                                const torch::Tensor& item_mask,
                                                const torch::Tensor& residual) {
    const int64_t b = x.size(0);
    const auto [q, k, v] = self_projections(x);
    const KeyValueParts parts{{k, keys}, {v, values}};
    const bool all_items = !item_mask.defined() || item_mask.all().item<bool>();
    if (cpu_attention_applies(q, parts)) {
        torch::Tensor key_mask;  // the items without extra tokens leave them out
        if (!all_items)
            key_mask = torch::cat({torch::ones({b, k.size(2)}, item_mask.options()),
                                   item_mask.view({b, 1}).expand({b, keys.size(2)})},
                                  1);
        return project_out(cpu_attention(q, parts, key_mask), residual);
    }
    // LibTorch's path: the items without extra tokens attend to their own tokens twice instead
    // (softmax over duplicated keys is exactly the plain self-attention), so the batch keeps
    // one shape and needs no mask (SDPA's fast kernels on CUDA take none).
    auto full = [&](const torch::Tensor& extra, const torch::Tensor& own) {
        auto t = repeat_to_batch(extra, b);
        if (!all_items) t = torch::where(item_mask.view({b, 1, 1, 1}), t, own);
        return torch::cat({own, t}, 2);
    };
    if (!all_items && keys.size(2) != k.size(2))
        throw Error("Attention: items can leave out extra tokens only as many as their own (" +
                    std::to_string(k.size(2)) + "), got " + std::to_string(keys.size(2)));
    return project_out(attention_product(q, full(keys, k), full(values, v)), residual);
}

bool AttentionImpl::output_ignores_queries(const torch::Tensor& context) {
    // Under autograd the full path keeps to_q's (zero) gradients defined, as training expects.
    return context.defined() && context.dim() == 3 && context.size(1) == 1 &&
           !torch::GradMode::is_enabled();
}

torch::Tensor AttentionImpl::single_key_output(const torch::Tensor& context) {
    return out_proj(to_v(context));
}

// --- FeedForward ---

FeedForwardImpl::FeedForwardImpl(int64_t dim, int64_t mult) {
    const int64_t inner = dim * mult;
    proj = nn::Linear(dim, 2 * inner);
    out = nn::Linear(inner, dim);
    // diffusers' net: [0] GEGLU (holding `proj`), [1] dropout, [2] Linear.
    auto geglu = std::make_shared<nn::Module>();
    geglu->register_module("proj", proj);
    register_module("net", nn::ModuleList(geglu, nn::Dropout(0.0), out));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
    return forward_linear(out, geglu_product(forward_linear(proj, x)));
}

// --- SinusoidalPositionalEmbedding ---

SinusoidalPositionalEmbeddingImpl::SinusoidalPositionalEmbeddingImpl(int64_t dim, int64_t max_len) {
    // Even channels sin(p * w_i), odd channels cos(p * w_i), w_i = 10000^(-2i/dim).
    if (dim % 2 != 0) throw Error("SinusoidalPositionalEmbedding: dim must be even");
    auto position = torch::arange(max_len, torch::kFloat32).unsqueeze(1);
    auto freq = torch::exp(torch::arange(0, dim, 2, torch::kFloat32) *
                           static_cast<float>(-std::log(10000.0) / static_cast<double>(dim)));
    auto angles = position * freq;  // [max_len, dim/2]
    auto table =
        torch::stack({torch::sin(angles), torch::cos(angles)}, -1).reshape({1, max_len, dim});
    pe = register_buffer("pe", table);
}

torch::Tensor SinusoidalPositionalEmbeddingImpl::forward(const torch::Tensor& x) {
    const int64_t len = x.size(1);
    if (len > pe.size(1))
        throw Error("SinusoidalPositionalEmbedding: sequence of " + std::to_string(len) +
                    " exceeds the " + std::to_string(pe.size(1)) + " positions it was built for");
    return x + pe.narrow(1, 0, len);
}

// --- BasicTransformerBlock ---

BasicTransformerBlockImpl::BasicTransformerBlockImpl(const BasicTransformerBlockOptions& opts)
    : options(opts) {
    const int64_t dim = opts.dim();
    auto layer_norm = [&] {
        return nn::LayerNorm(nn::LayerNormOptions({dim}).eps(opts.norm_eps()));
    };
    if (opts.num_positional_embeddings() > 0)
        pos_embed = register_module(
            "pos_embed", SinusoidalPositionalEmbedding(dim, opts.num_positional_embeddings()));
    norm1 = register_module("norm1", layer_norm());
    attn1 =
        register_module("attn1", Attention(AttentionOptions(dim, opts.heads(), opts.dim_head())));
    if (opts.cross_attention_dim() > 0 || opts.double_self_attention()) {
        norm2 = register_module("norm2", layer_norm());
        auto attn2_opts = AttentionOptions(dim, opts.heads(), opts.dim_head());
        if (!opts.double_self_attention())
            attn2_opts.cross_attention_dim(opts.cross_attention_dim());
        attn2 = register_module("attn2", Attention(attn2_opts));
    }
    norm3 = register_module("norm3", layer_norm());
    ff = register_module("ff", FeedForward(dim));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x,
                                                 const torch::Tensor& encoder_hidden_states,
                                                 const torch::Tensor& positions) {
    // Positions are added to the normalised input of each attention, not to the residual stream.
    auto normed = forward_layer_norm(norm1, x);
    if (pos_embed) normed = pos_embed(normed);
    if (positions.defined()) normed = normed + positions;
    const auto extra = self_attention_kv ? self_attention_kv(normed) : ExtraKeyValues{};
    auto h = extra.keys.defined()
                 ? attn1->forward_with_extra(normed, extra.keys, extra.values, extra.item_mask, x)
                 : attn1->forward(normed, {}, x);
    if (attn2 && AttentionImpl::output_ignores_queries(encoder_hidden_states)) {
        // SD's text cross-attention over Loopy's one null-context token: a constant per item, so
        // norm2 and the query projections would be wasted (7 of them per U-Net pass).
        h = h + attn2->single_key_output(encoder_hidden_states);
    } else if (attn2) {
        normed = forward_layer_norm(norm2, h);
        if (pos_embed) normed = pos_embed(normed);
        h = attn2(normed, encoder_hidden_states, h);
    }
    return feed_forward_residual(h);
}

torch::Tensor BasicTransformerBlockImpl::feed_forward_residual(const torch::Tensor& h) {
    auto fused = fused_feed_forward(norm3, ff->proj, ff->out, h);
    return fused.defined() ? fused : ff(forward_layer_norm(norm3, h)) + h;
}

// --- Transformer2DModel ---

torch::Tensor spatial_positions(int64_t height, int64_t width, int64_t dim,
                                const torch::TensorOptions& options) {
    if (dim % 4 != 0)
        throw Error("spatial positions need a width that is a multiple of 4, got " +
                    std::to_string(dim));
    const int64_t quarter = dim / 4;
    auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
    // Periods from 2*pi to 2*pi*10000 tokens, as the transformer's 1-D positions.
    auto freq = torch::exp(torch::arange(quarter, f32) * (-std::log(10000.0) / quarter));
    auto axis = [&](int64_t n) {  // [n, 2*quarter]
        auto args = torch::arange(n, f32).unsqueeze(1) * freq.unsqueeze(0);
        return torch::cat({torch::sin(args), torch::cos(args)}, 1);
    };
    auto rows = axis(height).unsqueeze(1).expand({height, width, 2 * quarter});
    auto cols = axis(width).unsqueeze(0).expand({height, width, 2 * quarter});
    return torch::cat({rows, cols}, 2).reshape({1, height * width, dim}).to(options);
}

Transformer2DModelImpl::Transformer2DModelImpl(const Transformer2DModelOptions& opts)
    : options(opts) {
    const int64_t in = opts.in_channels(), inner = opts.heads() * opts.dim_head();
    norm = register_module(
        "norm", nn::GroupNorm(nn::GroupNormOptions(opts.norm_num_groups(), in).eps(1e-6)));
    if (opts.use_linear_projection()) {
        proj_in_linear = register_module("proj_in", nn::Linear(in, inner));
    } else {
        proj_in_conv = register_module("proj_in", nn::Conv2d(nn::Conv2dOptions(in, inner, 1)));
    }
    transformer_blocks = register_module("transformer_blocks", nn::ModuleList());
    for (int64_t i = 0; i < opts.num_layers(); ++i) {
        blocks.emplace_back(BasicTransformerBlockOptions(inner, opts.heads(), opts.dim_head())
                                .cross_attention_dim(opts.cross_attention_dim()));
        transformer_blocks->push_back(blocks.back());
    }
    if (opts.use_linear_projection()) {
        proj_out_linear = register_module("proj_out", nn::Linear(inner, in));
    } else {
        proj_out_conv = register_module("proj_out", nn::Conv2d(nn::Conv2dOptions(inner, in, 1)));
    }
}

torch::Tensor Transformer2DModelImpl::forward(const torch::Tensor& x,
                                              const torch::Tensor& encoder_hidden_states) {
    RECORD_USER_SCOPE("loopy::spatial_transformer");
    const int64_t b = x.size(0), height = x.size(2), width = x.size(3);
    // A 1x1 convolution is a linear layer over the tokens. Where the engine's GroupNorm runs (the
    // CPU, inference) the projections run as linear layers: the norm writes the tokens and the
    // residual add reads them in place, with no transposing copies and no oneDNN reorders.
    // Elsewhere (CUDA, training) the convolutions as they are.
    const bool as_tokens = proj_in_linear || cpu_group_norm_applies(*norm, x);
    auto project = [&](nn::Linear& linear, nn::Conv2d& conv, const torch::Tensor& tokens) {
        if (linear) return forward_linear(linear, tokens);
        return forward_linear(conv->weight.view({conv->weight.size(0), -1}), conv->bias, tokens);
    };
    torch::Tensor h;
    if (as_tokens) {
        h = project(proj_in_linear, proj_in_conv,
                    group_norm_tokens(norm, x, 1).view({b, height * width, -1}));
    } else {  // [B, C, H, W] -> [B, H*W, C]
        h = proj_in_conv(forward_group_norm(norm, x)).permute({0, 2, 3, 1});
        h = h.reshape({b, height * width, h.size(3)});
    }
    const auto positions = options.spatial_positions()
                               ? spatial_positions(height, width, h.size(2), h.options())
                               : torch::Tensor();
    for (auto& block : blocks)
        h = block(h, encoder_hidden_states, positions);
    if (as_tokens) return add_tokens_to_frames(x, project(proj_out_linear, proj_out_conv, h), 1);
    h = h.reshape({b, height, width, h.size(2)}).permute({0, 3, 1, 2}).contiguous();
    return proj_out_conv(h) + x;
}

}  // namespace loopy::model
