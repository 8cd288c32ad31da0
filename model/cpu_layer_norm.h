#pragma once
// LayerNorm over narrow rows on the CPU.
//
// The tiny model's transformer blocks normalise rows of 16-32 channels, thousands of them per
// call. LibTorch 1.13's CPU kernel vectorises along each row, which at this width is mostly
// set-up and horizontal reductions (64 calls, 8 ms of a 107 ms denoising step). Here each row's
// mean and variance are sums over a compile-time width, unrolled and vectorised by the compiler.
#include <torch/torch.h>

namespace loopy::model {

// layer(x) for x [..., C]; the engine's own loop when x is a CPU float32 tensor, the layer
// normalises over C <= 64 with weights and biases, no autograd is recording and the switch is
// on; LibTorch's otherwise.
torch::Tensor forward_layer_norm(torch::nn::LayerNorm& layer, const torch::Tensor& x);

// True when forward_layer_norm takes the engine's loop for x.
bool cpu_layer_norm_applies(const torch::nn::LayerNormImpl& layer, const torch::Tensor& x);

// Rows [0, rows) of x [rows, C] normalised into y with the layer's weights (contiguous CPU
// float32; C <= 64): the loop of forward_layer_norm, for fused callers (model/cpu_feed_forward.h).
void layer_norm_rows_cpu(const torch::nn::LayerNormImpl& layer, const float* x, float* y,
                         int64_t rows);

// On unless LOOPY_CPU_LAYER_NORM=0; set between runs, not while a model runs.
void set_cpu_layer_norm_enabled(bool enabled);
bool cpu_layer_norm_enabled();

}  // namespace loopy::model
