#include "model/loopy_model.h"

#include "core/error.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "model/preview_decoder.h"

namespace loopy::model {

LoopyModelImpl::LoopyModelImpl(const LoopyConfig& cfg) : config(cfg) {
    config.validate();
    const auto audio = config.audio_encoder_config();
    const auto& p = config.audio_projection;
    const auto& a = config.audio_to_latents;
    vae = register_module("vae", AutoencoderKL(config.vae_config()));
    reference_unet = register_module("reference_unet", ReferenceNet(config));
    denoising_unet = register_module("denoising_unet", LoopyDenoisingUNet(config));
    audio_encoder = register_module("audio_encoder", Wav2Vec2Model(audio));
    audio_proj = register_module(
        "audio_proj",
        AudioProjection(AudioProjectionOptions(audio.num_hidden_layers, audio.hidden_size)
                            .window(p.window)
                            .intermediate_dim(p.intermediate_dim)
                            .context_tokens(p.context_tokens)
                            .token_dim(p.token_dim)));
    audio_to_latents =
        register_module("audio_to_latents",
                        AudioToLatents(AudioToLatentsOptions(p.token_dim, config.time_embed_dim())
                                           .num_embeddings(a.num_embeddings)
                                           .embedding_dim(a.embedding_dim)
                                           .attention_dim(a.attention_dim)
                                           .heads(a.num_attention_heads)
                                           .head_variance_dim(a.head_variance_dim)
                                           .expression_variance_dim(a.expression_variance_dim)));
}

torch::Tensor LoopyModelImpl::audio_condition(const torch::Tensor& audio_tokens) {
    if (audio_tokens.dim() != 4) throw Error("audio tokens must be [B, F, N, D]");
    return audio_tokens.mean(2);
}

torch::Tensor LoopyModelImpl::predict_noise(const LoopyInputs& in) {
    if (!in.latents.defined() || in.latents.dim() != 5)
        throw Error("Loopy model: latents must be [B, F, C, h, w]");
    const int64_t b = in.latents.size(0);
    auto condition = in.motion_condition;
    if (!condition.audio.defined() && in.audio_tokens.defined()) {
        condition.audio = audio_condition(in.audio_tokens);
        if (condition.audio.size(0) == 1 && b > 1)
            condition.audio =
                condition.audio.expand({b, condition.audio.size(1), condition.audio.size(2)});
    }
    const bool any_condition = condition.audio.defined() || condition.type.defined() ||
                               condition.head_variance.defined() ||
                               condition.expression_variance.defined();
    DenoiseInputs d;
    d.latents = in.latents;
    d.timestep = in.timestep;
    d.reference = in.reference;
    d.motion = in.motion;
    d.audio_tokens = in.audio_tokens;
    d.drop = in.drop;
    d.context = in.context;
    if (any_condition) d.motion_latent = audio_to_latents(condition);
    return denoising_unet(d);
}

// --- checkpoint format ---

Metadata loopy_metadata(const LoopyConfig& config) {
    return {{kFormatVersionKey, std::to_string(kLoopyFormatVersion)},
            {kConfigKey, config.to_json().dump()}};
}

LoopyConfig loopy_config_from_metadata(const Metadata& metadata, const std::string& source) {
    auto version = metadata.find(kFormatVersionKey);
    if (version == metadata.end())
        throw Error(source + ": not a Loopy checkpoint (no '" + kFormatVersionKey +
                    "' in its metadata)");
    if (version->second != std::to_string(kLoopyFormatVersion))
        throw Error(source + ": Loopy checkpoint format version '" + version->second +
                    "', but this build reads version " + std::to_string(kLoopyFormatVersion));
    auto config = metadata.find(kConfigKey);
    if (config == metadata.end())
        throw Error(source + ": Loopy checkpoint without '" + kConfigKey + "' in its metadata");
    nlohmann::json json;
    try {
        json = nlohmann::json::parse(config->second);
    } catch (const nlohmann::json::exception& e) {
        throw Error(source + ": '" + kConfigKey + "' is not valid JSON: " + e.what());
    }
    try {
        return LoopyConfig::from_json(json);
    } catch (const Error& e) {
        throw Error(source + ": " + e.what());
    }
}

LoopyConfig read_loopy_config(const std::string& path) {
    return loopy_config_from_metadata(safetensors::File::open(path).header.metadata, path);
}

Metadata loopy_checkpoint_metadata(const LoopyModelImpl& model, const Metadata& extra_metadata) {
    auto metadata = loopy_metadata(model.config);
    metadata[kPredictionTypeKey] = model.prediction_type;
    for (const auto& [key, value] : extra_metadata)
        if (!metadata.count(key)) metadata[key] = value;
    return metadata;
}

void save_loopy_checkpoint(const std::string& path, LoopyModelImpl& model,
                           const Metadata& extra_metadata, const TensorMap& extra_tensors) {
    auto tensors = state_dict(model);
    tensors.insert(extra_tensors.begin(), extra_tensors.end());
    save_safetensors(path, tensors, loopy_checkpoint_metadata(model, extra_metadata));
}

LoopyModel load_loopy_checkpoint(const std::string& path) {
    Metadata metadata;
    const auto tensors = load_safetensors(path, &metadata);  // mapped: no tensor is read yet
    return load_loopy_checkpoint(tensors, metadata, path);
}

LoopyModel load_loopy_checkpoint(const TensorMap& tensors, const Metadata& metadata,
                                 const std::string& source) {
    const auto config = loopy_config_from_metadata(metadata, source);
    LoopyModel model(config);
    if (const auto it = metadata.find(kPredictionTypeKey); it != metadata.end()) {
        if (it->second != "epsilon" && it->second != "v_prediction")
            throw Error(source + ": unknown " + kPredictionTypeKey + " '" + it->second + "'");
        model->prediction_type = it->second;
    }
    const auto report =
        load_state_dict(*model, tensors, {"", true, {kPreviewDecoderPrefix}}, source);
    model->eval();
    logger()->info("loaded Loopy checkpoint {} ('{}', {} tensors)", source, config.name,
                   report.loaded);
    return model;
}

}  // namespace loopy::model
