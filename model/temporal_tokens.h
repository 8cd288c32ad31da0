#pragma once
// The temporal layers' change of layout: frames [B*F, C, h, w] to one sequence of F tokens per
// (video, y, x), [B*h*w, F, C], and back. Shared by AnimateDiff's TransformerTemporalModel and
// Loopy's inter-clip layer.
#include <torch/torch.h>

#include <cstdint>

namespace loopy::model {

// norm(x) as tokens [B*h*w, F, C]; x [B*F, C, h, w]. The GroupNorm statistics span all frames
// of a video (norm runs on [B, C, F, h, w]), as in AnimateDiff's motion modules.
torch::Tensor normalised_tokens(torch::nn::GroupNorm& norm, const torch::Tensor& x,
                                int64_t num_frames);

// x + tokens back in the frames' layout: tokens [B*h*w, F, C], x and the result [B*F, C, h, w].
torch::Tensor add_tokens_to_frames(const torch::Tensor& x, const torch::Tensor& tokens,
                                   int64_t num_frames);

}  // namespace loopy::model
