#pragma once
// The Loopy network's configuration: one JSON schema, stored in every checkpoint
// (`loopy.config`). The backbone parts are the upstream config.json objects, kept verbatim (a
// diffusers UNet2DConditionModel and AutoencoderKL, a transformers Wav2Vec2 model); the Loopy
// parts are small sections of our own. docs/checkpoint-format.md lists every key.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/autoencoder_kl.h"
#include "model/temporal_segment.h"
#include "model/unet2d_condition.h"
#include "model/wav2vec2.h"

namespace loopy::model {

struct LoopyConfig {
    std::string name = "sd15";
    int64_t resolution = 512;  // output frames are resolution x resolution pixels
    int64_t num_frames = 12;   // F: frames per generated clip

    // Upstream config.json objects; both U-Nets share `unet`.
    nlohmann::json unet, vae, audio_encoder;

    // Tokens of the learned context that replaces SD's text in the spatial cross-attention (attn2).
    int64_t null_context_tokens = 1;

    // Fixed 2-D sinusoidal positions added to every spatial self-attention's input in both
    // U-Nets (not in SD or the paper). Reference attention has to match a token with the
    // reference token at the same place; SD's deep, wide convolutions carry enough position for
    // that, the tiny network's do not (it then copies only the portrait's mean colours).
    bool spatial_positions = false;

    // The reference latent concatenated to the denoising U-Net's input channels (zeros where the
    // reference is dropped), besides the reference attention (not in the paper). The tiny network
    // trained on a CPU for minutes does not learn to copy a face through attention alone; a
    // pixel-aligned copy lets it spend its capacity on what changes (mouth, eyes, pose).
    bool reference_latent_input = false;

    struct Temporal {
        int64_t num_attention_heads = 8;         // dim_head = block channels / heads
        int64_t num_layers = 1;                  // transformer blocks per temporal layer
        int64_t num_positional_embeddings = 32;  // clip frames the intra-clip layer can take
        bool double_self_attention = true;       // two self-attentions per block (AnimateDiff)
    } temporal;

    TemporalSegmentOptions temporal_segment;

    struct AudioProjection {
        int64_t window = 2;  // wav2vec frames t-window..t+window per video frame
        int64_t intermediate_dim = 512;
        int64_t context_tokens = 32;  // N audio tokens per video frame
        int64_t token_dim = 768;      // their width
    } audio_projection;

    struct AudioAttention {
        int64_t num_attention_heads = 8;
    } audio_attention;

    struct AudioToLatents {
        int64_t num_embeddings = 128;
        int64_t embedding_dim = 256;
        int64_t attention_dim = 256;  // each condition's FC and the key/value projections
        int64_t num_attention_heads = 1;
        int64_t head_variance_dim = 1;
        int64_t expression_variance_dim = 1;
    } audio_to_latents;

    // "sd15" (SD 1.5 + wav2vec2-base, 512x512) or "tiny" (the CPU demo network).
    static LoopyConfig preset(const std::string& name);
    static std::vector<std::string> preset_names();
    // A preset's name, or the path of a JSON file holding a config in the checkpoints' format
    // (the JSON `loopy info --config-json` ends with): a network of another size to train.
    static LoopyConfig preset_or_file(const std::string& name_or_path);

    // Strict: unknown keys and wrong types throw loopy::Error naming the key; absent Loopy keys
    // keep the defaults above (the sd15 values); unet, vae and audio_encoder are required.
    static LoopyConfig from_json(const nlohmann::json& json);
    nlohmann::json to_json() const;
    void validate() const;  // also parses the upstream configs

    UNet2DConditionConfig unet_config() const;
    // The denoising U-Net's: unet_config() with twice the input channels when
    // reference_latent_input is on.
    UNet2DConditionConfig denoising_unet_config() const;
    AutoencoderKLConfig vae_config() const;
    Wav2Vec2Config audio_encoder_config() const;

    int64_t latent_size() const;          // resolution / the VAE's downscale factor
    int64_t motion_frames() const;        // M, from the temporal segment module
    int64_t history_frames() const;       // H
    int64_t audio_layers() const;         // L: wav2vec hidden states used (one per layer)
    int64_t audio_channels() const;       // C: wav2vec hidden size
    int64_t time_embed_dim() const;       // the U-Net's timestep-embedding width
    int64_t audio_window_frames() const;  // 2 * window + 1
};

}  // namespace loopy::model
