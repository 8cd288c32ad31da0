#include "model/audio_conditioning.h"

#include <cmath>

#include "core/error.h"
#include "model/cpu_linear.h"

namespace loopy::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

// --- per-frame audio features ---

torch::Tensor stack_layer_features(const Wav2Vec2Output& output) {
    if (output.hidden_states.size() < 2)
        throw Error("stack_layer_features: the audio encoder returned no layer outputs");
    std::vector<torch::Tensor> layers;
    for (size_t i = 1; i < output.hidden_states.size(); ++i)
        layers.push_back(output.hidden_states[i][0]);  // [T, C]
    return torch::stack(layers, 1);                    // [T, L, C]
}

torch::Tensor resample_to_frames(const torch::Tensor& features, int64_t num_frames) {
    if (features.dim() != 3 || features.size(0) < 1 || num_frames < 1)
        throw Error(
            "resample_to_frames: features must be [T >= 1, L, C] and num_frames >= 1, got " +
            c10::str(features.sizes()) + " and " + std::to_string(num_frames));
    const int64_t t = features.size(0), l = features.size(1), c = features.size(2);
    if (t == 1) return features.expand({num_frames, l, c}).contiguous();
    auto x = features.reshape({t, l * c}).t().unsqueeze(0);  // [1, L*C, T]
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{num_frames})
                              .mode(torch::kLinear)
                              .align_corners(true));
    return x.squeeze(0).t().reshape({num_frames, l, c});
}

torch::Tensor audio_windows(const torch::Tensor& features, int64_t window) {
    if (features.dim() != 3 || window < 0)
        throw Error("audio_windows: features must be [T, L, C] and window >= 0");
    const int64_t t = features.size(0);
    auto frames = torch::arange(t, torch::kLong).unsqueeze(1);
    auto offsets = torch::arange(-window, window + 1, torch::kLong).unsqueeze(0);
    auto index = (frames + offsets).clamp(0, t - 1).to(features.device());  // [T, 2w+1]
    return features.index_select(0, index.reshape({-1}))
        .reshape({t, 2 * window + 1, features.size(1), features.size(2)});
}

// --- audio projection ---

AudioProjectionImpl::AudioProjectionImpl(const AudioProjectionOptions& o) : options(o) {
    const int64_t in = (2 * o.window() + 1) * o.layers() * o.channels();
    proj1 = register_module("proj1", nn::Linear(in, o.intermediate_dim()));
    proj2 = register_module("proj2", nn::Linear(o.intermediate_dim(), o.intermediate_dim()));
    proj3 = register_module("proj3",
                            nn::Linear(o.intermediate_dim(), o.context_tokens() * o.token_dim()));
    norm = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({o.token_dim()})));
}

torch::Tensor AudioProjectionImpl::forward(const torch::Tensor& windows) {
    const auto& o = options;
    if (windows.dim() != 5 || windows.size(2) != 2 * o.window() + 1 ||
        windows.size(3) != o.layers() || windows.size(4) != o.channels())
        throw Error("AudioProjection: windows must be [B, F, " +
                    std::to_string(2 * o.window() + 1) + ", " + std::to_string(o.layers()) + ", " +
                    std::to_string(o.channels()) + "], got " + c10::str(windows.sizes()));
    const int64_t b = windows.size(0), f = windows.size(1);
    auto x = torch::relu(forward_linear(proj1, windows.reshape({b, f, -1})));
    x = torch::relu(forward_linear(proj2, x));
    x = forward_linear(proj3, x).view({b, f, o.context_tokens(), o.token_dim()});
    return norm(x);
}

// --- audio-to-latents ---

AudioToLatentsImpl::AudioToLatentsImpl(const AudioToLatentsOptions& o) : options(o) {
    const double scale = 1.0 / std::sqrt(static_cast<double>(o.embedding_dim()));
    embeddings = register_parameter("embeddings",
                                    torch::randn({o.num_embeddings(), o.embedding_dim()}) * scale);
    audio_in = register_module("audio_in", nn::Linear(o.audio_dim(), o.attention_dim()));
    head_variance_in =
        register_module("head_variance_in", nn::Linear(o.head_variance_dim(), o.attention_dim()));
    expression_variance_in = register_module(
        "expression_variance_in", nn::Linear(o.expression_variance_dim(), o.attention_dim()));
    attn = register_module("attn", Attention(AttentionOptions(o.attention_dim(), o.heads(),
                                                              o.attention_dim() / o.heads())
                                                 .cross_attention_dim(o.embedding_dim())));
    proj_out = register_module("proj_out", nn::Linear(o.attention_dim(), o.time_embed_dim()));
    torch::NoGradGuard no_grad;
    proj_out->weight.zero_();
    proj_out->bias.zero_();
}

namespace {

// The query of one condition, [B, F or 1, attention_dim]; undefined when no item needs it.
torch::Tensor condition_query(nn::Linear& fc, const torch::Tensor& input, int64_t dim, bool needed,
                              int64_t batch, bool per_frame, const char* name) {
    if (!needed) return {};
    const int64_t want_dim = per_frame ? 3 : 2;
    if (!input.defined() || input.dim() != want_dim || input.size(0) != batch ||
        input.size(-1) != dim)
        throw Error(std::string("AudioToLatents: ") + name + " must be [" + std::to_string(batch) +
                    (per_frame ? ", F, " : ", ") + std::to_string(dim) +
                    "] for the items that use it" +
                    (input.defined() ? ", got " + c10::str(input.sizes()) : ", got none"));
    auto q = fc(input);
    return per_frame ? q : q.unsqueeze(1);
}

}  // namespace

torch::Tensor AudioToLatentsImpl::forward(const MotionConditionInputs& in) {
    const auto& o = options;
    if (!in.type.defined() && !in.audio.defined())
        throw Error("AudioToLatents: no condition given (audio, or a type per item)");
    const int64_t b = in.type.defined() ? in.type.size(0) : in.audio.size(0);
    auto type = in.type.defined() ? in.type.to(torch::kLong).to(embeddings.device())
                                  : torch::zeros({b}, embeddings.options().dtype(torch::kLong));
    if (type.dim() != 1 || ((type < 0) | (type > 2)).any().item<bool>())
        throw Error(
            "AudioToLatents: type must be [B] of 0 (audio), 1 (head variance) or 2 "
            "(expression variance)");
    auto uses = [&](MotionCondition c) {
        return (type == static_cast<int64_t>(c)).any().item<bool>();
    };
    auto qa = condition_query(audio_in, in.audio, o.audio_dim(), uses(MotionCondition::Audio), b,
                              true, "audio");
    auto qh = condition_query(head_variance_in, in.head_variance, o.head_variance_dim(),
                              uses(MotionCondition::HeadVariance), b, false, "head_variance");
    auto qe =
        condition_query(expression_variance_in, in.expression_variance, o.expression_variance_dim(),
                        uses(MotionCondition::ExpressionVariance), b, false, "expression_variance");
    const int64_t f = qa.defined() ? qa.size(1) : 1;
    auto q = torch::zeros({b, f, o.attention_dim()}, embeddings.options());
    auto select = [&](const torch::Tensor& query, MotionCondition c) {
        if (!query.defined()) return;
        auto mask = (type == static_cast<int64_t>(c)).view({b, 1, 1});
        q = torch::where(mask, query.expand_as(q), q);
    };
    select(qa, MotionCondition::Audio);
    select(qh, MotionCondition::HeadVariance);
    select(qe, MotionCondition::ExpressionVariance);
    auto kv = embeddings.unsqueeze(0).expand({b * f, o.num_embeddings(), o.embedding_dim()});
    auto attended = attn(q.reshape({b * f, 1, o.attention_dim()}), kv);
    return forward_linear(proj_out, attended).view({b, f, o.time_embed_dim()});
}

}  // namespace loopy::model
