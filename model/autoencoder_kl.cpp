#include "model/autoencoder_kl.h"

#include <filesystem>
#include <fstream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/log.h"
#include "core/torch_compat.h"
#include "model/config_json.h"
#include "model/cpu_attention.h"
#include "model/cpu_group_norm.h"
#include "model/cpu_linear.h"

namespace loopy::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {

// diffusers builds every VAE norm with this epsilon (Encoder/Decoder pass resnet_eps=1e-6).
constexpr double kVaeEps = 1e-6;

template <typename T>
void read_key(const nlohmann::json& json, const char* key, T& value) {
    read_config_key(json, key, value, "AutoencoderKL");
}

nn::GroupNorm group_norm(int64_t groups, int64_t channels) {
    return nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(kVaeEps));
}

nn::Conv2d conv(int64_t in, int64_t out, int64_t kernel) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).padding(kernel / 2));
}

}  // namespace

// ---- config ----------------------------------------------------------------------------------

AutoencoderKLConfig AutoencoderKLConfig::from_json(const nlohmann::json& json) {
    if (!json.is_object()) throw Error("AutoencoderKL config: expected a JSON object");
    AutoencoderKLConfig c;
    std::string class_name;
    read_key(json, "_class_name", class_name);
    if (!class_name.empty() && class_name != "AutoencoderKL")
        throw Error("AutoencoderKL config: _class_name is '" + class_name +
                    "', not an AutoencoderKL");
    read_key(json, "in_channels", c.in_channels);
    read_key(json, "out_channels", c.out_channels);
    read_key(json, "down_block_types", c.down_block_types);
    read_key(json, "up_block_types", c.up_block_types);
    read_key(json, "block_out_channels", c.block_out_channels);
    read_key(json, "layers_per_block", c.layers_per_block);
    read_key(json, "act_fn", c.act_fn);
    read_key(json, "latent_channels", c.latent_channels);
    read_key(json, "norm_num_groups", c.norm_num_groups);
    read_key(json, "sample_size", c.sample_size);
    read_key(json, "scaling_factor", c.scaling_factor);
    read_key(json, "mid_block_add_attention", c.mid_block_add_attention);
    read_key(json, "use_quant_conv", c.use_quant_conv);
    read_key(json, "use_post_quant_conv", c.use_post_quant_conv);
    c.validate();
    return c;
}

AutoencoderKLConfig AutoencoderKLConfig::stable_diffusion() {
    AutoencoderKLConfig c;
    c.down_block_types.assign(4, "DownEncoderBlock2D");
    c.up_block_types.assign(4, "UpDecoderBlock2D");
    c.block_out_channels = {128, 256, 512, 512};
    c.layers_per_block = 2;
    c.sample_size = 512;
    return c;
}

void AutoencoderKLConfig::validate() const {
    const std::string where = "AutoencoderKL config: ";
    for (const auto& t : down_block_types)
        if (t != "DownEncoderBlock2D")
            throw Error(where + "unsupported down block type '" + t +
                        "' (only DownEncoderBlock2D is implemented)");
    for (const auto& t : up_block_types)
        if (t != "UpDecoderBlock2D")
            throw Error(where + "unsupported up block type '" + t +
                        "' (only UpDecoderBlock2D is implemented)");
    if (act_fn != "silu" && act_fn != "swish")
        throw Error(where + "unsupported act_fn '" + act_fn + "' (only silu is implemented)");
    if (block_out_channels.empty()) throw Error(where + "block_out_channels is empty");
    if (down_block_types.size() != block_out_channels.size() ||
        up_block_types.size() != block_out_channels.size())
        throw Error(where +
                    "down_block_types, up_block_types and block_out_channels must have "
                    "the same length");
    if (in_channels <= 0 || out_channels <= 0 || latent_channels <= 0 || layers_per_block <= 0 ||
        norm_num_groups <= 0)
        throw Error(where + "channel counts, layers_per_block and norm_num_groups must be > 0");
    for (int64_t ch : block_out_channels)
        if (ch <= 0 || ch % norm_num_groups != 0)
            throw Error(where + "block_out_channels entry " + std::to_string(ch) +
                        " is not a positive multiple of norm_num_groups " +
                        std::to_string(norm_num_groups));
}

// ---- blocks ----------------------------------------------------------------------------------

VaeAttentionImpl::VaeAttentionImpl(int64_t channels, int64_t groups, double eps) {
    group_norm = register_module("group_norm",
                                 nn::GroupNorm(nn::GroupNormOptions(groups, channels).eps(eps)));
    to_q = register_module("to_q", nn::Linear(channels, channels));
    to_k = register_module("to_k", nn::Linear(channels, channels));
    to_v = register_module("to_v", nn::Linear(channels, channels));
    to_out = register_module("to_out", nn::ModuleList(nn::Linear(channels, channels)));
}

torch::Tensor VaeAttentionImpl::forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    // Tokens are the H*W positions; one head spanning all channels.
    auto tokens = group_norm(x).view({b, c, h * w}).transpose(1, 2);  // [B, L, C]
    auto q = forward_linear(to_q, tokens).unsqueeze(1);               // [B, 1, L, C]
    auto k = forward_linear(to_k, tokens).unsqueeze(1);
    auto v = forward_linear(to_v, tokens).unsqueeze(1);
    auto attended = attention_product(q, k, v).squeeze(1);
    nn::Linear out_layer(to_out->ptr<nn::LinearImpl>(0));
    auto out = forward_linear(out_layer, attended);  // [B, L, C]
    return x + out.transpose(1, 2).reshape({b, c, h, w});
}

VaeMidBlockImpl::VaeMidBlockImpl(int64_t channels, int64_t groups, double eps, bool add_attention) {
    resnets = register_module("resnets", nn::ModuleList());
    attentions = register_module("attentions", nn::ModuleList());
    const auto opts = ResnetBlock2DOptions(channels, channels).groups(groups).eps(eps);
    resnets->push_back(ResnetBlock2D(opts));
    if (add_attention) attentions->push_back(VaeAttention(channels, groups, eps));
    resnets->push_back(ResnetBlock2D(opts));
}

torch::Tensor VaeMidBlockImpl::forward(const torch::Tensor& x) {
    auto h = resnets[0]->as<ResnetBlock2D>()->forward(x);
    if (!attentions->is_empty()) h = attentions[0]->as<VaeAttention>()->forward(h);
    return resnets[1]->as<ResnetBlock2D>()->forward(h);
}

DownEncoderBlock2DImpl::DownEncoderBlock2DImpl(int64_t in_channels, int64_t out_channels,
                                               int64_t layers, int64_t groups, double eps,
                                               bool add_downsample) {
    resnets = register_module("resnets", nn::ModuleList());
    for (int64_t i = 0; i < layers; ++i) {
        const int64_t in = i == 0 ? in_channels : out_channels;
        resnets->push_back(
            ResnetBlock2D(ResnetBlock2DOptions(in, out_channels).groups(groups).eps(eps)));
    }
    downsamplers = register_module("downsamplers", nn::ModuleList());
    // The VAE's downsampler pads asymmetrically (padding 0 + F.pad), unlike the U-Net's.
    if (add_downsample)
        downsamplers->push_back(Downsample2D(Downsample2DOptions(out_channels).padding(0)));
}

torch::Tensor DownEncoderBlock2DImpl::forward(torch::Tensor x) {
    for (const auto& r : *resnets)
        x = r->as<ResnetBlock2D>()->forward(x);
    for (const auto& d : *downsamplers)
        x = d->as<Downsample2D>()->forward(x);
    return x;
}

UpDecoderBlock2DImpl::UpDecoderBlock2DImpl(int64_t in_channels, int64_t out_channels,
                                           int64_t layers, int64_t groups, double eps,
                                           bool add_upsample) {
    resnets = register_module("resnets", nn::ModuleList());
    for (int64_t i = 0; i < layers; ++i) {
        const int64_t in = i == 0 ? in_channels : out_channels;
        resnets->push_back(
            ResnetBlock2D(ResnetBlock2DOptions(in, out_channels).groups(groups).eps(eps)));
    }
    upsamplers = register_module("upsamplers", nn::ModuleList());
    if (add_upsample) upsamplers->push_back(Upsample2D(Upsample2DOptions(out_channels)));
}

torch::Tensor UpDecoderBlock2DImpl::forward(torch::Tensor x) {
    for (const auto& r : *resnets)
        x = r->as<ResnetBlock2D>()->forward(x);
    for (const auto& u : *upsamplers)
        x = u->as<Upsample2D>()->forward(x);
    return x;
}

// ---- encoder / decoder -----------------------------------------------------------------------

EncoderImpl::EncoderImpl(const AutoencoderKLConfig& cfg) {
    cfg.validate();
    const auto& ch = cfg.block_out_channels;
    const int64_t groups = cfg.norm_num_groups;
    conv_in = register_module("conv_in", conv(cfg.in_channels, ch.front(), 3));
    down_blocks = register_module("down_blocks", nn::ModuleList());
    for (std::size_t i = 0; i < ch.size(); ++i) {
        const int64_t in = i == 0 ? ch.front() : ch[i - 1];
        const bool last = i + 1 == ch.size();
        down_blocks->push_back(
            DownEncoderBlock2D(in, ch[i], cfg.layers_per_block, groups, kVaeEps, !last));
    }
    mid_block = register_module(
        "mid_block", VaeMidBlock(ch.back(), groups, kVaeEps, cfg.mid_block_add_attention));
    conv_norm_out = register_module("conv_norm_out", group_norm(groups, ch.back()));
    // Mean and log-variance ("double_z").
    conv_out = register_module("conv_out", conv(ch.back(), 2 * cfg.latent_channels, 3));
}

torch::Tensor EncoderImpl::forward(const torch::Tensor& x) {
    auto h = conv_in(x);
    for (const auto& block : *down_blocks)
        h = block->as<DownEncoderBlock2D>()->forward(h);
    h = mid_block(h);
    return conv_out(forward_group_norm(conv_norm_out, h, {}, true));
}

DecoderImpl::DecoderImpl(const AutoencoderKLConfig& cfg) {
    cfg.validate();
    const std::vector<int64_t> ch(cfg.block_out_channels.rbegin(), cfg.block_out_channels.rend());
    const int64_t groups = cfg.norm_num_groups;
    conv_in = register_module("conv_in", conv(cfg.latent_channels, ch.front(), 3));
    mid_block = register_module(
        "mid_block", VaeMidBlock(ch.front(), groups, kVaeEps, cfg.mid_block_add_attention));
    up_blocks = register_module("up_blocks", nn::ModuleList());
    for (std::size_t i = 0; i < ch.size(); ++i) {
        const int64_t in = i == 0 ? ch.front() : ch[i - 1];
        const bool last = i + 1 == ch.size();
        // One more resnet per block than the encoder has.
        up_blocks->push_back(
            UpDecoderBlock2D(in, ch[i], cfg.layers_per_block + 1, groups, kVaeEps, !last));
    }
    conv_norm_out = register_module("conv_norm_out", group_norm(groups, ch.back()));
    conv_out = register_module("conv_out", conv(ch.back(), cfg.out_channels, 3));
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& z) {
    auto h = mid_block(conv_in(z));
    for (const auto& block : *up_blocks)
        h = block->as<UpDecoderBlock2D>()->forward(h);
    return conv_out(forward_group_norm(conv_norm_out, h, {}, true));
}

// ---- posterior -------------------------------------------------------------------------------

DiagonalGaussian DiagonalGaussian::from_moments(const torch::Tensor& moments) {
    auto parts = moments.chunk(2, 1);
    DiagonalGaussian g;
    g.mean = parts[0];
    g.logvar = parts[1].clamp(-30.0, 20.0);
    g.std = torch::exp(0.5 * g.logvar);
    return g;
}

torch::Tensor DiagonalGaussian::sample(c10::optional<at::Generator> generator) const {
    auto noise = torch::randn(mean.sizes(), generator, mean.options());
    return sample_with_noise(noise);
}

torch::Tensor DiagonalGaussian::sample_with_noise(const torch::Tensor& noise) const {
    if (noise.sizes() != mean.sizes())
        throw Error("DiagonalGaussian::sample: noise shape does not match the latent shape");
    return mean + std * noise.to(mean.options());
}

// ---- AutoencoderKL ---------------------------------------------------------------------------

AutoencoderKLImpl::AutoencoderKLImpl(const AutoencoderKLConfig& cfg) : config(cfg) {
    config.validate();
    encoder = register_module("encoder", Encoder(config));
    decoder = register_module("decoder", Decoder(config));
    const int64_t lc = config.latent_channels;
    if (config.use_quant_conv) quant_conv = register_module("quant_conv", conv(2 * lc, 2 * lc, 1));
    if (config.use_post_quant_conv)
        post_quant_conv = register_module("post_quant_conv", conv(lc, lc, 1));
}

DiagonalGaussian AutoencoderKLImpl::encode(const torch::Tensor& image) {
    if (image.dim() != 4 || image.size(1) != config.in_channels)
        throw Error("AutoencoderKL::encode: expected [B, " + std::to_string(config.in_channels) +
                    ", H, W], got " + c10::str(image.sizes()));
    auto moments = encoder(image);
    if (quant_conv) moments = quant_conv(moments);
    return DiagonalGaussian::from_moments(moments);
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& latent) {
    if (latent.dim() != 4 || latent.size(1) != config.latent_channels)
        throw Error("AutoencoderKL::decode: expected [B, " +
                    std::to_string(config.latent_channels) + ", h, w], got " +
                    c10::str(latent.sizes()));
    auto z = post_quant_conv ? post_quant_conv(latent) : latent;
    return decoder(z);
}

int64_t AutoencoderKLImpl::downscale_factor() const {
    return int64_t{1} << (config.block_out_channels.size() - 1);
}

// ---- loading ---------------------------------------------------------------------------------

namespace {

nlohmann::json read_json_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    if (!in) throw Error("cannot open " + path.string());
    try {
        return nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        throw Error(path.string() + ": invalid JSON: " + e.what());
    }
}

// Some converted checkpoints store the mid-block attention projections as 1x1 convolutions
// ([C, C, 1, 1]); ours are Linear layers.
void squeeze_attention_convs(TensorMap& tensors) {
    for (auto& [key, t] : tensors)
        if (key.find("mid_block.attentions.") != std::string::npos && t.dim() == 4 &&
            t.size(2) == 1 && t.size(3) == 1)
            t = t.flatten(1);
}

}  // namespace

AutoencoderKL load_autoencoder_kl_folder(const std::string& dir) {
    namespace fs = std::filesystem;
    const fs::path root(dir);
    const fs::path config_path = root / "config.json";
    if (!fs::is_regular_file(config_path))
        throw Error("not a diffusers VAE folder (no config.json): " + dir);
    fs::path weights = root / "diffusion_pytorch_model.safetensors";
    if (!fs::is_regular_file(weights)) weights = root / "diffusion_pytorch_model.fp16.safetensors";
    if (!fs::is_regular_file(weights))
        throw Error("no diffusion_pytorch_model[.fp16].safetensors in " + dir);

    AutoencoderKLConfig config;
    try {
        config = AutoencoderKLConfig::from_json(read_json_file(config_path));
    } catch (const Error& e) {
        throw Error(config_path.string() + ": " + e.what());
    }
    AutoencoderKL model(config);
    TensorMap tensors = load_safetensors(weights.string());
    squeeze_attention_convs(tensors);
    load_state_dict(*model, tensors, {}, weights.string());  // converts fp16 -> float32
    model->eval();
    logger()->info("loaded AutoencoderKL from {} ({} blocks, {} latent channels)", dir,
                   config.block_out_channels.size(), config.latent_channels);
    return model;
}

}  // namespace loopy::model
