#include "model/preview_decoder.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/safetensors.h"
#include "model/loopy_model.h"

namespace loopy::model {

namespace {

torch::nn::Conv2d conv3x3(int64_t in, int64_t out) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}

bool starts_with(const std::string& s, const std::string& prefix) {
    return s.compare(0, prefix.size(), prefix) == 0;
}

// The widths stored with the tensors, or the defaults when the key is absent.
PreviewDecoderOptions options_from_metadata(const Metadata& metadata, const LoopyConfig& config,
                                            const std::string& source) {
    auto options = preview_decoder_options(config);
    const auto it = metadata.find(kPreviewChannelsKey);
    if (it == metadata.end()) return options;
    try {
        options.channels(nlohmann::json::parse(it->second).get<std::vector<int64_t>>());
    } catch (const nlohmann::json::exception& e) {
        throw Error(source + ": '" + kPreviewChannelsKey +
                    "' is not a list of widths: " + e.what());
    }
    return options;
}

}  // namespace

PreviewDecoderOptions::PreviewDecoderOptions(int64_t latent_channels, int64_t upsamplings)
    : latent_channels_(latent_channels), upsamplings_(upsamplings) {
    for (int64_t i = 0; i <= upsamplings; ++i)
        channels_.push_back(std::max<int64_t>(64 >> i, 8));
}

PreviewDecoderOptions preview_decoder_options(const LoopyConfig& config) {
    const auto vae = config.vae_config();
    const auto upsamplings = static_cast<int64_t>(vae.block_out_channels.size()) - 1;
    return PreviewDecoderOptions(vae.latent_channels, upsamplings).out_channels(vae.out_channels);
}

PreviewDecoderImpl::PreviewDecoderImpl(const PreviewDecoderOptions& o) : options(o) {
    const auto& ch = options.channels();
    if (options.upsamplings() < 0 || static_cast<int64_t>(ch.size()) != options.upsamplings() + 1)
        throw Error("preview decoder: " + std::to_string(options.upsamplings()) +
                    " upsamplings need " + std::to_string(options.upsamplings() + 1) +
                    " widths, got " + std::to_string(ch.size()));
    if (std::any_of(ch.begin(), ch.end(), [](int64_t c) { return c < 1; }))
        throw Error("preview decoder: widths must be positive");
    conv_in = register_module("conv_in", conv3x3(options.latent_channels(), ch[0]));
    mid = register_module("mid", conv3x3(ch[0], ch[0]));
    up_blocks = register_module("up_blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < options.upsamplings(); ++i)
        up_blocks->push_back(conv3x3(ch[static_cast<size_t>(i)], ch[static_cast<size_t>(i + 1)]));
    conv_out = register_module("conv_out", conv3x3(ch.back(), options.out_channels()));
}

torch::Tensor PreviewDecoderImpl::forward(const torch::Tensor& latents) {
    if (latents.dim() != 4 || latents.size(1) != options.latent_channels())
        throw Error("preview decoder: latents must be [B, " +
                    std::to_string(options.latent_channels()) + ", h, w], got " +
                    c10::str(latents.sizes()));
    namespace F = torch::nn::functional;
    const auto upsample = F::InterpolateFuncOptions()
                              .scale_factor(std::vector<double>{2.0, 2.0})
                              .mode(torch::kNearest);
    auto x = torch::relu(conv_in(latents));
    x = torch::relu(mid(x));
    for (const auto& block : *up_blocks) {
        x = F::interpolate(x, upsample);
        x = torch::relu(block->as<torch::nn::Conv2d>()->forward(x));
    }
    return conv_out(x);
}

PreviewDecoder load_preview_decoder(const TensorMap& tensors, const Metadata& metadata,
                                    const LoopyConfig& config, const std::string& source) {
    const bool any = std::any_of(tensors.begin(), tensors.end(), [](const auto& item) {
        return starts_with(item.first, kPreviewDecoderPrefix);
    });
    if (!any) return nullptr;
    PreviewDecoder preview(options_from_metadata(metadata, config, source));
    LoadOptions load;
    load.prefix = kPreviewDecoderPrefix;
    try {
        load_state_dict(*preview, tensors, load);
    } catch (const Error& e) {
        throw Error(source +
                    ": incomplete or mismatched preview decoder (write it again with "
                    "`loopy train-vae --preview`): " +
                    e.what());
    }
    preview->eval();
    return preview;
}

PreviewDecoder load_preview_decoder(const std::string& path) {
    Metadata metadata;
    const auto tensors = load_safetensors(path, &metadata);
    return load_preview_decoder(tensors, metadata, loopy_config_from_metadata(metadata, path),
                                path);
}

bool has_preview_decoder(const std::string& path) {
    const auto file = safetensors::File::open(path);
    return std::any_of(file.header.tensors.begin(), file.header.tensors.end(),
                       [](const auto& t) { return starts_with(t.name, kPreviewDecoderPrefix); });
}

TensorMap preview_decoder_tensors(const PreviewDecoderImpl& preview) {
    return state_dict(preview, kPreviewDecoderPrefix);
}

Metadata preview_decoder_metadata(const PreviewDecoderImpl& preview) {
    return {{kPreviewChannelsKey, nlohmann::json(preview.options.channels()).dump()}};
}

}  // namespace loopy::model
