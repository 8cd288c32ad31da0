#pragma once
// GEGLU's gate on the CPU: value * gelu(gate) over the two halves of the projection, in one pass.
//
// LibTorch 1.13 needs three (a copy of the strided gate, gelu, the product) over a tensor of
// 9216 x 128 per call in the tiny model's first level (27 calls per denoising step).
#include <torch/torch.h>

namespace loopy::model {

// x[..., :n] * gelu(x[..., n:]) for x [..., 2n], GELU exact (with erf, as diffusers' GEGLU): the
// engine's loop for CPU float32 input without autograd while the switch is on, else LibTorch's
// operators.
torch::Tensor geglu_product(const torch::Tensor& x);

// Rows [0, rows) of x [rows, 2n] into y [rows, n], both contiguous: the loop of geglu_product,
// for fused callers (model/cpu_feed_forward.h).
void geglu_rows_cpu(const float* x, float* y, int64_t n, int64_t rows);

// An AVX-512 copy runs where cpu_avx512_active() (model/cpu_dispatch.h).
// On unless LOOPY_CPU_GEGLU=0; set between runs, not while a model runs.
void set_cpu_geglu_enabled(bool enabled);
bool cpu_geglu_enabled();

}  // namespace loopy::model
