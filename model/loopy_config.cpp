#include "model/loopy_config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"

namespace loopy::model {
using nlohmann::json;

namespace {

// runwayml/stable-diffusion-v1-5: unet/config.json and vae/config.json (the keys that matter).
const char* kSd15Unet = R"({
  "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                       "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
})";
const char* kSd15Vae = R"({
  "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D",
                       "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
  "out_channels": 3, "sample_size": 512, "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                     "UpDecoderBlock2D"]
})";
// facebook/wav2vec2-base-960h
const char* kWav2Vec2Base = R"({
  "model_type": "wav2vec2", "feat_extract_norm": "group", "feat_extract_activation": "gelu",
  "conv_dim": [512, 512, 512, 512, 512, 512, 512], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
  "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": false, "hidden_size": 768,
  "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "num_hidden_layers": 12,
  "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
  "layer_norm_eps": 1e-05, "do_stable_layer_norm": false
})";

// The CPU demo network: 128x128 frames, 16x16 latents, widths 16/32/32, one layer per block
// (about 60 MFLOP per frame for the spatial U-Net, 120 with the Loopy layers).
const char* kTinyUnet = R"({
  "_class_name": "UNet2DConditionModel", "attention_head_dim": 2,
  "block_out_channels": [16, 32, 32], "cross_attention_dim": 32,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "in_channels": 4, "layers_per_block": 1, "norm_num_groups": 8, "out_channels": 4,
  "sample_size": 16,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
})";
const char* kTinyVae = R"({
  "_class_name": "AutoencoderKL", "block_out_channels": [16, 32, 64, 64],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D",
                       "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 4,
  "out_channels": 3, "sample_size": 128, "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
                     "UpDecoderBlock2D"]
})";
const char* kTinyWav2Vec2 = R"({
  "model_type": "wav2vec2", "feat_extract_norm": "group",
  "conv_dim": [64, 64, 64, 64, 64, 64, 64], "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
  "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": false, "hidden_size": 64,
  "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "num_hidden_layers": 2,
  "num_attention_heads": 4, "intermediate_size": 128, "do_stable_layer_norm": false
})";

// Reads one JSON object strictly: every key must be known, every value of the right type.
class Reader {
  public:
    Reader(const json& object, std::string path) : j_(object), path_(std::move(path)) {
        if (!j_.is_object()) fail("", "must be a JSON object");
    }
    void integer(const char* key, int64_t& out, int64_t min = 1) {
        if (!take(key)) return;
        const json& v = j_[key];
        if (!v.is_number_integer() || v.get<int64_t>() < min)
            fail(key, "must be an integer >= " + std::to_string(min) + ", got " + v.dump());
        out = v.get<int64_t>();
    }
    void number(const char* key, double& out) {
        if (!take(key)) return;
        if (!j_[key].is_number()) fail(key, "must be a number, got " + j_[key].dump());
        out = j_[key].get<double>();
    }
    void boolean(const char* key, bool& out) {
        if (!take(key)) return;
        if (!j_[key].is_boolean()) fail(key, "must be true or false, got " + j_[key].dump());
        out = j_[key].get<bool>();
    }
    void string(const char* key, std::string& out) {
        if (!take(key)) return;
        if (!j_[key].is_string()) fail(key, "must be a string, got " + j_[key].dump());
        out = j_[key].get<std::string>();
    }
    void object(const char* key, json& out, bool required) {
        if (!take(key)) {
            if (required) fail(key, "is required");
            return;
        }
        if (!j_[key].is_object()) fail(key, "must be a JSON object");
        out = j_[key];
    }
    Reader section(const char* key) {
        take(key);
        static const json empty = json::object();
        return Reader(j_.contains(key) ? j_[key] : empty, path_ + key + ".");
    }
    // Throws for any key nobody asked for (a typo must not silently fall back to a default).
    void finish() const {
        for (const auto& item : j_.items())
            if (!seen_.count(item.key())) fail(item.key(), "is not a known key");
    }

  private:
    bool take(const char* key) {
        seen_.insert(key);
        return j_.contains(key) && !j_[key].is_null();
    }
    [[noreturn]] void fail(const std::string& key, const std::string& what) const {
        std::string name = path_ + key;
        if (!name.empty() && name.back() == '.') name.pop_back();
        throw Error("loopy config: " +
                    (name.empty() ? std::string("the config") : "'" + name + "'") + " " + what);
    }

    const json& j_;
    std::string path_;
    std::set<std::string> seen_;
};

void check(bool ok, const std::string& message) {
    if (!ok) throw Error("loopy config: " + message);
}

template <typename F>
auto parse_upstream(const char* key, F&& parse) {
    try {
        return parse();
    } catch (const Error& e) {
        throw Error(std::string("loopy config: '") + key + "': " + e.what());
    }
}

}  // namespace

LoopyConfig LoopyConfig::preset(const std::string& name) {
    LoopyConfig c;
    c.name = name;
    if (name == "sd15") {
        c.unet = json::parse(kSd15Unet);
        c.vae = json::parse(kSd15Vae);
        c.audio_encoder = json::parse(kWav2Vec2Base);
    } else if (name == "tiny") {
        c.resolution = 128;
        c.spatial_positions = true;
        c.reference_latent_input = true;
        c.unet = json::parse(kTinyUnet);
        c.vae = json::parse(kTinyVae);
        c.audio_encoder = json::parse(kTinyWav2Vec2);
        c.temporal.num_attention_heads = 2;
        c.temporal.double_self_attention = false;
        c.audio_projection.intermediate_dim = 128;
        c.audio_projection.context_tokens = 8;
        c.audio_projection.token_dim = 32;
        c.audio_attention.num_attention_heads = 2;
        c.audio_to_latents.embedding_dim = 32;
        c.audio_to_latents.attention_dim = 32;
    } else {
        throw Error("unknown Loopy configuration '" + name + "' (known: sd15, tiny)");
    }
    c.validate();
    return c;
}

LoopyConfig LoopyConfig::preset_or_file(const std::string& name_or_path) {
    const auto names = preset_names();
    if (std::find(names.begin(), names.end(), name_or_path) != names.end())
        return preset(name_or_path);
    std::ifstream in(name_or_path);
    if (!std::filesystem::is_regular_file(name_or_path) || !in) {
        std::string known;
        for (const auto& name : names)
            known += (known.empty() ? "" : ", ") + name;
        throw Error("'" + name_or_path + "' is neither a Loopy configuration (" + known +
                    ") nor a readable config file");
    }
    json j;
    try {
        j = json::parse(in);
    } catch (const std::exception& e) {  // json::exception, or a read error
        throw Error(name_or_path + ": not JSON (" + e.what() + ")");
    }
    return from_json(j);  // strict, and validated
}

std::vector<std::string> LoopyConfig::preset_names() {
    return {"sd15", "tiny"};
}

LoopyConfig LoopyConfig::from_json(const json& j) {
    LoopyConfig c;
    Reader r(j, "");
    r.string("name", c.name);
    r.integer("resolution", c.resolution);
    r.integer("num_frames", c.num_frames);
    r.integer("null_context_tokens", c.null_context_tokens);
    r.boolean("spatial_positions", c.spatial_positions);
    r.boolean("reference_latent_input", c.reference_latent_input);
    r.object("unet", c.unet, true);
    r.object("vae", c.vae, true);
    r.object("audio_encoder", c.audio_encoder, true);
    {
        auto t = r.section("temporal");
        t.integer("num_attention_heads", c.temporal.num_attention_heads);
        t.integer("num_layers", c.temporal.num_layers);
        t.integer("num_positional_embeddings", c.temporal.num_positional_embeddings);
        t.boolean("double_self_attention", c.temporal.double_self_attention);
        t.finish();
    }
    {
        auto t = r.section("temporal_segment");
        auto& o = c.temporal_segment;
        t.integer("stride", o.stride);
        t.number("expand_ratio", o.expand_ratio);
        t.integer("num_segments", o.num_segments);
        std::string sampling = to_string(o.sampling);
        t.string("sampling", sampling);
        o.sampling = parse_segment_sampling(sampling);
        t.finish();
    }
    {
        auto a = r.section("audio_projection");
        auto& o = c.audio_projection;
        a.integer("window", o.window, 0);
        a.integer("intermediate_dim", o.intermediate_dim);
        a.integer("context_tokens", o.context_tokens);
        a.integer("token_dim", o.token_dim);
        a.finish();
    }
    {
        auto a = r.section("audio_attention");
        a.integer("num_attention_heads", c.audio_attention.num_attention_heads);
        a.finish();
    }
    {
        auto a = r.section("audio_to_latents");
        auto& o = c.audio_to_latents;
        a.integer("num_embeddings", o.num_embeddings);
        a.integer("embedding_dim", o.embedding_dim);
        a.integer("attention_dim", o.attention_dim);
        a.integer("num_attention_heads", o.num_attention_heads);
        a.integer("head_variance_dim", o.head_variance_dim);
        a.integer("expression_variance_dim", o.expression_variance_dim);
        a.finish();
    }
    r.finish();
    c.validate();
    return c;
}

json LoopyConfig::to_json() const {
    const auto& s = temporal_segment;
    const auto& p = audio_projection;
    const auto& a = audio_to_latents;
    return json{
        {"name", name},
        {"resolution", resolution},
        {"num_frames", num_frames},
        {"null_context_tokens", null_context_tokens},
        {"spatial_positions", spatial_positions},
        {"reference_latent_input", reference_latent_input},
        {"unet", unet},
        {"vae", vae},
        {"audio_encoder", audio_encoder},
        {"temporal",
         {{"num_attention_heads", temporal.num_attention_heads},
          {"num_layers", temporal.num_layers},
          {"num_positional_embeddings", temporal.num_positional_embeddings},
          {"double_self_attention", temporal.double_self_attention}}},
        {"temporal_segment",
         {{"stride", s.stride},
          {"expand_ratio", s.expand_ratio},
          {"num_segments", s.num_segments},
          {"sampling", to_string(s.sampling)}}},
        {"audio_projection",
         {{"window", p.window},
          {"intermediate_dim", p.intermediate_dim},
          {"context_tokens", p.context_tokens},
          {"token_dim", p.token_dim}}},
        {"audio_attention", {{"num_attention_heads", audio_attention.num_attention_heads}}},
        {"audio_to_latents",
         {{"num_embeddings", a.num_embeddings},
          {"embedding_dim", a.embedding_dim},
          {"attention_dim", a.attention_dim},
          {"num_attention_heads", a.num_attention_heads},
          {"head_variance_dim", a.head_variance_dim},
          {"expression_variance_dim", a.expression_variance_dim}}},
    };
}

UNet2DConditionConfig LoopyConfig::unet_config() const {
    auto config = parse_upstream("unet", [&] { return UNet2DConditionConfig::parse(unet); });
    config.spatial_positions = spatial_positions;
    return config;
}

UNet2DConditionConfig LoopyConfig::denoising_unet_config() const {
    auto config = unet_config();
    if (reference_latent_input) config.in_channels *= 2;
    return config;
}

AutoencoderKLConfig LoopyConfig::vae_config() const {
    return parse_upstream("vae", [&] { return AutoencoderKLConfig::from_json(vae); });
}

Wav2Vec2Config LoopyConfig::audio_encoder_config() const {
    return parse_upstream("audio_encoder",
                          [&] { return Wav2Vec2Config::from_json(audio_encoder); });
}

void LoopyConfig::validate() const {
    const auto u = unet_config();
    const auto v = vae_config();
    audio_encoder_config();
    temporal_segment.validate();
    const int64_t factor = int64_t{1} << (v.block_out_channels.size() - 1);
    check(resolution > 0 && resolution % factor == 0,
          "resolution " + std::to_string(resolution) +
              " is not a multiple of the VAE's downscale " + std::to_string(factor));
    check(u.in_channels == v.latent_channels && u.out_channels == v.latent_channels,
          "the U-Net's in/out channels (" + std::to_string(u.in_channels) + "/" +
              std::to_string(u.out_channels) + ") must equal the VAE's latent_channels (" +
              std::to_string(v.latent_channels) + ")");
    check(num_frames > 0 && num_frames <= temporal.num_positional_embeddings,
          "num_frames " + std::to_string(num_frames) +
              " exceeds temporal.num_positional_embeddings " +
              std::to_string(temporal.num_positional_embeddings));
    for (int64_t ch : u.block_out_channels) {
        check(ch % temporal.num_attention_heads == 0,
              "U-Net width " + std::to_string(ch) +
                  " is not divisible by temporal.num_attention_heads " +
                  std::to_string(temporal.num_attention_heads));
        check(ch % audio_attention.num_attention_heads == 0,
              "U-Net width " + std::to_string(ch) +
                  " is not divisible by audio_attention.num_attention_heads " +
                  std::to_string(audio_attention.num_attention_heads));
        check(!spatial_positions || ch % 4 == 0,
              "spatial_positions needs U-Net widths that are multiples of 4, got " +
                  std::to_string(ch));
    }
    check(audio_to_latents.attention_dim % audio_to_latents.num_attention_heads == 0,
          "audio_to_latents.attention_dim must be divisible by its num_attention_heads");
}

int64_t LoopyConfig::latent_size() const {
    const auto v = vae_config();
    return resolution >> (v.block_out_channels.size() - 1);
}

int64_t LoopyConfig::motion_frames() const {
    return num_motion_frames(temporal_segment);
}

int64_t LoopyConfig::history_frames() const {
    return history_length(temporal_segment);
}

int64_t LoopyConfig::audio_layers() const {
    return audio_encoder_config().num_hidden_layers;
}

int64_t LoopyConfig::audio_channels() const {
    return audio_encoder_config().hidden_size;
}

int64_t LoopyConfig::time_embed_dim() const {
    return unet_config().time_embed_dim();
}

int64_t LoopyConfig::audio_window_frames() const {
    return 2 * audio_projection.window + 1;
}

}  // namespace loopy::model
