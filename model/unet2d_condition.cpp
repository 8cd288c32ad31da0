#include "model/unet2d_condition.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/log.h"
#include "model/cpu_group_norm.h"

namespace loopy::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;
namespace fs = std::filesystem;
using nlohmann::json;

// --- config ---

namespace {

[[noreturn]] void unsupported(const std::string& key, const json& value) {
    throw Error("UNet2DConditionModel config: unsupported " + key + " = " + value.dump());
}

bool present(const json& c, const std::string& key) {
    return c.contains(key) && !c[key].is_null();
}

int64_t positive_int(const std::string& key, const json& v) {
    if (!v.is_number_integer() || v.get<int64_t>() <= 0) unsupported(key, v);
    return v.get<int64_t>();
}

void read_int(const json& c, const std::string& key, int64_t& out) {
    if (present(c, key)) out = positive_int(key, c[key]);
}

// An int, or a list with one int per down block.
std::vector<int64_t> per_block(const json& c, const std::string& key, size_t blocks) {
    const json& v = c[key];
    if (!v.is_array()) return std::vector<int64_t>(blocks, positive_int(key, v));
    if (v.size() != blocks) unsupported(key, v);
    std::vector<int64_t> out;
    for (const auto& item : v)
        out.push_back(positive_int(key, item));
    return out;
}

std::vector<std::string> string_list(const json& c, const std::string& key,
                                     const std::set<std::string>& allowed) {
    if (!c[key].is_array()) unsupported(key, c[key]);
    std::vector<std::string> out;
    for (const auto& item : c[key]) {
        if (!item.is_string() || !allowed.count(item.get<std::string>())) unsupported(key, item);
        out.push_back(item.get<std::string>());
    }
    return out;
}

// Keys whose only value we build (absent and null mean the default too).
void check_fixed_keys(const json& c) {
    const std::vector<std::pair<std::string, json>> fixed = {
        {"_class_name", "UNet2DConditionModel"}, {"act_fn", "silu"},
        {"time_embedding_type", "positional"},   {"resnet_time_scale_shift", "default"},
        {"attention_type", "default"},           {"only_cross_attention", false},
        {"dual_cross_attention", false},         {"mid_block_only_cross_attention", false},
        {"resnet_skip_time_act", false},         {"class_embeddings_concat", false},
        {"mid_block_scale_factor", 1},           {"resnet_out_scale_factor", 1},
    };
    for (const auto& [key, value] : fixed)
        if (present(c, key) && c[key] != value) unsupported(key, c[key]);
    // Extra embeddings and projections SD 1.x does not have.
    for (const char* key :
         {"class_embed_type", "num_class_embeds", "addition_embed_type", "addition_time_embed_dim",
          "encoder_hid_dim", "encoder_hid_dim_type", "time_cond_proj_dim", "timestep_post_act",
          "time_embedding_act_fn", "time_embedding_dim", "projection_class_embeddings_input_dim",
          "cross_attention_norm", "reverse_transformer_layers_per_block"})
        if (present(c, key)) unsupported(key, c[key]);
}

UNet2DConditionConfig parse_fields(const json& c) {
    check_fixed_keys(c);
    UNet2DConditionConfig cfg;
    if (present(c, "sample_size") && c["sample_size"].is_number_integer())
        cfg.sample_size = c["sample_size"].get<int64_t>();
    read_int(c, "in_channels", cfg.in_channels);
    read_int(c, "out_channels", cfg.out_channels);
    cfg.center_input_sample = c.value("center_input_sample", false);
    cfg.flip_sin_to_cos = c.value("flip_sin_to_cos", true);
    if (present(c, "freq_shift")) cfg.freq_shift = c["freq_shift"].get<double>();
    const std::set<std::string> down = {"CrossAttnDownBlock2D", "DownBlock2D"};
    const std::set<std::string> up = {"CrossAttnUpBlock2D", "UpBlock2D"};
    if (present(c, "down_block_types"))
        cfg.down_block_types = string_list(c, "down_block_types", down);
    if (present(c, "up_block_types")) cfg.up_block_types = string_list(c, "up_block_types", up);
    if (c.contains("mid_block_type") && c["mid_block_type"] != "UNetMidBlock2DCrossAttn")
        unsupported("mid_block_type", c["mid_block_type"]);
    if (present(c, "block_out_channels")) {
        if (!c["block_out_channels"].is_array() || c["block_out_channels"].empty())
            unsupported("block_out_channels", c["block_out_channels"]);
        cfg.block_out_channels.clear();
        for (const auto& v : c["block_out_channels"])
            cfg.block_out_channels.push_back(positive_int("block_out_channels", v));
    }
    const size_t blocks = cfg.block_out_channels.size();
    if (cfg.down_block_types.size() != blocks)
        unsupported("down_block_types", c.value("down_block_types", json()));
    if (cfg.up_block_types.size() != blocks)
        unsupported("up_block_types", c.value("up_block_types", json()));
    read_int(c, "layers_per_block", cfg.layers_per_block);
    if (present(c, "downsample_padding")) {
        const json& p = c["downsample_padding"];
        if (p != 0 && p != 1) unsupported("downsample_padding", p);
        cfg.downsample_padding = p.get<int64_t>();
    }
    if (c.contains("norm_num_groups")) {  // null would mean no conv_norm_out: not built
        if (c["norm_num_groups"].is_null()) unsupported("norm_num_groups", c["norm_num_groups"]);
        read_int(c, "norm_num_groups", cfg.norm_num_groups);
    }
    if (present(c, "norm_eps")) cfg.norm_eps = c["norm_eps"].get<double>();
    read_int(c, "cross_attention_dim", cfg.cross_attention_dim);
    // diffusers' naming quirk: without num_attention_heads, attention_head_dim is the head count.
    const char* heads_key = present(c, "num_attention_heads")  ? "num_attention_heads"
                            : present(c, "attention_head_dim") ? "attention_head_dim"
                                                               : nullptr;
    cfg.num_attention_heads =
        heads_key ? per_block(c, heads_key, blocks) : std::vector<int64_t>(blocks, 8);
    cfg.use_linear_projection = c.value("use_linear_projection", false);
    read_int(c, "transformer_layers_per_block", cfg.transformer_layers_per_block);
    read_int(c, "conv_in_kernel", cfg.conv_in_kernel);
    read_int(c, "conv_out_kernel", cfg.conv_out_kernel);
    for (size_t i = 0; i < blocks; ++i) {
        const int64_t ch = cfg.block_out_channels[i], heads = cfg.num_attention_heads[i];
        if (ch % heads != 0 || ch % cfg.norm_num_groups != 0)
            throw Error("UNet2DConditionModel config: block_out_channels " + std::to_string(ch) +
                        " is not divisible by its " + std::to_string(heads) +
                        " attention heads and " + std::to_string(cfg.norm_num_groups) +
                        " norm groups");
    }
    return cfg;
}

}  // namespace

UNet2DConditionConfig UNet2DConditionConfig::parse(const json& c) {
    if (!c.is_object()) throw Error("UNet2DConditionModel config: not a JSON object");
    try {
        return parse_fields(c);
    } catch (const json::exception& e) {  // a value of the wrong JSON type
        throw Error(std::string("UNet2DConditionModel config: ") + e.what());
    }
}

UNet2DConditionConfig UNet2DConditionConfig::parse_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw Error("cannot open " + path);
    try {
        return parse(json::parse(in));
    } catch (const json::exception& e) {
        throw Error(path + ": " + e.what());
    } catch (const Error& e) {
        throw Error(path + ": " + e.what());
    }
}

// --- blocks ---

namespace {

ResnetBlock2D make_resnet(const UNetBlockOptions& o, int64_t in, int64_t out) {
    return ResnetBlock2D(ResnetBlock2DOptions(in, out)
                             .temb_channels(o.temb_channels())
                             .groups(o.groups())
                             .eps(o.eps()));
}

Transformer2DModel make_transformer(const UNetBlockOptions& o, int64_t channels) {
    return Transformer2DModel(Transformer2DModelOptions(channels, o.heads(), channels / o.heads())
                                  .num_layers(o.transformer_layers())
                                  .cross_attention_dim(o.cross_attention_dim())
                                  .norm_num_groups(o.groups())
                                  .use_linear_projection(o.use_linear_projection())
                                  .spatial_positions(o.spatial_positions()));
}

// Registers the typed modules as the numbered children of a ModuleList called `name`.
template <typename M>
void register_list(nn::Module& parent, const std::string& name, const std::vector<M>& items) {
    auto list = parent.register_module(name, nn::ModuleList());
    for (const auto& item : items)
        list->push_back(item);
}

torch::Tensor apply_hook(const UNetLayerHook& hook, UNetLayerSite::Stage stage, int64_t block,
                         int64_t layer, const torch::Tensor& h) {
    return hook ? hook(UNetLayerSite{stage, block, layer}, h) : h;
}

}  // namespace

UNetDownBlockImpl::UNetDownBlockImpl(const UNetBlockOptions& o) : options(o) {
    for (int64_t i = 0; i < o.num_layers(); ++i) {
        resnets.push_back(
            make_resnet(o, i == 0 ? o.in_channels() : o.out_channels(), o.out_channels()));
        if (o.cross_attention()) attentions.push_back(make_transformer(o, o.out_channels()));
    }
    register_list(*this, "resnets", resnets);
    if (o.cross_attention()) register_list(*this, "attentions", attentions);
    if (o.resample()) {
        downsampler =
            Downsample2D(Downsample2DOptions(o.out_channels()).padding(o.downsample_padding()));
        register_list(*this, "downsamplers", std::vector<Downsample2D>{downsampler});
    }
}

torch::Tensor UNetDownBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb,
                                         const torch::Tensor& encoder_hidden_states,
                                         std::vector<torch::Tensor>& skips,
                                         const UNetLayerHook& hook, int64_t block_index) {
    auto h = x;
    for (size_t i = 0; i < resnets.size(); ++i) {
        h = resnets[i](h, temb);
        if (!attentions.empty()) h = attentions[i](h, encoder_hidden_states);
        h = apply_hook(hook, UNetLayerSite::Stage::Down, block_index, i, h);
        skips.push_back(h);
    }
    if (downsampler) {
        h = downsampler(h);
        skips.push_back(h);
    }
    return h;
}

UNetMidBlockImpl::UNetMidBlockImpl(const UNetBlockOptions& o) : options(o) {
    const int64_t ch = o.in_channels();
    resnets.push_back(make_resnet(o, ch, ch));
    for (int64_t i = 0; i < o.num_layers(); ++i) {
        attentions.push_back(make_transformer(o, ch));
        resnets.push_back(make_resnet(o, ch, ch));
    }
    register_list(*this, "attentions", attentions);
    register_list(*this, "resnets", resnets);
}

torch::Tensor UNetMidBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb,
                                        const torch::Tensor& encoder_hidden_states,
                                        const UNetLayerHook& hook) {
    // resnet, then (attention, [hook], resnet) per layer: AnimateDiff's mid motion module sits
    // between the attention and the following resnet.
    auto h = resnets[0](x, temb);
    for (size_t i = 0; i < attentions.size(); ++i) {
        h = attentions[i](h, encoder_hidden_states);
        h = apply_hook(hook, UNetLayerSite::Stage::Mid, 0, i, h);
        h = resnets[i + 1](h, temb);
    }
    return h;
}

UNetUpBlockImpl::UNetUpBlockImpl(const UNetBlockOptions& o) : options(o) {
    // Layer i takes the skip of matching depth: the last layer the block input's width
    // (in_channels), the others this block's own width.
    for (int64_t i = 0; i < o.num_layers(); ++i) {
        const int64_t skip = i == o.num_layers() - 1 ? o.in_channels() : o.out_channels();
        const int64_t in = i == 0 ? o.prev_output_channels() : o.out_channels();
        resnets.push_back(make_resnet(o, in + skip, o.out_channels()));
        if (o.cross_attention()) attentions.push_back(make_transformer(o, o.out_channels()));
    }
    register_list(*this, "resnets", resnets);
    if (o.cross_attention()) register_list(*this, "attentions", attentions);
    if (o.resample()) {
        upsampler = Upsample2D(Upsample2DOptions(o.out_channels()));
        register_list(*this, "upsamplers", std::vector<Upsample2D>{upsampler});
    }
}

torch::Tensor UNetUpBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& temb,
                                       const torch::Tensor& encoder_hidden_states,
                                       std::vector<torch::Tensor>& skips,
                                       const std::vector<int64_t>& upsample_size,
                                       const UNetLayerHook& hook, int64_t block_index) {
    auto h = x;
    for (size_t i = 0; i < resnets.size(); ++i) {
        if (skips.empty()) throw Error("UNet up block: ran out of skip connections");
        h = torch::cat({h, skips.back()}, 1);
        skips.pop_back();
        h = resnets[i](h, temb);
        if (!attentions.empty()) h = attentions[i](h, encoder_hidden_states);
        h = apply_hook(hook, UNetLayerSite::Stage::Up, block_index, i, h);
    }
    if (upsampler) h = upsampler(h, upsample_size);
    return h;
}

// --- the model ---

torch::Tensor timestep_embedding(const torch::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                                 double freq_shift, double max_period) {
    if (timesteps.dim() != 1) throw Error("timestep_embedding: timesteps must be 1-D");
    const int64_t half = dim / 2;
    auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(timesteps.device());
    auto exponent = torch::arange(half, opts) * static_cast<float>(-std::log(max_period));
    exponent = exponent / static_cast<float>(static_cast<double>(half) - freq_shift);
    auto args = timesteps.to(torch::kFloat32).unsqueeze(1) * torch::exp(exponent).unsqueeze(0);
    auto emb = flip_sin_to_cos ? torch::cat({torch::cos(args), torch::sin(args)}, -1)
                               : torch::cat({torch::sin(args), torch::cos(args)}, -1);
    if (dim % 2 == 1) emb = F::pad(emb, F::PadFuncOptions({0, 1}));
    return emb;
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNet2DConditionConfig& cfg) : config(cfg) {
    const auto& ch = cfg.block_out_channels;
    const int64_t n = static_cast<int64_t>(ch.size()), temb = cfg.time_embed_dim();
    auto time_embedding = register_module("time_embedding", std::make_shared<nn::Module>());
    time_linear_1 = time_embedding->register_module("linear_1", nn::Linear(ch[0], temb));
    time_linear_2 = time_embedding->register_module("linear_2", nn::Linear(temb, temb));
    conv_in = register_module(
        "conv_in", nn::Conv2d(nn::Conv2dOptions(cfg.in_channels, ch[0], cfg.conv_in_kernel)
                                  .padding((cfg.conv_in_kernel - 1) / 2)));
    auto block_options = [&](int64_t in, int64_t out, int64_t heads) {
        return UNetBlockOptions(in, out, temb)
            .heads(heads)
            .cross_attention_dim(cfg.cross_attention_dim)
            .transformer_layers(cfg.transformer_layers_per_block)
            .use_linear_projection(cfg.use_linear_projection)
            .spatial_positions(cfg.spatial_positions)
            .groups(cfg.norm_num_groups)
            .eps(cfg.norm_eps);
    };
    for (int64_t i = 0; i < n; ++i) {
        down_blocks.emplace_back(
            block_options(i == 0 ? ch[0] : ch[i - 1], ch[i], cfg.num_attention_heads[i])
                .num_layers(cfg.layers_per_block)
                .cross_attention(cfg.down_block_types[i] != "DownBlock2D")
                .resample(i < n - 1)
                .downsample_padding(cfg.downsample_padding));
    }
    register_list(*this, "down_blocks", down_blocks);
    mid_block = register_module(
        "mid_block",
        UNetMidBlock(block_options(ch[n - 1], ch[n - 1], cfg.num_attention_heads[n - 1])
                         .cross_attention(true)));
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = n - 1 - i;  // up block i mirrors down block r
        up_blocks.emplace_back(
            block_options(ch[std::max<int64_t>(r - 1, 0)], ch[r], cfg.num_attention_heads[r])
                .prev_output_channels(ch[std::min(r + 1, n - 1)])
                .num_layers(cfg.layers_per_block + 1)
                .cross_attention(cfg.up_block_types[i] != "UpBlock2D")
                .resample(i < n - 1));
    }
    register_list(*this, "up_blocks", up_blocks);
    conv_norm_out = register_module(
        "conv_norm_out",
        nn::GroupNorm(nn::GroupNormOptions(cfg.norm_num_groups, ch[0]).eps(cfg.norm_eps)));
    conv_out = register_module(
        "conv_out", nn::Conv2d(nn::Conv2dOptions(ch[0], cfg.out_channels, cfg.conv_out_kernel)
                                   .padding((cfg.conv_out_kernel - 1) / 2)));
}

torch::Tensor UNet2DConditionModelImpl::time_embedding(const torch::Tensor& timestep, int64_t batch,
                                                       torch::ScalarType dtype) {
    auto t = timestep.reshape({-1});
    if (t.size(0) == 1) t = t.expand({batch});
    if (t.size(0) != batch)
        throw Error("UNet2DConditionModel: " + std::to_string(t.size(0)) +
                    " timesteps for a batch of " + std::to_string(batch));
    auto emb = timestep_embedding(t, config.block_out_channels[0], config.flip_sin_to_cos,
                                  config.freq_shift)
                   .to(dtype);
    return time_linear_2(F::silu(time_linear_1(emb)));
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample,
                                                const torch::Tensor& timestep,
                                                const torch::Tensor& encoder_hidden_states,
                                                const UNetLayerHook& hook,
                                                const torch::Tensor& extra_time_embedding) {
    if (sample.dim() != 4 || sample.size(1) != config.in_channels)
        throw Error("UNet2DConditionModel: sample must be [B, " +
                    std::to_string(config.in_channels) + ", h, w]");
    // Sizes that are not a multiple of the total downscale: upsample to the skip's exact size.
    const int64_t factor = int64_t{1} << (down_blocks.size() - 1);
    const bool exact_sizes = sample.size(2) % factor != 0 || sample.size(3) % factor != 0;

    auto emb = time_embedding(timestep, sample.size(0), sample.scalar_type());
    if (extra_time_embedding.defined()) {
        if (extra_time_embedding.sizes() != emb.sizes())
            throw Error("UNet2DConditionModel: extra_time_embedding must be [" +
                        std::to_string(emb.size(0)) + ", " + std::to_string(emb.size(1)) + "]");
        emb = emb + extra_time_embedding;
    }
    auto h = config.center_input_sample ? 2 * sample - 1.0 : sample;
    h = conv_in(h);
    std::vector<torch::Tensor> skips{h};
    for (size_t i = 0; i < down_blocks.size(); ++i)
        h = down_blocks[i](h, emb, encoder_hidden_states, skips, hook, i);
    h = mid_block(h, emb, encoder_hidden_states, hook);
    for (size_t i = 0; i < up_blocks.size(); ++i) {
        std::vector<int64_t> size;
        const size_t used = up_blocks[i]->resnets.size();
        if (exact_sizes && i + 1 < up_blocks.size() && skips.size() > used)
            size = skips[skips.size() - used - 1].sizes().slice(2).vec();
        h = up_blocks[i](h, emb, encoder_hidden_states, skips, size, hook, i);
    }
    return conv_out(forward_group_norm(conv_norm_out, h, {}, true));
}

// --- loading ---

UNet2DConditionModel load_unet2d_condition_folder(const std::string& dir) {
    const fs::path root(dir);
    auto config = UNet2DConditionConfig::parse_file((root / "config.json").string());
    fs::path weights = root / "diffusion_pytorch_model.safetensors";
    if (!fs::exists(weights)) weights = root / "diffusion_pytorch_model.fp16.safetensors";
    if (!fs::exists(weights))
        throw Error(dir + ": no diffusion_pytorch_model.safetensors (or .fp16.safetensors)");
    auto tensors = load_safetensors(weights.string());
    // A clear message for another model's weights, rather than hundreds of missing keys.
    if (!tensors.count("time_embedding.linear_1.weight") || !tensors.count("conv_in.weight"))
        throw Error(weights.string() +
                    ": not a UNet2DConditionModel checkpoint (no time_embedding / conv_in "
                    "weights; first key: '" +
                    (tensors.empty() ? std::string() : tensors.begin()->first) + "')");
    UNet2DConditionModel unet(config);
    const auto report = load_state_dict(*unet, tensors, {}, weights.string());
    unet->eval();
    logger()->info("loaded UNet2DConditionModel from {} ({} tensors)", weights.string(),
                   report.loaded);
    return unet;
}

}  // namespace loopy::model
