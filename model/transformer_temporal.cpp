#include "model/transformer_temporal.h"

#include <string>

#include "core/error.h"
#include "model/cpu_linear.h"
#include "model/temporal_tokens.h"

namespace loopy::model {
namespace nn = torch::nn;
using nlohmann::json;

namespace {

[[noreturn]] void unsupported(const std::string& key, const json& value) {
    throw Error("TransformerTemporalModel config: unsupported " + key + " = " + value.dump());
}

int64_t get_int(const json& config, const std::string& key, int64_t fallback) {
    if (!config.contains(key) || config[key].is_null()) return fallback;
    if (!config[key].is_number_integer() || config[key].get<int64_t>() <= 0)
        unsupported(key, config[key]);
    return config[key].get<int64_t>();
}

// A key we only build with one value (or its default when absent / null).
void expect(const json& config, const std::string& key, const json& wanted) {
    if (config.contains(key) && !config[key].is_null() && config[key] != wanted)
        unsupported(key, config[key]);
}

TransformerTemporalModelOptions options_from(const json& config) {
    if (!config.contains("in_channels"))
        throw Error("TransformerTemporalModel config: no in_channels");
    TransformerTemporalModelOptions o(get_int(config, "in_channels", 0),
                                      get_int(config, "num_attention_heads", 16),
                                      get_int(config, "attention_head_dim", 88));
    o.num_layers(get_int(config, "num_layers", 1));
    o.norm_num_groups(get_int(config, "norm_num_groups", 32));
    expect(config, "activation_fn", "geglu");
    expect(config, "attention_bias", false);
    expect(config, "norm_elementwise_affine", true);
    expect(config, "cross_attention_dim", json());  // motion modules never cross-attend
    if (config.contains("out_channels") && !config["out_channels"].is_null() &&
        config["out_channels"] != o.in_channels())
        unsupported("out_channels", config["out_channels"]);
    if (config.contains("double_self_attention")) {
        if (!config["double_self_attention"].is_boolean())
            unsupported("double_self_attention", config["double_self_attention"]);
        o.double_self_attention(config["double_self_attention"].get<bool>());
    }
    const json positions = config.value("positional_embeddings", json());
    if (positions.is_null()) {
        o.num_positional_embeddings(0);
    } else if (positions == "sinusoidal") {
        o.num_positional_embeddings(get_int(config, "num_positional_embeddings", 0));
        if (o.num_positional_embeddings() == 0)
            throw Error(
                "TransformerTemporalModel config: sinusoidal positional_embeddings need "
                "num_positional_embeddings");
    } else {
        unsupported("positional_embeddings", positions);
    }
    return o;
}

}  // namespace

TransformerTemporalModelOptions transformer_temporal_options(const json& config) {
    if (!config.is_object()) throw Error("TransformerTemporalModel config: not a JSON object");
    try {
        return options_from(config);
    } catch (const json::exception& e) {  // a value of the wrong JSON type
        throw Error(std::string("TransformerTemporalModel config: ") + e.what());
    }
}

TransformerTemporalModelImpl::TransformerTemporalModelImpl(
    const TransformerTemporalModelOptions& opts)
    : options(opts) {
    const int64_t in = opts.in_channels(), inner = opts.heads() * opts.dim_head();
    norm = register_module(
        "norm", nn::GroupNorm(nn::GroupNormOptions(opts.norm_num_groups(), in).eps(1e-6)));
    proj_in = register_module("proj_in", nn::Linear(in, inner));
    transformer_blocks = register_module("transformer_blocks", nn::ModuleList());
    for (int64_t i = 0; i < opts.num_layers(); ++i) {
        blocks.emplace_back(BasicTransformerBlockOptions(inner, opts.heads(), opts.dim_head())
                                .double_self_attention(opts.double_self_attention())
                                .num_positional_embeddings(opts.num_positional_embeddings()));
        transformer_blocks->push_back(blocks.back());
    }
    proj_out = register_module("proj_out", nn::Linear(inner, in));
}

torch::Tensor TransformerTemporalModelImpl::forward(const torch::Tensor& x, int64_t num_frames) {
    const int64_t bf = x.size(0);
    if (num_frames <= 0 || bf % num_frames != 0)
        throw Error("TransformerTemporalModel: batch of " + std::to_string(bf) +
                    " is not a multiple of num_frames " + std::to_string(num_frames));
    auto h = forward_linear(proj_in, normalised_tokens(norm, x, num_frames));
    for (auto& block : blocks)
        h = block(h);
    h = forward_linear(proj_out, h);
    return add_tokens_to_frames(x, h, num_frames);
}

}  // namespace loopy::model
