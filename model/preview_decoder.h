#pragma once
// The fast preview decoder: a small conv-only network from diffusion latents to pixels, distilled
// from the VAE decoder (`loopy train-vae --preview`, model/vae_training.h). It trades picture
// quality for speed: a few 3x3 convolutions with nearest-neighbour upsampling instead of the
// VAE decoder's resnets, attention and GroupNorms. Its tensors live under `preview_decoder.` in
// the Loopy checkpoint, optionally (docs/checkpoint-format.md).
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "model/loopy_config.h"

namespace loopy::model {

inline constexpr const char* kPreviewDecoderPrefix = "preview_decoder.";
// Metadata key holding the widths (JSON list) of a checkpoint's preview decoder.
inline constexpr const char* kPreviewChannelsKey = "loopy.preview_decoder.channels";

struct PreviewDecoderOptions {
    // upsamplings: log2 of the VAE's downscale factor (3 for a factor of 8). The widths default
    // to 64, 32, 16, ... (at least 8), one per resolution from the latent's to the output's.
    PreviewDecoderOptions(int64_t latent_channels, int64_t upsamplings);
    TORCH_ARG(int64_t, latent_channels);
    TORCH_ARG(int64_t, upsamplings);
    TORCH_ARG(int64_t, out_channels) = 3;
    TORCH_ARG(std::vector<int64_t>, channels);  // upsamplings + 1 widths
};

// The options for a Loopy config's VAE (latent channels, downscale factor, output channels).
PreviewDecoderOptions preview_decoder_options(const LoopyConfig& config);

// latents [B, C, h, w], scaled as the diffusion model makes them (VAE latents times the
// scaling factor) -> image [B, out_channels, h * 2^n, w * 2^n], nominally in [-1, 1].
// Keys: conv_in (C -> channels[0]), mid (channels[0] -> channels[0]), up_blocks.i (after a x2
// nearest upsampling, channels[i] -> channels[i + 1]), conv_out (channels[n] -> out_channels);
// all 3x3 with padding 1, ReLU between them.
class PreviewDecoderImpl : public torch::nn::Module {
  public:
    explicit PreviewDecoderImpl(const PreviewDecoderOptions& options);
    torch::Tensor forward(const torch::Tensor& latents);

    PreviewDecoderOptions options;
    torch::nn::Conv2d conv_in{nullptr}, mid{nullptr};
    torch::nn::ModuleList up_blocks{nullptr};  // [Conv2d] x upsamplings
    torch::nn::Conv2d conv_out{nullptr};
};
TORCH_MODULE(PreviewDecoder);

// The preview decoder held in a Loopy checkpoint's tensors (keys under kPreviewDecoderPrefix),
// or an empty module (nullptr) when there are none. A partial or mis-shaped set is an error
// listing the keys; `source` names the file in errors. Returned in eval mode, float32.
PreviewDecoder load_preview_decoder(const TensorMap& tensors, const Metadata& metadata,
                                    const LoopyConfig& config, const std::string& source);
// The same from a checkpoint file (memory-mapped, so cheap after load_loopy_checkpoint).
PreviewDecoder load_preview_decoder(const std::string& path);
// Whether the file holds a preview decoder (reads only the header).
bool has_preview_decoder(const std::string& path);

// Its tensors under kPreviewDecoderPrefix and its widths as metadata, to go into a Loopy
// checkpoint (save_loopy_checkpoint's extra tensors and metadata).
TensorMap preview_decoder_tensors(const PreviewDecoderImpl& preview);
Metadata preview_decoder_metadata(const PreviewDecoderImpl& preview);

}  // namespace loopy::model
