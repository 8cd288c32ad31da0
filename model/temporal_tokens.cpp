#include "model/temporal_tokens.h"

#include "model/cpu_group_norm.h"

namespace loopy::model {

torch::Tensor normalised_tokens(torch::nn::GroupNorm& norm, const torch::Tensor& x,
                                int64_t num_frames) {
    return group_norm_tokens(norm, x, num_frames);
}

torch::Tensor add_tokens_to_frames(const torch::Tensor& x, const torch::Tensor& tokens,
                                   int64_t num_frames) {
    const int64_t bf = x.size(0), c = x.size(1), height = x.size(2), width = x.size(3);
    const int64_t b = bf / num_frames;
    // The sum is written in x's layout and reads the tokens through strides. Making the tokens
    // contiguous in that layout first (a transposing copy) was ~10x slower at the tiny model's
    // first level, 16 channels innermost: 0.8 ms against 0.08 for 36 x 16 x 16 x 16 floats.
    const auto frames = tokens.reshape({b, height, width, num_frames, c}).permute({0, 3, 4, 1, 2});
    return (x.reshape({b, num_frames, c, height, width}) + frames).reshape({bf, c, height, width});
}

}  // namespace loopy::model
