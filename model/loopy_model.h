#pragma once
// The whole Loopy model and its checkpoint format (docs/checkpoint-format.md): one safetensors
// file with `vae.*`, `reference_unet.*`, `denoising_unet.*`, `audio_encoder.*`, `audio_proj.*`,
// `audio_to_latents.*`, and `loopy.format_version` / `loopy.config` in its metadata.
#include <torch/torch.h>

#include <string>

#include "core/checkpoint.h"
#include "model/audio_conditioning.h"
#include "model/autoencoder_kl.h"
#include "model/loopy_config.h"
#include "model/loopy_unet.h"
#include "model/wav2vec2.h"

namespace loopy::model {

inline constexpr int kLoopyFormatVersion = 1;
inline constexpr const char* kFormatVersionKey = "loopy.format_version";
inline constexpr const char* kConfigKey = "loopy.config";

struct LoopyInputs {
    torch::Tensor latents;    // noisy clip latents [B, F, C, h, w] (VAE latents * scaling_factor)
    torch::Tensor timestep;   // [B] or one for all
    ReferenceBank reference;  // ReferenceNet::encode_reference; empty: none
    MotionBank motion;        // ReferenceNet::encode_motion; empty: none
    torch::Tensor audio_tokens;              // [B or 1, F, N, D] from audio_proj; undefined: none
    MotionConditionInputs motion_condition;  // audio_to_latents' input; .audio is filled from
                                             // the tokens (their mean) when left undefined
    DropFlags drop;
    torch::Tensor context;  // attn2 context override (tests); undefined: the learned one
};

class LoopyModelImpl : public torch::nn::Module {
  public:
    explicit LoopyModelImpl(const LoopyConfig& config);

    // Audio-to-latents (when audio tokens or a motion condition are given), then the denoising
    // U-Net. Returns the predicted noise [B, F, C, h, w].
    torch::Tensor predict_noise(const LoopyInputs& inputs);

    // The audio-to-latents input for audio: the mean of a frame's audio tokens, [B, F, D].
    static torch::Tensor audio_condition(const torch::Tensor& audio_tokens);

    LoopyConfig config;
    // What predict_noise's output means to the sampler: "epsilon" or "v_prediction" (a trainer
    // option). Stored in checkpoints as the metadata key kPredictionTypeKey.
    std::string prediction_type = "epsilon";
    AutoencoderKL vae{nullptr};
    ReferenceNet reference_unet{nullptr};
    LoopyDenoisingUNet denoising_unet{nullptr};
    Wav2Vec2Model audio_encoder{nullptr};
    AudioProjection audio_proj{nullptr};
    AudioToLatents audio_to_latents{nullptr};
};
TORCH_MODULE(LoopyModel);

inline constexpr const char* kPredictionTypeKey = "loopy.train.prediction_type";

// The metadata every Loopy checkpoint carries (format version and config JSON).
Metadata loopy_metadata(const LoopyConfig& config);
// Checks a checkpoint's metadata and returns its config; `source` names the file in errors.
LoopyConfig loopy_config_from_metadata(const Metadata& metadata, const std::string& source);
// Reads only the header of `path`.
LoopyConfig read_loopy_config(const std::string& path);

// What save_loopy_checkpoint writes as metadata: loopy_metadata, the prediction type, then
// `extra_metadata` where it does not override those.
Metadata loopy_checkpoint_metadata(const LoopyModelImpl& model,
                                   const Metadata& extra_metadata = {});
// Atomic write of every parameter and buffer (float32 unless the model is in another dtype), plus
// `extra_tensors` (the optional preview decoder, model/preview_decoder.h).
void save_loopy_checkpoint(const std::string& path, LoopyModelImpl& model,
                           const Metadata& extra_metadata = {},
                           const TensorMap& extra_tensors = {});
// Strict: the format version, the config and every tensor must match (the optional
// `preview_decoder.*` tensors are left to load_preview_decoder). Returns the model in eval mode on
// the CPU.
LoopyModel load_loopy_checkpoint(const std::string& path);
// The same from a checkpoint already opened with load_safetensors; `source` names it in errors.
LoopyModel load_loopy_checkpoint(const TensorMap& tensors, const Metadata& metadata,
                                 const std::string& source);

}  // namespace loopy::model
