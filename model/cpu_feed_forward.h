#pragma once
// A transformer block's last part on the CPU, fused: h + ff(norm3(h)) in tiles of rows.
//
// In the tiny model's first level the feed-forward widens 9216 rows of 16 channels to 128 (4.7 MB)
// and GEGLU narrows them to 64: each of LayerNorm, the two products, GEGLU and the residual add
// was one pass over memory and one LibTorch call (27 blocks a denoising step). Here each thread
// takes a tile of a few hundred rows through all five while it is in cache.
#include <torch/torch.h>

namespace loopy::model {

// h + out(geglu(proj(norm(h)))) for h [..., C] (diffusers' FeedForward: proj = net.0.proj,
// out = net.2), or an undefined tensor where the fused loop does not apply (then the caller
// takes the layers): CPU float32 without autograd, LayerNorm's own loop applies, the switch on.
torch::Tensor fused_feed_forward(torch::nn::LayerNorm& norm, torch::nn::Linear& proj,
                                 torch::nn::Linear& out, const torch::Tensor& h);

// On unless LOOPY_CPU_FUSED_FEED_FORWARD=0; set between runs, not while a model runs.
void set_cpu_fused_feed_forward_enabled(bool enabled);
bool cpu_fused_feed_forward_enabled();

}  // namespace loopy::model
