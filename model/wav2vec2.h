#pragma once
// wav2vec 2.0 as Hugging Face transformers' Wav2Vec2Model builds it: a strided 1-D CNN over the
// raw waveform (16 kHz -> 50 frames/s) followed by a transformer encoder. Child modules carry
// transformers' names (under `wav2vec2.` in the ForCTC / ForPreTraining checkpoints), so
// checkpoints load by key. Inference only: no dropout, no masking, no padding attention mask.
#include <torch/torch.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/checkpoint.h"

namespace loopy::model {

struct Wav2Vec2Config {
    // "group": GroupNorm(C, C) on the first conv layer only (wav2vec2-base); "layer": LayerNorm
    // over channels after every conv layer (large-lv60 and friends).
    std::string feat_extract_norm = "group";
    std::string feat_extract_activation = "gelu";
    std::vector<int64_t> conv_dim{512, 512, 512, 512, 512, 512, 512};
    std::vector<int64_t> conv_kernel{10, 3, 3, 3, 3, 2, 2};
    std::vector<int64_t> conv_stride{5, 2, 2, 2, 2, 2, 2};
    bool conv_bias = false;
    int64_t hidden_size = 768;
    int64_t num_conv_pos_embeddings = 128;
    int64_t num_conv_pos_embedding_groups = 16;
    int64_t num_hidden_layers = 12;
    int64_t num_attention_heads = 12;
    int64_t intermediate_size = 3072;
    std::string hidden_act = "gelu";
    double layer_norm_eps = 1e-5;
    bool do_stable_layer_norm = false;  // pre-LN encoder layers, encoder layer_norm at the end

    // Reads a transformers config.json; absent keys keep transformers' defaults (wav2vec2-base).
    // Throws loopy::Error for another model type, options this implementation does not build
    // (adapters, other activations or norms) and inconsistent sizes.
    static Wav2Vec2Config from_json(const nlohmann::json& json);
    static Wav2Vec2Config base();  // facebook/wav2vec2-base(-960h), 94,370,944 parameters
    void validate() const;

    // Frames the CNN produces for `num_samples` input samples (0 if too short).
    int64_t num_frames(int64_t num_samples) const;
};

// Conv1d whose weight is weight-normalised along dim 2 (torch.nn.utils.weight_norm(conv,
// dim=2)): weight = weight_g * weight_v / ||weight_v|| with the norm over dims 0 and 1.
// Parameters: weight_g [1, 1, K], weight_v [C, C/groups, K], bias [C]; padding K/2.
class WeightNormConv1dImpl : public torch::nn::Module {
  public:
    WeightNormConv1dImpl(int64_t channels, int64_t kernel, int64_t groups);
    torch::Tensor forward(const torch::Tensor& x);  // [B, C, L] -> [B, C, L + 1 - K % 2]

    int64_t kernel, groups;
    torch::Tensor weight_g, weight_v, bias;
};
TORCH_MODULE(WeightNormConv1d);

// One CNN block: conv, optional norm (`layer_norm`: GroupNorm or channel LayerNorm), GELU.
class Wav2Vec2ConvLayerImpl : public torch::nn::Module {
  public:
    Wav2Vec2ConvLayerImpl(const Wav2Vec2Config& config, int64_t layer_id);
    torch::Tensor forward(const torch::Tensor& x);  // [B, C_in, T] -> [B, C_out, T']

    torch::nn::Conv1d conv{nullptr};
    torch::nn::GroupNorm group_norm{nullptr};  // registered as `layer_norm` ("group", layer 0)
    torch::nn::LayerNorm layer_norm{nullptr};  // "layer" mode, over channels
};
TORCH_MODULE(Wav2Vec2ConvLayer);

// `feature_extractor`: conv_layers.N. [B, T] -> [B, C, frames].
class Wav2Vec2FeatureEncoderImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2FeatureEncoderImpl(const Wav2Vec2Config& config);
    torch::Tensor forward(const torch::Tensor& waveform);

    torch::nn::ModuleList conv_layers{nullptr};
};
TORCH_MODULE(Wav2Vec2FeatureEncoder);

// `feature_projection`: layer_norm over the CNN channels, then projection to hidden_size.
class Wav2Vec2FeatureProjectionImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2FeatureProjectionImpl(const Wav2Vec2Config& config);
    torch::Tensor forward(const torch::Tensor& features);  // [B, L, C] -> [B, L, hidden]

    torch::nn::LayerNorm layer_norm{nullptr};
    torch::nn::Linear projection{nullptr};
};
TORCH_MODULE(Wav2Vec2FeatureProjection);

// `encoder.pos_conv_embed`: gelu(weight-normalised grouped conv), one frame trimmed for even K.
class Wav2Vec2PositionalConvEmbeddingImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2PositionalConvEmbeddingImpl(const Wav2Vec2Config& config);
    torch::Tensor forward(const torch::Tensor& x);  // [B, L, hidden] -> [B, L, hidden]

    WeightNormConv1d conv{nullptr};
};
TORCH_MODULE(Wav2Vec2PositionalConvEmbedding);

// Multi-head self-attention with bias on q/k/v/out_proj.
class Wav2Vec2AttentionImpl : public torch::nn::Module {
  public:
    Wav2Vec2AttentionImpl(int64_t hidden, int64_t heads);
    torch::Tensor forward(const torch::Tensor& x);  // [B, L, hidden]

    int64_t heads;
    torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};
};
TORCH_MODULE(Wav2Vec2Attention);

class Wav2Vec2FeedForwardImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2FeedForwardImpl(const Wav2Vec2Config& config);
    torch::Tensor forward(const torch::Tensor& x);

    torch::nn::Linear intermediate_dense{nullptr}, output_dense{nullptr};
};
TORCH_MODULE(Wav2Vec2FeedForward);

// Post-LN layer (x = LN(x + attn x); x = finalLN(x + ff x)) or, with do_stable_layer_norm,
// pre-LN (x += attn(LN x); x += ff(finalLN x)).
class Wav2Vec2EncoderLayerImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2EncoderLayerImpl(const Wav2Vec2Config& config);
    torch::Tensor forward(const torch::Tensor& x);

    bool pre_norm;
    Wav2Vec2Attention attention{nullptr};
    torch::nn::LayerNorm layer_norm{nullptr};
    Wav2Vec2FeedForward feed_forward{nullptr};
    torch::nn::LayerNorm final_layer_norm{nullptr};
};
TORCH_MODULE(Wav2Vec2EncoderLayer);

// `encoder`: pos_conv_embed, layer_norm, layers.N. Returns transformers' output_hidden_states:
// [0] the input of layer 0 (post-LN: LN(x + pos); stable: x + pos), then each layer's output;
// with do_stable_layer_norm the last entry has the final layer_norm applied.
class Wav2Vec2EncoderImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2EncoderImpl(const Wav2Vec2Config& config);
    std::vector<torch::Tensor> forward(const torch::Tensor& x);

    bool pre_norm;
    Wav2Vec2PositionalConvEmbedding pos_conv_embed{nullptr};
    torch::nn::LayerNorm layer_norm{nullptr};
    torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(Wav2Vec2Encoder);

struct Wav2Vec2Output {
    torch::Tensor conv_features;  // CNN output [B, frames, conv_dim.back()], before projection
    // num_hidden_layers + 1 tensors [B, frames, hidden], as transformers' output_hidden_states.
    std::vector<torch::Tensor> hidden_states;
    const torch::Tensor& last_hidden_state() const { return hidden_states.back(); }
};

// transformers' Wav2Vec2Model without masked_spec_embed (only used for training masks).
class Wav2Vec2ModelImpl : public torch::nn::Module {
  public:
    explicit Wav2Vec2ModelImpl(const Wav2Vec2Config& config);
    // waveform [B, T] or [T], 16 kHz, already normalised if the checkpoint expects it
    // (see normalize_waveform). Float32 or the module's dtype.
    Wav2Vec2Output forward(const torch::Tensor& waveform);

    const Wav2Vec2Config& config() const { return config_; }

    Wav2Vec2FeatureEncoder feature_extractor{nullptr};
    Wav2Vec2FeatureProjection feature_projection{nullptr};
    Wav2Vec2Encoder encoder{nullptr};

  private:
    Wav2Vec2Config config_;
};
TORCH_MODULE(Wav2Vec2Model);

// Zero mean, unit variance per utterance along the last dim, as Wav2Vec2FeatureExtractor with
// do_normalize: (x - mean) / sqrt(var + 1e-7), population variance. Returns the input's dtype.
torch::Tensor normalize_waveform(const torch::Tensor& waveform);

// Loads a Wav2Vec2Model / ForCTC / ForPreTraining state dict (keys with or without the
// `wav2vec2.` prefix; heads and quantizer ignored). Throws loopy::Error listing missing,
// unexpected and wrong-shape tensors, or saying the file is not a wav2vec2 checkpoint.
LoadReport load_wav2vec2_weights(Wav2Vec2Model& model, const TensorMap& tensors,
                                 const std::string& source = "");

// A Hugging Face model folder: config.json + model.safetensors.
Wav2Vec2Model load_wav2vec2_folder(const std::string& dir);

}  // namespace loopy::model
