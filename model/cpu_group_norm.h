#pragma once
// GroupNorm on the CPU, fused with what comes before and after it.
//
// LibTorch 1.13 runs a ResNet block's `silu(norm2(h + time_embedding))` as three operators, each
// a pass over memory into a freshly allocated tensor (the SiLU alone took 0.37 ms for the tiny
// model's 36 x 16 x 16 x 16 on two threads, four times the GroupNorm), and the temporal layers'
// GroupNorm over a permuted view as a copy, the norm and a second copy into tokens. Here the
// statistics are one pass per group, and the normalised values go straight to where they are
// needed: with the shift added first, through SiLU after, or into the tokens' layout.
#include <torch/torch.h>

namespace loopy::model {

// norm(x + shift) for x [N, C, *], then SiLU if `silu`: shift [N or 1, C] is added per item and
// channel before the statistics (a ResNet block's time embedding), or undefined. The engine's
// own loop where cpu_group_norm_applies, LibTorch's operators otherwise.
torch::Tensor forward_group_norm(torch::nn::GroupNorm& norm, const torch::Tensor& x,
                                 const torch::Tensor& shift = {}, bool silu = false);

// norm over [B, C, F, *] for x [B*F, C, *] (the statistics of a group span the F frames of a
// video), as tokens [B * positions, F, C]: the temporal layers' input (model/temporal_tokens.h).
// F = 1 gives the spatial transformer's tokens [B, positions, C].
torch::Tensor group_norm_tokens(torch::nn::GroupNorm& norm, const torch::Tensor& x,
                                int64_t num_frames);

// True when the engine's loop takes x: a CPU float32 tensor of at least 3 dimensions, an affine
// norm, no autograd recording and the switch on.
bool cpu_group_norm_applies(const torch::nn::GroupNormImpl& norm, const torch::Tensor& x);

// On unless LOOPY_CPU_GROUP_NORM=0; set between runs, not while a model runs.
void set_cpu_group_norm_enabled(bool enabled);
bool cpu_group_norm_enabled();

}  // namespace loopy::model
