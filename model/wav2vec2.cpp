#include "model/wav2vec2.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/log.h"
#include "core/torch_compat.h"
#include "model/config_json.h"
#include "model/cpu_attention.h"
#include "model/cpu_linear.h"

namespace loopy::model {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;

namespace {

template <typename T>
void read_key(const nlohmann::json& json, const char* key, T& value) {
    read_config_key(json, key, value, "wav2vec2");
}

void require(bool ok, const std::string& message) {
    if (!ok) throw Error("wav2vec2 config: " + message);
}

}  // namespace

// --- config -----------------------------------------------------------------------------------

Wav2Vec2Config Wav2Vec2Config::from_json(const nlohmann::json& json) {
    if (!json.is_object()) throw Error("wav2vec2 config: expected a JSON object");
    std::string model_type = "wav2vec2";
    read_key(json, "model_type", model_type);
    require(model_type == "wav2vec2", "model_type is '" + model_type + "', expected 'wav2vec2'");
    bool add_adapter = false;
    read_key(json, "add_adapter", add_adapter);
    require(!add_adapter, "add_adapter (output adapter layers) is not supported");

    Wav2Vec2Config c;
    read_key(json, "feat_extract_norm", c.feat_extract_norm);
    read_key(json, "feat_extract_activation", c.feat_extract_activation);
    read_key(json, "conv_dim", c.conv_dim);
    read_key(json, "conv_kernel", c.conv_kernel);
    read_key(json, "conv_stride", c.conv_stride);
    read_key(json, "conv_bias", c.conv_bias);
    read_key(json, "hidden_size", c.hidden_size);
    read_key(json, "num_conv_pos_embeddings", c.num_conv_pos_embeddings);
    read_key(json, "num_conv_pos_embedding_groups", c.num_conv_pos_embedding_groups);
    read_key(json, "num_hidden_layers", c.num_hidden_layers);
    read_key(json, "num_attention_heads", c.num_attention_heads);
    read_key(json, "intermediate_size", c.intermediate_size);
    read_key(json, "hidden_act", c.hidden_act);
    read_key(json, "layer_norm_eps", c.layer_norm_eps);
    read_key(json, "do_stable_layer_norm", c.do_stable_layer_norm);
    c.validate();
    return c;
}

Wav2Vec2Config Wav2Vec2Config::base() {
    return Wav2Vec2Config{};
}

void Wav2Vec2Config::validate() const {
    require(feat_extract_norm == "group" || feat_extract_norm == "layer",
            "feat_extract_norm '" + feat_extract_norm + "' is not supported (group, layer)");
    require(feat_extract_activation == "gelu",
            "feat_extract_activation '" + feat_extract_activation + "' is not supported (gelu)");
    require(hidden_act == "gelu", "hidden_act '" + hidden_act + "' is not supported (gelu)");
    require(!conv_dim.empty() && conv_dim.size() == conv_kernel.size() &&
                conv_dim.size() == conv_stride.size(),
            "conv_dim, conv_kernel and conv_stride must be non-empty and of equal length");
    for (std::size_t i = 0; i < conv_dim.size(); ++i)
        require(conv_dim[i] > 0 && conv_kernel[i] > 0 && conv_stride[i] > 0,
                "conv sizes must be positive (layer " + std::to_string(i) + ")");
    require(hidden_size > 0 && num_hidden_layers > 0 && intermediate_size > 0,
            "hidden_size, num_hidden_layers and intermediate_size must be positive");
    require(num_attention_heads > 0 && hidden_size % num_attention_heads == 0,
            "hidden_size must be a multiple of num_attention_heads");
    require(num_conv_pos_embeddings > 0 && num_conv_pos_embedding_groups > 0 &&
                hidden_size % num_conv_pos_embedding_groups == 0,
            "hidden_size must be a multiple of num_conv_pos_embedding_groups");
    require(layer_norm_eps > 0, "layer_norm_eps must be positive");
}

int64_t Wav2Vec2Config::num_frames(int64_t num_samples) const {
    int64_t length = num_samples;
    for (std::size_t i = 0; i < conv_kernel.size(); ++i) {
        if (length < conv_kernel[i]) return 0;
        length = (length - conv_kernel[i]) / conv_stride[i] + 1;
    }
    return length;
}

// --- feature encoder --------------------------------------------------------------------------

WeightNormConv1dImpl::WeightNormConv1dImpl(int64_t channels, int64_t kernel_, int64_t groups_)
    : kernel(kernel_), groups(groups_) {
    // transformers' init; weight_g starts as ||weight_v|| so the effective weight is weight_v.
    const double stddev = 2.0 * std::sqrt(1.0 / static_cast<double>(kernel * channels));
    auto v = torch::randn({channels, channels / groups, kernel}) * stddev;
    weight_g = register_parameter("weight_g", torch::norm_except_dim(v, 2, 2));
    weight_v = register_parameter("weight_v", v);
    bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor WeightNormConv1dImpl::forward(const torch::Tensor& x) {
    const auto weight = torch::_weight_norm(weight_v, weight_g, 2);
    return F::conv1d(x, weight,
                     F::Conv1dFuncOptions().bias(bias).padding(kernel / 2).groups(groups));
}

Wav2Vec2ConvLayerImpl::Wav2Vec2ConvLayerImpl(const Wav2Vec2Config& c, int64_t layer_id) {
    const int64_t in = layer_id > 0 ? c.conv_dim[layer_id - 1] : 1;
    const int64_t out = c.conv_dim[layer_id];
    conv = register_module(
        "conv", torch::nn::Conv1d(torch::nn::Conv1dOptions(in, out, c.conv_kernel[layer_id])
                                      .stride(c.conv_stride[layer_id])
                                      .bias(c.conv_bias)));
    // Both norms use PyTorch's default eps (1e-5), not layer_norm_eps.
    if (c.feat_extract_norm == "group" && layer_id == 0) {
        group_norm = register_module(
            "layer_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(out, out).eps(1e-5)));
    } else if (c.feat_extract_norm == "layer") {
        layer_norm = register_module(
            "layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({out}).eps(1e-5)));
    }
}

torch::Tensor Wav2Vec2ConvLayerImpl::forward(const torch::Tensor& x) {
    auto h = conv(x);
    if (group_norm) h = group_norm(h);
    if (layer_norm) h = layer_norm(h.transpose(-2, -1)).transpose(-2, -1);
    return torch::gelu(h);
}

Wav2Vec2FeatureEncoderImpl::Wav2Vec2FeatureEncoderImpl(const Wav2Vec2Config& c) {
    conv_layers = register_module("conv_layers", torch::nn::ModuleList());
    for (std::size_t i = 0; i < c.conv_dim.size(); ++i)
        conv_layers->push_back(Wav2Vec2ConvLayer(c, static_cast<int64_t>(i)));
}

torch::Tensor Wav2Vec2FeatureEncoderImpl::forward(const torch::Tensor& waveform) {
    auto x = waveform.unsqueeze(1);  // [B, 1, T]
    for (std::size_t i = 0; i < conv_layers->size(); ++i)
        x = conv_layers->ptr(i)->as<Wav2Vec2ConvLayerImpl>()->forward(x);
    return x;
}

Wav2Vec2FeatureProjectionImpl::Wav2Vec2FeatureProjectionImpl(const Wav2Vec2Config& c) {
    const int64_t channels = c.conv_dim.back();
    layer_norm = register_module(
        "layer_norm",
        torch::nn::LayerNorm(torch::nn::LayerNormOptions({channels}).eps(c.layer_norm_eps)));
    projection = register_module("projection", torch::nn::Linear(channels, c.hidden_size));
}

torch::Tensor Wav2Vec2FeatureProjectionImpl::forward(const torch::Tensor& features) {
    return projection(layer_norm(features));
}

// --- encoder ----------------------------------------------------------------------------------

Wav2Vec2PositionalConvEmbeddingImpl::Wav2Vec2PositionalConvEmbeddingImpl(const Wav2Vec2Config& c) {
    conv = register_module("conv", WeightNormConv1d(c.hidden_size, c.num_conv_pos_embeddings,
                                                    c.num_conv_pos_embedding_groups));
}

torch::Tensor Wav2Vec2PositionalConvEmbeddingImpl::forward(const torch::Tensor& x) {
    auto h = conv(x.transpose(1, 2));
    if (conv->kernel % 2 == 0) h = h.narrow(2, 0, h.size(2) - 1);  // padding K/2 adds one frame
    return torch::gelu(h).transpose(1, 2);
}

Wav2Vec2AttentionImpl::Wav2Vec2AttentionImpl(int64_t hidden, int64_t heads_) : heads(heads_) {
    q_proj = register_module("q_proj", torch::nn::Linear(hidden, hidden));
    k_proj = register_module("k_proj", torch::nn::Linear(hidden, hidden));
    v_proj = register_module("v_proj", torch::nn::Linear(hidden, hidden));
    out_proj = register_module("out_proj", torch::nn::Linear(hidden, hidden));
}

torch::Tensor Wav2Vec2AttentionImpl::forward(const torch::Tensor& x) {
    const int64_t batch = x.size(0), length = x.size(1), hidden = x.size(2);
    auto split = [&](const torch::Tensor& t) {
        return t.view({batch, length, heads, hidden / heads}).transpose(1, 2);
    };
    auto out = attention_product(split(forward_linear(q_proj, x)), split(forward_linear(k_proj, x)),
                                 split(forward_linear(v_proj, x)));
    return forward_linear(out_proj, out.transpose(1, 2).reshape({batch, length, hidden}));
}

Wav2Vec2FeedForwardImpl::Wav2Vec2FeedForwardImpl(const Wav2Vec2Config& c) {
    intermediate_dense = register_module("intermediate_dense",
                                         torch::nn::Linear(c.hidden_size, c.intermediate_size));
    output_dense =
        register_module("output_dense", torch::nn::Linear(c.intermediate_size, c.hidden_size));
}

torch::Tensor Wav2Vec2FeedForwardImpl::forward(const torch::Tensor& x) {
    return forward_linear(output_dense, torch::gelu(forward_linear(intermediate_dense, x)));
}

Wav2Vec2EncoderLayerImpl::Wav2Vec2EncoderLayerImpl(const Wav2Vec2Config& c)
    : pre_norm(c.do_stable_layer_norm) {
    const auto norm = torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps);
    attention =
        register_module("attention", Wav2Vec2Attention(c.hidden_size, c.num_attention_heads));
    layer_norm = register_module("layer_norm", torch::nn::LayerNorm(norm));
    feed_forward = register_module("feed_forward", Wav2Vec2FeedForward(c));
    final_layer_norm = register_module("final_layer_norm", torch::nn::LayerNorm(norm));
}

torch::Tensor Wav2Vec2EncoderLayerImpl::forward(const torch::Tensor& x) {
    if (pre_norm) {
        auto h = x + attention(layer_norm(x));
        return h + feed_forward(final_layer_norm(h));
    }
    auto h = layer_norm(x + attention(x));
    return final_layer_norm(h + feed_forward(h));
}

Wav2Vec2EncoderImpl::Wav2Vec2EncoderImpl(const Wav2Vec2Config& c)
    : pre_norm(c.do_stable_layer_norm) {
    pos_conv_embed = register_module("pos_conv_embed", Wav2Vec2PositionalConvEmbedding(c));
    layer_norm = register_module(
        "layer_norm",
        torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
        layers->push_back(Wav2Vec2EncoderLayer(c));
}

std::vector<torch::Tensor> Wav2Vec2EncoderImpl::forward(const torch::Tensor& x) {
    auto h = x + pos_conv_embed(x);
    if (!pre_norm) h = layer_norm(h);
    std::vector<torch::Tensor> states{h};
    for (std::size_t i = 0; i < layers->size(); ++i) {
        h = layers->ptr(i)->as<Wav2Vec2EncoderLayerImpl>()->forward(h);
        states.push_back(h);
    }
    if (pre_norm) states.back() = layer_norm(states.back());  // as transformers reports it
    return states;
}

// --- model ------------------------------------------------------------------------------------

Wav2Vec2ModelImpl::Wav2Vec2ModelImpl(const Wav2Vec2Config& config) : config_(config) {
    config_.validate();
    feature_extractor = register_module("feature_extractor", Wav2Vec2FeatureEncoder(config_));
    feature_projection = register_module("feature_projection", Wav2Vec2FeatureProjection(config_));
    encoder = register_module("encoder", Wav2Vec2Encoder(config_));
}

Wav2Vec2Output Wav2Vec2ModelImpl::forward(const torch::Tensor& waveform) {
    auto wave = waveform.dim() == 1 ? waveform.unsqueeze(0) : waveform;
    if (wave.dim() != 2)
        throw Error("wav2vec2: expected a waveform [batch, samples] or [samples], got " +
                    std::to_string(waveform.dim()) + " dims");
    if (config_.num_frames(wave.size(1)) < 1)
        throw Error("wav2vec2: " + std::to_string(wave.size(1)) +
                    " samples are too few for one feature frame");
    const auto param = feature_extractor->parameters().front();
    wave = wave.to(param.device(), param.scalar_type());

    Wav2Vec2Output out;
    out.conv_features = feature_extractor(wave).transpose(1, 2);
    out.hidden_states = encoder(feature_projection(out.conv_features));
    return out;
}

torch::Tensor normalize_waveform(const torch::Tensor& waveform) {
    if (waveform.numel() == 0) throw Error("normalize_waveform: empty waveform");
    const auto type = waveform.is_floating_point() ? waveform.scalar_type() : torch::kFloat;
    auto x = waveform.to(torch::kDouble);
    auto mean = x.mean(-1, /*keepdim=*/true);
    auto var = x.var(-1, /*unbiased=*/false, /*keepdim=*/true);
    return ((x - mean) / (var + 1e-7).sqrt()).to(type);
}

// --- loading ----------------------------------------------------------------------------------

LoadReport load_wav2vec2_weights(Wav2Vec2Model& model, const TensorMap& tensors,
                                 const std::string& source) {
    const std::string where = source.empty() ? std::string("wav2vec2 checkpoint") : source;
    bool prefixed = false;
    for (const auto& item : tensors)
        if (item.first.rfind("wav2vec2.", 0) == 0) prefixed = true;
    LoadOptions options;
    options.prefix = prefixed ? "wav2vec2." : "";
    const std::string probe = "feature_extractor.conv_layers.0.conv.weight";
    if (!tensors.count(options.prefix + probe))
        throw Error(where + ": not a wav2vec2 checkpoint (no '" + options.prefix + probe +
                    "' among its " + std::to_string(tensors.size()) + " tensors)");
    // Parts of Wav2Vec2Model / ForCTC / ForPreTraining that feature extraction does not use.
    options.ignore_unexpected_prefixes = {"masked_spec_embed", "lm_head.", "quantizer.",
                                          "project_hid.", "project_q."};
    return load_state_dict(*model, tensors, options, where);
}

Wav2Vec2Model load_wav2vec2_folder(const std::string& dir) {
    const fs::path folder(dir);
    const fs::path config_path = folder / "config.json";
    std::ifstream in(config_path);
    if (!in) throw Error(config_path.string() + ": cannot open (a Hugging Face model folder?)");
    nlohmann::json json;
    try {
        json = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw Error(config_path.string() + ": invalid JSON: " + e.what());
    }
    Wav2Vec2Config config;
    try {
        config = Wav2Vec2Config::from_json(json);
    } catch (const Error& e) {
        throw Error(config_path.string() + ": " + e.what());
    }
    const fs::path weights = folder / "model.safetensors";
    if (!fs::exists(weights)) {
        const bool legacy = fs::exists(folder / "pytorch_model.bin");
        throw Error(
            weights.string() + ": not found" +
            (legacy ? " (only pytorch_model.bin is there: convert it to safetensors)" : ""));
    }
    Wav2Vec2Model model(config);
    const LoadReport report =
        load_wav2vec2_weights(model, load_safetensors(weights.string()), weights.string());
    model->eval();
    logger()->info("wav2vec2: loaded {} tensors from {} ({} layers, hidden {})", report.loaded,
                   weights.string(), config.num_hidden_layers, config.hidden_size);
    return model;
}

}  // namespace loopy::model
