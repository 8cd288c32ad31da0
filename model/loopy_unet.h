#pragma once
// Loopy's two U-Nets, built on the SD UNet2DConditionModel (same module names, so SD weights
// load by key) and its per-layer hooks:
//
// - ReferenceNet: the spatial U-Net run at timestep 0 on the reference latent (its spatial
//   self-attention inputs form the "reference bank") and on the motion-frame latents (its
//   features after every layer form the "motion bank").
// - LoopyDenoisingUNet: per frame the SD U-Net with reference attention in every spatial
//   self-attention; after every layer (resnet + spatial transformer) an inter-clip temporal layer
//   over [motion frames ; clip frames], an audio cross-attention whose output is added to it and
//   an intra-clip temporal layer over the clip. See docs/architecture.md.
//
// Neither network has text: SD's spatial cross-attention (attn2) attends to a learned
// `null_context` instead (zero at conversion; see the docs for why it is kept).
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "model/attention.h"
#include "model/loopy_config.h"
#include "model/transformer_temporal.h"
#include "model/unet2d_condition.h"

namespace loopy::model {

// --- where the banks come from ---

// A layer site (UNetLayerHook) with the feature width there and its downscale level (0: the
// latent's size, each level halves it, rounding up).
struct LayerSiteInfo {
    UNetLayerSite site;
    int64_t channels = 0;
    int64_t level = 0;
};
// Every hook site in call order: down blocks' layers, the mid block, up blocks' layers.
std::vector<LayerSiteInfo> unet_layer_sites(const UNet2DConditionConfig& config);
// Every spatial self-attention (BasicTransformerBlock) in call order; `site` is the layer it
// belongs to and `channels` its token width.
std::vector<LayerSiteInfo> unet_attention_layers(const UNet2DConditionConfig& config);

// The spatial BasicTransformerBlocks of a U-Net in call order (matches unet_attention_layers).
std::vector<BasicTransformerBlock> spatial_transformer_blocks(UNet2DConditionModelImpl& unet);

// Shapes of the banks for `batch` videos of latent size latent_h x latent_w with `motion_frames`
// motion frames, derived from the config alone (no network is built).
struct BankShapes {
    std::vector<std::vector<int64_t>> reference;  // per self-attention: [B, h*w, C]
    std::vector<std::vector<int64_t>> motion;     // per layer site: [B, M, C, h, w]
};
BankShapes bank_shapes(const UNet2DConditionConfig& config, int64_t batch, int64_t motion_frames,
                       int64_t latent_h, int64_t latent_w);

// --- banks ---

struct ReferenceBank {
    std::vector<torch::Tensor> layers;  // per spatial self-attention: [B, h*w, C] (what attn1 saw)
    torch::Tensor latent;               // [B, C, h, w]: for LoopyConfig::reference_latent_input
    bool empty() const { return layers.empty(); }
};

// The motion frames' keys and values in one inter-clip layer, per attention of every transformer
// block in order: [B*h*w, heads, M, dim_head] (B may be 1, shared by every batch item).
struct MotionKeyValues {
    std::vector<torch::Tensor> keys, values;
};

struct MotionBank {
    std::vector<torch::Tensor> sites;  // per layer site: [B, M, C, h, w]
    torch::Tensor mask;                // bool [B, M]: frames that exist (undefined: all)
    // Per site, from LoopyDenoisingUNet::prepare_motion; empty: computed in every forward.
    std::vector<MotionKeyValues> prepared;
    bool empty() const { return sites.empty(); }
};

// Per-item condition drops (bool [B]; undefined: nothing dropped). They let the three
// classifier-free-guidance passes (none / ref / ref+audio) and the training masks run in one
// batch.
struct DropFlags {
    torch::Tensor reference;  // no reference attention and no motion frames
    torch::Tensor audio;      // no audio cross-attention and no motion latent
    torch::Tensor motion;     // no motion frames
};

// --- new layers ---

// Keys like TransformerTemporalModel (AnimateDiff's motion module: norm, proj_in,
// transformer_blocks.N with two self-attentions and pos_embed, proj_out) plus `type_embedding`
// [2, inner] (row 0 motion frames, row 1 clip frames). The clip's frames attend to
// [motion frames ; clip frames]; motion frames are keys/values only. Positions: motion frames
// 0..M-1 (the most recent at M-1), clip frames M..M+F-1, whether or not motion frames are given.
// proj_out starts at zero (identity).
class InterClipTemporalLayerImpl : public torch::nn::Module {
  public:
    InterClipTemporalLayerImpl(const TransformerTemporalModelOptions& options,
                               int64_t motion_positions);

    // x [B*F, C, h, w]; motion [B or 1, M, C, h, w] (undefined: none); mask bool [B, M]
    // (undefined: all present); `prepared`: prepare(motion), else computed here. Returns
    // [B*F, C, h, w].
    torch::Tensor forward(const torch::Tensor& x, int64_t num_frames, const torch::Tensor& motion,
                          const torch::Tensor& mask, const MotionKeyValues* prepared = nullptr);
    // The keys and values of `motion` [B or 1, M, C, h, w]: they depend on the motion features
    // and the weights only, so the steps and guidance passes of a clip can share them.
    MotionKeyValues prepare(const torch::Tensor& motion);

    TransformerTemporalModelOptions options;
    int64_t motion_positions;
    torch::nn::GroupNorm norm{nullptr};
    torch::nn::Linear proj_in{nullptr}, proj_out{nullptr};
    torch::Tensor type_embedding;
    std::vector<BasicTransformerBlock> blocks;  // transformer_blocks, typed

  private:
    // proj_in(tokens) + type_embedding[type] (0: motion frames, 1: the clip).
    torch::Tensor typed_tokens(const torch::Tensor& tokens, int64_t type);
    // The motion frames' tokens after proj_in: [B'*h*w, M, inner], B' = motion's batch.
    torch::Tensor memory_tokens(const torch::Tensor& motion, int64_t batch, int64_t channels,
                                int64_t height, int64_t width);
    torch::Tensor block_forward(BasicTransformerBlockImpl& block, const torch::Tensor& clip,
                                const torch::Tensor& memory, const torch::Tensor& key_mask);
    // The same with the memory's keys and values from prepare(); `next` walks through them.
    torch::Tensor prepared_block_forward(BasicTransformerBlockImpl& block,
                                         const torch::Tensor& clip, int64_t batch,
                                         const MotionKeyValues& prepared, size_t& next,
                                         const torch::Tensor& key_mask);
};
TORCH_MODULE(InterClipTemporalLayer);

// Cross-attention from the latent features to the frame's audio tokens: LayerNorm `norm`, then
// `attn` (to_q, to_k, to_v, to_out.0; to_out starts at zero). Returns only the attention output
// (the caller adds it).
class AudioAttentionImpl : public torch::nn::Module {
  public:
    AudioAttentionImpl(int64_t channels, int64_t heads, int64_t audio_dim);
    // x [B*F, C, h, w]; tokens [B*F, N, audio_dim]. Returns [B*F, C, h, w].
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& tokens);

    torch::nn::LayerNorm norm{nullptr};
    Attention attn{nullptr};
};
TORCH_MODULE(AudioAttention);

// --- the networks ---

class ReferenceNetImpl : public UNet2DConditionModelImpl {
  public:
    explicit ReferenceNetImpl(const LoopyConfig& config);

    struct Features {
        std::vector<torch::Tensor> attention_inputs;  // per self-attention [N, h*w, C]
        std::vector<torch::Tensor> sites;             // per layer site [N, C, h, w]
    };
    // latents [N, C, h, w] at timestep 0 with the null context. Not re-entrant: it sets hooks on
    // its own attention blocks while it runs.
    Features encode(const torch::Tensor& latents, bool attention_inputs, bool sites);

    ReferenceBank encode_reference(const torch::Tensor& latent);  // [B, C, h, w]
    // latents [B, M, C, h, w]; mask bool [B, M] (undefined: all present). Only present frames
    // are run; the others' features are zero.
    MotionBank encode_motion(const torch::Tensor& latents, const torch::Tensor& mask = {});

    // encode_motion runs its frames in batches of a multiple of this many, the last frame
    // repeated to fill them (the repeats' features are dropped). A GPU then sees a few batch
    // shapes instead of one per count of present frames (each new one costs cuDNN its plans).
    // 0: 4 off the CPU (LOOPY_MOTION_BATCH_PADDING=0: 1), 1 on the CPU.
    int64_t motion_batch_multiple = 0;

    torch::Tensor null_context;  // [1, null_context_tokens, cross_attention_dim]

  private:
    // encode(frames)'s sites, the batch padded as motion_batch_multiple says.
    std::vector<torch::Tensor> encode_padded(const torch::Tensor& frames);
};
TORCH_MODULE(ReferenceNet);

struct DenoiseInputs {
    torch::Tensor latents;        // noisy clip latents [B, F, C, h, w]
    torch::Tensor timestep;       // [B], or one value for all
    ReferenceBank reference;      // empty: no reference attention. Batch B or 1.
    MotionBank motion;            // empty: no motion frames. Batch B or 1 (mask: B or 1).
    torch::Tensor audio_tokens;   // [B or 1, F, N, D]; undefined: no audio attention
    torch::Tensor motion_latent;  // [B, F or 1, time_embed_dim] (audio-to-latents); optional
    DropFlags drop;
    torch::Tensor context;  // attn2 context [B, L, cross_dim]; undefined: the learned null_context
};

class LoopyDenoisingUNetImpl : public UNet2DConditionModelImpl {
  public:
    explicit LoopyDenoisingUNetImpl(const LoopyConfig& config);

    // Predicted noise [B, F, C, h, w]. Not re-entrant (reference attention hooks).
    torch::Tensor forward(const DenoiseInputs& inputs);

    // `bank` with every inter-clip layer's motion keys and values computed (once per clip
    // instead of once per step and guidance pass). Valid for this network while its weights stay
    // as they are: inference only.
    MotionBank prepare_motion(const MotionBank& bank);

    struct Site {
        InterClipTemporalLayer inter_clip{nullptr};    // <block>.inter_clip_temporal.N
        AudioAttention audio{nullptr};                 // <block>.audio_attentions.N
        TransformerTemporalModel intra_clip{nullptr};  // <block>.motion_modules.N
    };
    std::vector<Site> sites;  // in unet_layer_sites order
    torch::Tensor null_context;
    bool reference_latent_input = false;  // conv_in also takes the reference latent

  private:
    size_t site_index(const UNetLayerSite& site) const;
    torch::Tensor with_reference_latent(const torch::Tensor& sample, const ReferenceBank& reference,
                                        const torch::Tensor& drop_ref, int64_t num_frames) const;
    std::vector<size_t> down_offsets_, up_offsets_;
    size_t mid_offset_ = 0;
};
TORCH_MODULE(LoopyDenoisingUNet);

}  // namespace loopy::model
