#include "model/loopy_unet.h"

#include <ATen/record_function.h>

#include <array>
#include <map>

#include "core/error.h"
#include "model/cpu_attention.h"
#include "model/cpu_dispatch.h"
#include "model/cpu_layer_norm.h"
#include "model/cpu_linear.h"
#include "model/temporal_tokens.h"

namespace loopy::model {
namespace nn = torch::nn;

// --- site bookkeeping ---

namespace {

using Stage = UNetLayerSite::Stage;

bool down_has_attention(const UNet2DConditionConfig& c, size_t i) {
    return c.down_block_types[i] != "DownBlock2D";
}
bool up_has_attention(const UNet2DConditionConfig& c, size_t i) {
    return c.up_block_types[i] != "UpBlock2D";
}

// Calls fn(site info, has_attention) for every layer site in call order.
template <typename Fn>
void for_each_site(const UNet2DConditionConfig& c, Fn&& fn) {
    const int64_t n = static_cast<int64_t>(c.block_out_channels.size());
    for (int64_t b = 0; b < n; ++b)
        for (int64_t l = 0; l < c.layers_per_block; ++l)
            fn(LayerSiteInfo{{Stage::Down, b, l}, c.block_out_channels[b], b},
               down_has_attention(c, b));
    fn(LayerSiteInfo{{Stage::Mid, 0, 0}, c.block_out_channels[n - 1], n - 1}, true);
    for (int64_t b = 0; b < n; ++b)
        for (int64_t l = 0; l <= c.layers_per_block; ++l)
            fn(LayerSiteInfo{{Stage::Up, b, l}, c.block_out_channels[n - 1 - b], n - 1 - b},
               up_has_attention(c, b));
}

int64_t size_at_level(int64_t size, int64_t level) {
    for (int64_t i = 0; i < level; ++i)
        size = (size + 1) / 2;  // stride-2 conv with padding 1 rounds up
    return size;
}

// Clears the reference-attention hooks it was given when it goes out of scope (also on throw).
class KeyValueHooks {
  public:
    explicit KeyValueHooks(std::vector<BasicTransformerBlock> blocks)
        : blocks_(std::move(blocks)) {}
    ~KeyValueHooks() {
        for (auto& b : blocks_)
            b->self_attention_kv = nullptr;
    }
    KeyValueHooks(const KeyValueHooks&) = delete;
    KeyValueHooks& operator=(const KeyValueHooks&) = delete;
    std::vector<BasicTransformerBlock>& blocks() { return blocks_; }

  private:
    std::vector<BasicTransformerBlock> blocks_;
};

// softmax(q k^T / sqrt(d) + mask) v through `attn`'s projections; key_mask bool [N, Lk]
// (undefined: no mask). Every row must keep at least one key. Plus `residual` when defined.
torch::Tensor masked_attention(AttentionImpl& attn, const torch::Tensor& x,
                               const torch::Tensor& context, const torch::Tensor& key_mask,
                               const torch::Tensor& residual) {
    auto q = attn.split_heads(forward_linear(attn.to_q, x));
    auto k = attn.split_heads(forward_linear(attn.to_k, context));
    auto v = attn.split_heads(forward_linear(attn.to_v, context));
    return attn.project_out(attention_product(q, k, v, key_mask), residual);
}

// masked_attention over the keys [memory ; x] when the memory's keys and values are given,
// [MB*s, heads, M, d] with MB = `batch` or 1 (shared by every item: KeyValueParts reads row
// r mod s for row r = item*s + position); x [batch*s, L, dim].
torch::Tensor attention_with_memory(AttentionImpl& attn, const torch::Tensor& x,
                                    const torch::Tensor& memory_keys,
                                    const torch::Tensor& memory_values,
                                    const torch::Tensor& key_mask, const torch::Tensor& residual) {
    const auto [q, k, v] = attn.self_projections(x);
    const KeyValueParts parts{{memory_keys, k}, {memory_values, v}};
    return attn.project_out(attention_product(q, parts, key_mask), residual);
}

// bool [B] from an optional per-item flag.
torch::Tensor item_flag(const torch::Tensor& flag, int64_t batch, const torch::Device& device,
                        const char* name) {
    if (!flag.defined())
        return torch::zeros({batch}, torch::TensorOptions(device).dtype(torch::kBool));
    if (flag.numel() != batch)
        throw Error(std::string("Loopy U-Net: drop.") + name +
                    " must have one flag per batch item (" + std::to_string(batch) + "), got " +
                    c10::str(flag.sizes()));
    return flag.reshape({batch}).to(device).to(torch::kBool);
}

// [B or 1, ...] -> [B, ...] (a view when it broadcasts).
torch::Tensor batch_to(const torch::Tensor& t, int64_t batch, const std::string& what) {
    if (t.size(0) == batch) return t;
    if (t.size(0) != 1)
        throw Error("Loopy U-Net: " + what + " has batch " + std::to_string(t.size(0)) +
                    ", expected " + std::to_string(batch) + " or 1");
    auto shape = t.sizes().vec();
    shape[0] = batch;
    return t.expand(shape);
}

}  // namespace

std::vector<LayerSiteInfo> unet_layer_sites(const UNet2DConditionConfig& config) {
    std::vector<LayerSiteInfo> out;
    for_each_site(config, [&](const LayerSiteInfo& info, bool) { out.push_back(info); });
    return out;
}

std::vector<LayerSiteInfo> unet_attention_layers(const UNet2DConditionConfig& config) {
    std::vector<LayerSiteInfo> out;
    for_each_site(config, [&](const LayerSiteInfo& info, bool attention) {
        if (!attention) return;
        for (int64_t i = 0; i < config.transformer_layers_per_block; ++i)
            out.push_back(info);
    });
    return out;
}

std::vector<BasicTransformerBlock> spatial_transformer_blocks(UNet2DConditionModelImpl& unet) {
    std::vector<BasicTransformerBlock> out;
    auto add = [&](const std::vector<Transformer2DModel>& attentions) {
        for (const auto& a : attentions)
            out.insert(out.end(), a->blocks.begin(), a->blocks.end());
    };
    for (auto& b : unet.down_blocks)
        add(b->attentions);
    add(unet.mid_block->attentions);
    for (auto& b : unet.up_blocks)
        add(b->attentions);
    return out;
}

BankShapes bank_shapes(const UNet2DConditionConfig& config, int64_t batch, int64_t motion_frames,
                       int64_t latent_h, int64_t latent_w) {
    BankShapes shapes;
    for (const auto& s : unet_attention_layers(config)) {
        const int64_t h = size_at_level(latent_h, s.level), w = size_at_level(latent_w, s.level);
        shapes.reference.push_back({batch, h * w, s.channels});
    }
    for (const auto& s : unet_layer_sites(config))
        shapes.motion.push_back({batch, motion_frames, s.channels, size_at_level(latent_h, s.level),
                                 size_at_level(latent_w, s.level)});
    return shapes;
}

// --- InterClipTemporalLayer ---

InterClipTemporalLayerImpl::InterClipTemporalLayerImpl(const TransformerTemporalModelOptions& o,
                                                       int64_t motion_positions_)
    : options(o), motion_positions(motion_positions_) {
    const int64_t in = o.in_channels(), inner = o.heads() * o.dim_head();
    norm = register_module("norm",
                           nn::GroupNorm(nn::GroupNormOptions(o.norm_num_groups(), in).eps(1e-6)));
    proj_in = register_module("proj_in", nn::Linear(in, inner));
    auto list = register_module("transformer_blocks", nn::ModuleList());
    for (int64_t i = 0; i < o.num_layers(); ++i) {
        blocks.emplace_back(
            BasicTransformerBlockOptions(inner, o.heads(), o.dim_head())
                .double_self_attention(o.double_self_attention())
                .num_positional_embeddings(motion_positions + o.num_positional_embeddings()));
        list->push_back(blocks.back());
    }
    proj_out = register_module("proj_out", nn::Linear(inner, in));
    type_embedding = register_parameter("type_embedding", torch::randn({2, inner}) * 0.02);
    torch::NoGradGuard no_grad;
    proj_out->weight.zero_();
    proj_out->bias.zero_();
}

torch::Tensor InterClipTemporalLayerImpl::block_forward(BasicTransformerBlockImpl& block,
                                                        const torch::Tensor& clip,
                                                        const torch::Tensor& memory,
                                                        const torch::Tensor& key_mask) {
    const int64_t m = memory.defined() ? memory.size(1) : 0;
    auto position = [&](const torch::Tensor& t, int64_t start) {
        return block.pos_embed ? t + block.pos_embed->pe.narrow(1, start, t.size(1)) : t;
    };
    // Each attention's output plus `residual`, added in its out-projection. Both attentions
    // read the clip's tokens (a second one reads them, not the first one's output, as this
    // layer always has: checkpoints with two were trained so).
    auto attend = [&](nn::LayerNorm& norm_layer, Attention& attn, const torch::Tensor& residual) {
        auto q = position(forward_layer_norm(norm_layer, clip), motion_positions);
        if (!memory.defined()) return attn->forward(q, {}, residual);
        auto kv = torch::cat(
            {position(forward_layer_norm(norm_layer, memory), motion_positions - m), q}, 1);
        return masked_attention(*attn, q, kv, key_mask, residual);
    };
    auto h = attend(block.norm1, block.attn1, clip);
    if (block.attn2) h = attend(block.norm2, block.attn2, h);
    return block.feed_forward_residual(h);
}

torch::Tensor InterClipTemporalLayerImpl::prepared_block_forward(
    BasicTransformerBlockImpl& block, const torch::Tensor& clip, int64_t batch,
    const MotionKeyValues& prepared, size_t& next, const torch::Tensor& key_mask) {
    auto attend = [&](nn::LayerNorm& norm_layer, Attention& attn, const torch::Tensor& residual) {
        auto q = forward_layer_norm(norm_layer, clip);  // both read the clip (block_forward)
        if (block.pos_embed) q = q + block.pos_embed->pe.narrow(1, motion_positions, q.size(1));
        if (next >= prepared.keys.size())
            throw Error("InterClipTemporalLayer: prepared motion has too few attentions");
        const size_t i = next++;
        return attention_with_memory(*attn, q, prepared.keys[i], prepared.values[i], key_mask,
                                     residual);
    };
    auto h = attend(block.norm1, block.attn1, clip);
    if (block.attn2) h = attend(block.norm2, block.attn2, h);
    return block.feed_forward_residual(h);
}

torch::Tensor InterClipTemporalLayerImpl::typed_tokens(const torch::Tensor& tokens, int64_t type) {
    // The type embedding joins proj_in's bias: one add of C floats, not a pass over the tokens.
    const auto& bias = proj_in->bias;
    const auto embedding = type_embedding[type];
    return forward_linear(proj_in->weight, bias.defined() ? bias + embedding : embedding, tokens);
}

torch::Tensor InterClipTemporalLayerImpl::memory_tokens(const torch::Tensor& motion, int64_t b,
                                                        int64_t c, int64_t height, int64_t width) {
    const int64_t mb = motion.size(0), m = motion.size(1), s = height * width;
    if (motion.dim() != 5 || motion.size(2) != c || motion.size(3) != height ||
        motion.size(4) != width || m > motion_positions || (mb != b && mb != 1))
        throw Error("InterClipTemporalLayer: motion features must be [" + std::to_string(b) +
                    " or 1, <= " + std::to_string(motion_positions) + ", " + std::to_string(c) +
                    ", " + std::to_string(height) + ", " + std::to_string(width) + "], got " +
                    c10::str(motion.sizes()));
    // Per-frame statistics: missing (zero) history frames must not shift the others'.
    auto mem = norm(motion.reshape({mb * m, c, height, width}));
    mem = mem.reshape({mb, m, c, height, width}).permute({0, 3, 4, 1, 2}).reshape({mb * s, m, c});
    return typed_tokens(mem, 0);
}

MotionKeyValues InterClipTemporalLayerImpl::prepare(const torch::Tensor& motion) {
    if (motion.dim() != 5) throw Error("InterClipTemporalLayer: motion must be [B, M, C, h, w]");
    const auto memory =
        memory_tokens(motion, motion.size(0), motion.size(2), motion.size(3), motion.size(4));
    const int64_t m = motion.size(1);
    MotionKeyValues out;
    for (auto& block : blocks) {
        auto add = [&](nn::LayerNorm& norm_layer, Attention& attn) {
            auto normed = forward_layer_norm(norm_layer, memory);
            if (block->pos_embed)
                normed = normed + block->pos_embed->pe.narrow(1, motion_positions - m, m);
            out.keys.push_back(attn->split_heads(forward_linear(attn->to_k, normed)).contiguous());
            out.values.push_back(
                attn->split_heads(forward_linear(attn->to_v, normed)).contiguous());
        };
        add(block->norm1, block->attn1);
        if (block->attn2) add(block->norm2, block->attn2);
    }
    return out;
}

torch::Tensor InterClipTemporalLayerImpl::forward(const torch::Tensor& x, int64_t num_frames,
                                                  const torch::Tensor& motion,
                                                  const torch::Tensor& mask,
                                                  const MotionKeyValues* prepared) {
    const int64_t bf = x.size(0), c = x.size(1), height = x.size(2), width = x.size(3);
    if (num_frames <= 0 || bf % num_frames != 0 || num_frames > options.num_positional_embeddings())
        throw Error("InterClipTemporalLayer: " + std::to_string(num_frames) +
                    " frames for a batch of " + std::to_string(bf) + " (at most " +
                    std::to_string(options.num_positional_embeddings()) + " frames)");
    const int64_t b = bf / num_frames, s = height * width, inner = proj_in->options.out_features();
    auto clip = typed_tokens(normalised_tokens(norm, x, num_frames), 1);

    torch::Tensor memory, key_mask;
    const bool any_present = motion.defined() && (!mask.defined() || mask.any().item<bool>());
    if (any_present) {
        const int64_t mb = motion.size(0), m = motion.size(1);
        if (!prepared) {
            memory = memory_tokens(motion, b, c, height, width);
            if (mb != b)
                memory = memory.view({1, s, m, inner})
                             .expand({b, s, m, inner})
                             .reshape({b * s, m, inner});
        }
        if (mask.defined()) {
            auto km = batch_to(mask.to(torch::kBool).view({-1, m}), b, "motion mask");
            km = km.view({b, 1, m}).expand({b, s, m}).reshape({b * s, m});
            key_mask = torch::cat({km, torch::ones({b * s, num_frames}, km.options())}, 1);
        }
    }
    size_t next = 0;
    for (auto& block : blocks)
        clip = any_present && prepared
                   ? prepared_block_forward(*block, clip, b, *prepared, next, key_mask)
                   : block_forward(*block, clip, memory, key_mask);
    return add_tokens_to_frames(x, forward_linear(proj_out, clip), num_frames);
}

// --- AudioAttention ---

AudioAttentionImpl::AudioAttentionImpl(int64_t channels, int64_t heads, int64_t audio_dim) {
    norm = register_module("norm", nn::LayerNorm(nn::LayerNormOptions({channels})));
    attn = register_module(
        "attn",
        Attention(
            AttentionOptions(channels, heads, channels / heads).cross_attention_dim(audio_dim)));
    torch::NoGradGuard no_grad;
    attn->out_proj->weight.zero_();
    attn->out_proj->bias.zero_();
}

torch::Tensor AudioAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& tokens) {
    const int64_t bf = x.size(0), c = x.size(1), height = x.size(2), width = x.size(3);
    auto t = x.permute({0, 2, 3, 1}).reshape({bf, height * width, c});
    auto out = attn(forward_layer_norm(norm, t), tokens);
    return out.reshape({bf, height, width, c}).permute({0, 3, 1, 2});
}

// --- ReferenceNet ---

ReferenceNetImpl::ReferenceNetImpl(const LoopyConfig& loopy)
    : UNet2DConditionModelImpl(loopy.unet_config()) {
    null_context = register_parameter(
        "null_context", torch::zeros({1, loopy.null_context_tokens, config.cross_attention_dim}));
}

ReferenceNetImpl::Features ReferenceNetImpl::encode(const torch::Tensor& latents,
                                                    bool attention_inputs, bool want_sites) {
    Features out;
    KeyValueHooks hooks(spatial_transformer_blocks(*this));
    if (attention_inputs) {
        out.attention_inputs.resize(hooks.blocks().size());
        for (size_t i = 0; i < hooks.blocks().size(); ++i)
            hooks.blocks()[i]->self_attention_kv = [&out, i](const torch::Tensor& normed) {
                out.attention_inputs[i] = normed;
                return BasicTransformerBlockImpl::ExtraKeyValues{};  // plain self-attention
            };
    }
    UNetLayerHook hook;
    if (want_sites)
        hook = [&out](const UNetLayerSite&, const torch::Tensor& h) {
            out.sites.push_back(h);
            return h;
        };
    const int64_t n = latents.size(0);
    auto timestep = torch::zeros({n}, latents.options().dtype(torch::kLong));
    auto context = null_context.expand({n, null_context.size(1), null_context.size(2)});
    UNet2DConditionModelImpl::forward(latents, timestep, context, hook);
    return out;
}

ReferenceBank ReferenceNetImpl::encode_reference(const torch::Tensor& latent) {
    if (latent.dim() != 4) throw Error("ReferenceNet: reference latent must be [B, C, h, w]");
    return {encode(latent, true, false).attention_inputs, latent};
}

std::vector<torch::Tensor> ReferenceNetImpl::encode_padded(const torch::Tensor& frames) {
    static const EnvironmentSwitch padding{"LOOPY_MOTION_BATCH_PADDING"};
    const int64_t multiple = motion_batch_multiple > 0          ? motion_batch_multiple
                             : frames.is_cpu() || !padding.on() ? 1
                                                                : 4;
    const int64_t n = frames.size(0), padded = (n + multiple - 1) / multiple * multiple;
    if (padded == n) return encode(frames, false, true).sites;
    const auto last = frames.narrow(0, n - 1, 1);
    auto sites =
        encode(torch::cat({frames, last.expand({padded - n, -1, -1, -1})}, 0), false, true).sites;
    for (auto& site : sites)
        site = site.narrow(0, 0, n);
    return sites;
}

MotionBank ReferenceNetImpl::encode_motion(const torch::Tensor& latents,
                                           const torch::Tensor& mask) {
    if (latents.dim() != 5) throw Error("ReferenceNet: motion latents must be [B, M, C, h, w]");
    const int64_t b = latents.size(0), m = latents.size(1);
    auto flat = latents.reshape({b * m, latents.size(2), latents.size(3), latents.size(4)});
    MotionBank bank;
    if (mask.defined()) {
        if (mask.numel() != b * m) throw Error("ReferenceNet: motion mask must be [B, M]");
        bank.mask = mask.reshape({b, m}).to(torch::kBool);
    }
    auto index =
        bank.mask.defined() ? bank.mask.reshape({-1}).nonzero().reshape({-1}) : torch::Tensor();
    if (index.defined() && index.numel() == b * m) index = torch::Tensor();  // all present
    std::vector<torch::Tensor> sites;
    if (!index.defined() || index.numel() > 0)
        sites = encode_padded(index.defined() ? flat.index_select(0, index) : flat);
    const auto shapes =
        bank_shapes(config, b, m, latents.size(3), latents.size(4)).motion;  // [B, M, C, h, w]
    for (size_t s = 0; s < shapes.size(); ++s) {
        torch::Tensor full;
        if (!index.defined()) {
            full = sites[s];
        } else {
            // The sites' dtype: under autocast they may be narrower than the latents.
            full = torch::zeros({b * m, shapes[s][2], shapes[s][3], shapes[s][4]},
                                (sites.empty() ? latents : sites[s]).options());
            if (index.numel() > 0) full = full.index_copy(0, index, sites[s]);
        }
        bank.sites.push_back(full.reshape(shapes[s]));
    }
    return bank;
}

// --- LoopyDenoisingUNet ---

LoopyDenoisingUNetImpl::LoopyDenoisingUNetImpl(const LoopyConfig& loopy)
    : UNet2DConditionModelImpl(loopy.denoising_unet_config()),
      reference_latent_input(loopy.reference_latent_input) {
    null_context = register_parameter(
        "null_context", torch::zeros({1, loopy.null_context_tokens, config.cross_attention_dim}));
    const auto& t = loopy.temporal;
    std::map<std::pair<int, int64_t>, std::array<nn::ModuleList, 3>> lists;
    for (const auto& info : unet_layer_sites(config)) {
        const int64_t ch = info.channels, heads = t.num_attention_heads;
        auto topts = TransformerTemporalModelOptions(ch, heads, ch / heads)
                         .num_layers(t.num_layers)
                         .norm_num_groups(config.norm_num_groups)
                         .num_positional_embeddings(t.num_positional_embeddings)
                         .double_self_attention(t.double_self_attention);
        Site site;
        site.inter_clip = InterClipTemporalLayer(topts, loopy.motion_frames());
        site.audio = AudioAttention(ch, loopy.audio_attention.num_attention_heads,
                                    loopy.audio_projection.token_dim);
        site.intra_clip = TransformerTemporalModel(topts);
        {
            torch::NoGradGuard no_grad;  // a new temporal layer starts as the identity
            site.intra_clip->proj_out->weight.zero_();
            site.intra_clip->proj_out->bias.zero_();
        }
        const auto& s = info.site;
        const std::pair<int, int64_t> key{static_cast<int>(s.stage), s.block};
        if (!lists.count(key)) {
            nn::Module& parent =
                s.stage == Stage::Down  ? static_cast<nn::Module&>(*down_blocks[s.block])
                : s.stage == Stage::Mid ? static_cast<nn::Module&>(*mid_block)
                                        : static_cast<nn::Module&>(*up_blocks[s.block]);
            lists[key] = {parent.register_module("inter_clip_temporal", nn::ModuleList()),
                          parent.register_module("audio_attentions", nn::ModuleList()),
                          parent.register_module("motion_modules", nn::ModuleList())};
            if (s.stage == Stage::Down) down_offsets_.push_back(sites.size());
            if (s.stage == Stage::Mid) mid_offset_ = sites.size();
            if (s.stage == Stage::Up) up_offsets_.push_back(sites.size());
        }
        lists[key][0]->push_back(site.inter_clip);
        lists[key][1]->push_back(site.audio);
        lists[key][2]->push_back(site.intra_clip);
        sites.push_back(site);
    }
}

MotionBank LoopyDenoisingUNetImpl::prepare_motion(const MotionBank& bank) {
    if (bank.sites.size() != sites.size())
        throw Error("Loopy U-Net: the motion bank has " + std::to_string(bank.sites.size()) +
                    " sites, the network " + std::to_string(sites.size()));
    MotionBank out = bank;
    out.prepared.clear();
    for (size_t i = 0; i < sites.size(); ++i)
        out.prepared.push_back(sites[i].inter_clip->prepare(bank.sites[i]));
    return out;
}

size_t LoopyDenoisingUNetImpl::site_index(const UNetLayerSite& s) const {
    const size_t base = s.stage == Stage::Down  ? down_offsets_.at(s.block)
                        : s.stage == Stage::Mid ? mid_offset_
                                                : up_offsets_.at(s.block);
    return base + static_cast<size_t>(s.layer);
}

namespace {

// [B, ...] -> [B*F, ...], each item repeated for its F frames.
torch::Tensor per_frame(const torch::Tensor& t, int64_t frames) {
    return t.repeat_interleave(frames, 0);
}

// The audio-to-latents motion latent as [B*F, time_embed_dim], zero for items whose audio is
// dropped; undefined when there is none.
torch::Tensor frame_motion_latent(const torch::Tensor& latent, const torch::Tensor& drop_audio,
                                  int64_t b, int64_t f, int64_t width) {
    if (!latent.defined()) return {};
    if (latent.dim() != 3 || latent.size(0) != b || (latent.size(1) != f && latent.size(1) != 1) ||
        latent.size(2) != width)
        throw Error("Loopy U-Net: motion_latent must be [" + std::to_string(b) + ", " +
                    std::to_string(f) + " or 1, " + std::to_string(width) + "], got " +
                    c10::str(latent.sizes()));
    auto keep = drop_audio.logical_not().to(latent.dtype()).view({b, 1, 1});
    return (latent.expand({b, f, width}) * keep).reshape({b * f, width});
}

// Sets every spatial self-attention's keys/values to [own tokens ; reference tokens]. The
// reference tokens' keys and values are projected once per U-Net pass and shared by the frames
// (a bank of batch 1: by every item); items whose reference is dropped leave them out.
void install_reference_attention(std::vector<BasicTransformerBlock>& blocks,
                                 const ReferenceBank& bank, const torch::Tensor& drop, int64_t b,
                                 int64_t f) {
    if (bank.layers.size() != blocks.size())
        throw Error("Loopy U-Net: the reference bank has " + std::to_string(bank.layers.size()) +
                    " layers, the network " + std::to_string(blocks.size()) +
                    " spatial self-attentions");
    const auto item_mask =
        drop.any().item<bool>() ? per_frame(drop.logical_not(), f) : torch::Tensor();
    for (size_t i = 0; i < blocks.size(); ++i) {
        const auto& layer = bank.layers[i];
        if (layer.dim() != 3 || layer.size(2) != blocks[i]->options.dim())
            throw Error("Loopy U-Net: reference bank layer " + std::to_string(i) +
                        " must be [B, L, " + std::to_string(blocks[i]->options.dim()) + "], got " +
                        c10::str(layer.sizes()));
        // [1, L, C] serves every frame as it is; [B, L, C] becomes one row per frame.
        auto ref = layer.size(0) == 1 ? layer : per_frame(batch_to(layer, b, "reference bank"), f);
        auto* attn = blocks[i]->attn1.get();
        blocks[i]->self_attention_kv = [ref, item_mask, attn, i](const torch::Tensor& own) {
            if (own.size(1) != ref.size(1))
                throw Error("Loopy U-Net: reference bank layer " + std::to_string(i) + " has " +
                            std::to_string(ref.size(1)) + " tokens, the clip " +
                            std::to_string(own.size(1)) +
                            " (the reference latent must have the clip's size)");
            return BasicTransformerBlockImpl::ExtraKeyValues{
                attn->split_heads(forward_linear(attn->to_k, ref)),
                attn->split_heads(forward_linear(attn->to_v, ref)), item_mask};
        };
    }
}

}  // namespace

namespace {

// [B] (or one value) -> [B*F].
torch::Tensor frame_timesteps(const torch::Tensor& timestep, int64_t b, int64_t f,
                              const torch::Device& device) {
    auto t = timestep.reshape({-1}).to(device);
    if (t.size(0) == 1) t = t.expand({b});
    if (t.size(0) != b)
        throw Error("Loopy U-Net: " + std::to_string(t.size(0)) + " timesteps for a batch of " +
                    std::to_string(b));
    return per_frame(t, f);
}

// The motion frames each item may attend to, bool [B, M]; undefined when no item has any.
torch::Tensor motion_key_mask(const MotionBank& motion, size_t sites, const torch::Tensor& drop,
                              int64_t b) {
    if (motion.empty()) return {};
    if (motion.sites.size() != sites)
        throw Error("Loopy U-Net: the motion bank has " + std::to_string(motion.sites.size()) +
                    " sites, the network " + std::to_string(sites));
    const int64_t m = motion.sites[0].size(1);
    auto mask = motion.mask.defined()
                    ? batch_to(motion.mask.to(drop.device()).to(torch::kBool).view({-1, m}), b,
                               "motion mask")
                    : torch::ones({b, m}, drop.options());
    mask = mask & drop.logical_not().view({b, 1});
    return mask.any().item<bool>() ? mask : torch::Tensor();
}

struct FrameAudio {
    torch::Tensor tokens;  // [K*F, N, D] of the K items that keep their audio; undefined: none do
    torch::Tensor rows;    // long [K*F]: their rows of the B*F batch; undefined: all items
};

// A dropped item's audio attention output would be multiplied by zero, so only the items that
// keep their audio run it (one of the three guidance passes).
FrameAudio frame_audio(const torch::Tensor& tokens, const torch::Tensor& drop, int64_t b,
                       int64_t f) {
    if (!tokens.defined() || drop.all().item<bool>()) return {};
    if (tokens.dim() != 4 || tokens.size(1) != f)
        throw Error("Loopy U-Net: audio_tokens must be [B, " + std::to_string(f) + ", N, D], got " +
                    c10::str(tokens.sizes()));
    const int64_t n = tokens.size(2), d = tokens.size(3);
    const auto all = batch_to(tokens, b, "audio_tokens");
    if (!drop.any().item<bool>()) return {all.reshape({b * f, n, d}), {}};
    const auto items = drop.logical_not().nonzero().reshape({-1});
    const auto frames = torch::arange(f, items.options()).view({1, f});
    return {all.index_select(0, items).reshape({-1, n, d}),
            (items.view({-1, 1}) * f + frames).reshape({-1})};
}

}  // namespace

// [B*F, C, h, w] -> [B*F, 2C, h, w]: every frame gets its item's reference latent, zero where
// the reference is dropped or missing (as in training's reference drop).
torch::Tensor LoopyDenoisingUNetImpl::with_reference_latent(const torch::Tensor& sample,
                                                            const ReferenceBank& reference,
                                                            const torch::Tensor& drop_ref,
                                                            int64_t num_frames) const {
    const int64_t b = drop_ref.size(0);
    auto ref = torch::zeros({b, sample.size(1), sample.size(2), sample.size(3)}, sample.options());
    if (!reference.empty()) {
        if (!reference.latent.defined())
            throw Error(
                "Loopy U-Net: this network takes the reference latent as input "
                "(reference_latent_input), but the reference bank has none");
        auto latent = batch_to(reference.latent.to(sample.dtype()), b, "reference latent");
        if (!latent.sizes().slice(1).equals(ref.sizes().slice(1)))
            throw Error("Loopy U-Net: reference latent " + c10::str(reference.latent.sizes()) +
                        " does not match the clip latents " + c10::str(sample.sizes()));
        ref = latent * (~drop_ref).to(sample.dtype()).view({b, 1, 1, 1});
    }
    ref = ref.unsqueeze(1).expand({b, num_frames, ref.size(1), ref.size(2), ref.size(3)});
    return torch::cat({sample, ref.reshape(sample.sizes())}, 1);
}

torch::Tensor LoopyDenoisingUNetImpl::forward(const DenoiseInputs& in) {
    RECORD_USER_SCOPE("loopy::denoising_unet");  // `loopy bench render --profile` reads these
    const auto& x = in.latents;
    if (!x.defined() || x.dim() != 5 || x.size(2) != config.out_channels)
        throw Error("Loopy U-Net: latents must be [B, F, " + std::to_string(config.out_channels) +
                    ", h, w]" + (x.defined() ? ", got " + c10::str(x.sizes()) : ""));
    const int64_t b = x.size(0), f = x.size(1);
    const auto drop_ref = item_flag(in.drop.reference, b, x.device(), "reference");
    const auto drop_audio = item_flag(in.drop.audio, b, x.device(), "audio");
    const auto drop_motion = item_flag(in.drop.motion, b, x.device(), "motion") | drop_ref;

    auto context = in.context.defined()
                       ? per_frame(batch_to(in.context, b, "context"), f)
                       : null_context.expand({b * f, null_context.size(1), null_context.size(2)});
    auto extra = frame_motion_latent(in.motion_latent, drop_audio, b, f, config.time_embed_dim());
    const bool any_reference = !in.reference.empty() && !drop_ref.all().item<bool>();
    KeyValueHooks hooks(any_reference ? spatial_transformer_blocks(*this)
                                      : std::vector<BasicTransformerBlock>{});
    if (any_reference) install_reference_attention(hooks.blocks(), in.reference, drop_ref, b, f);
    const auto motion_mask = motion_key_mask(in.motion, sites.size(), drop_motion, b);
    const auto audio = frame_audio(in.audio_tokens, drop_audio, b, f);

    // After every layer: inter-clip temporal, + audio attention, intra-clip temporal.
    auto hook = [&](const UNetLayerSite& where, const torch::Tensor& h) {
        const size_t i = site_index(where);
        auto& site = sites[i];
        torch::Tensor out;
        {
            RECORD_USER_SCOPE("loopy::inter_clip_temporal");
            const bool with_motion = motion_mask.defined();
            const bool prepared = with_motion && !in.motion.prepared.empty();
            out = site.inter_clip(h, f, with_motion ? in.motion.sites[i] : torch::Tensor(),
                                  motion_mask, prepared ? &in.motion.prepared.at(i) : nullptr);
        }
        if (audio.tokens.defined()) {
            RECORD_USER_SCOPE("loopy::audio_attention");
            out = audio.rows.defined()
                      ? out.index_add(0, audio.rows,
                                      site.audio(out.index_select(0, audio.rows), audio.tokens))
                      : out + site.audio(out, audio.tokens);
        }
        RECORD_USER_SCOPE("loopy::intra_clip_temporal");
        return site.intra_clip(out, f);
    };
    auto sample = x.reshape({b * f, x.size(2), x.size(3), x.size(4)});
    if (reference_latent_input) sample = with_reference_latent(sample, in.reference, drop_ref, f);
    auto out = UNet2DConditionModelImpl::forward(
        sample, frame_timesteps(in.timestep, b, f, x.device()), context, hook, extra);
    return out.reshape({b, f, out.size(1), out.size(2), out.size(3)});
}

}  // namespace loopy::model
