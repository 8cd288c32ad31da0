#pragma once
// Loopy's audio conditioning outside the U-Net: the audio projection (wav2vec features of a
// frame's window -> N context tokens for the audio cross-attention) and audio-to-latents (one
// condition -> a "motion latent" added to the timestep embedding), plus the helpers that turn an
// utterance's wav2vec hidden states into per-video-frame windows.
#include <torch/torch.h>

#include <cstdint>

#include "model/attention.h"
#include "model/wav2vec2.h"

namespace loopy::model {

// --- per-frame audio features ---

// The outputs of the L transformer layers (hidden_states[1..L]) of one utterance, batch item 0:
// [T, L, C] at the audio encoder's frame rate (50 Hz for wav2vec 2.0).
torch::Tensor stack_layer_features(const Wav2Vec2Output& output);

// [T, L, C] -> [num_frames, L, C] by linear interpolation along time (audio rate -> video rate;
// the audio's first and last frames align with the video's).
torch::Tensor resample_to_frames(const torch::Tensor& features, int64_t num_frames);

// [T, L, C] -> [T, 2 * window + 1, L, C]: frame t gets frames t-window..t+window, the ends
// repeated at the edges.
torch::Tensor audio_windows(const torch::Tensor& features, int64_t window);

// --- audio projection ---

struct AudioProjectionOptions {
    AudioProjectionOptions(int64_t layers, int64_t channels)
        : layers_(layers), channels_(channels) {}
    TORCH_ARG(int64_t, layers);    // L
    TORCH_ARG(int64_t, channels);  // C
    TORCH_ARG(int64_t, window) = 2;
    TORCH_ARG(int64_t, intermediate_dim) = 512;
    TORCH_ARG(int64_t, context_tokens) = 32;  // N
    TORCH_ARG(int64_t, token_dim) = 768;      // D
};

// MLP over a frame's whole window: flatten [2w+1, L, C] -> proj1 -> ReLU -> proj2 -> ReLU ->
// proj3 -> [N, D] -> LayerNorm `norm`. Keys: proj1, proj2, proj3, norm.
class AudioProjectionImpl : public torch::nn::Module {
  public:
    explicit AudioProjectionImpl(const AudioProjectionOptions& options);
    // windows [B, F, 2w+1, L, C] -> tokens [B, F, N, D].
    torch::Tensor forward(const torch::Tensor& windows);

    AudioProjectionOptions options;
    torch::nn::Linear proj1{nullptr}, proj2{nullptr}, proj3{nullptr};
    torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(AudioProjection);

// --- audio-to-latents ---

// Which condition audio-to-latents reads for a batch item (training picks one at random;
// inference uses audio).
enum class MotionCondition : int64_t { Audio = 0, HeadVariance = 1, ExpressionVariance = 2 };

struct AudioToLatentsOptions {
    AudioToLatentsOptions(int64_t audio_dim, int64_t time_embed_dim)
        : audio_dim_(audio_dim), time_embed_dim_(time_embed_dim) {}
    TORCH_ARG(int64_t, audio_dim);       // width of the audio condition (the audio token width)
    TORCH_ARG(int64_t, time_embed_dim);  // output width: the U-Net's timestep embedding
    TORCH_ARG(int64_t, num_embeddings) = 128;
    TORCH_ARG(int64_t, embedding_dim) = 256;
    TORCH_ARG(int64_t, attention_dim) = 256;
    TORCH_ARG(int64_t, heads) = 1;
    TORCH_ARG(int64_t, head_variance_dim) = 1;
    TORCH_ARG(int64_t, expression_variance_dim) = 1;
};

struct MotionConditionInputs {
    torch::Tensor type;                 // int64 [B] of MotionCondition; undefined: all Audio
    torch::Tensor audio;                // [B, F, audio_dim] (per frame)
    torch::Tensor head_variance;        // [B, head_variance_dim] (per clip)
    torch::Tensor expression_variance;  // [B, expression_variance_dim] (per clip)
};

// The condition goes through its own FC (audio_in / head_variance_in / expression_variance_in) to
// one query token; keys and values come from the learnable `embeddings` [num_embeddings,
// embedding_dim] (attn: to_q/to_k/to_v/to_out.0); the attended value goes through `proj_out` to
// time_embed_dim. proj_out starts at zero, so a fresh module adds nothing.
class AudioToLatentsImpl : public torch::nn::Module {
  public:
    explicit AudioToLatentsImpl(const AudioToLatentsOptions& options);
    // Returns the motion latent [B, F, time_embed_dim]; F from `audio`, or 1 when no item uses
    // audio (broadcast over the clip's frames by the caller).
    torch::Tensor forward(const MotionConditionInputs& inputs);

    AudioToLatentsOptions options;
    torch::Tensor embeddings;
    torch::nn::Linear audio_in{nullptr}, head_variance_in{nullptr}, expression_variance_in{nullptr};
    Attention attn{nullptr};
    torch::nn::Linear proj_out{nullptr};
};
TORCH_MODULE(AudioToLatents);

}  // namespace loopy::model
