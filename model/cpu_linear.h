#pragma once
// Linear layers with their rows split over the CPU's intra-op threads.
//
// The engine keeps OpenBLAS at one thread (core/system.cpp: its pool and OpenMP's spin against
// each other), so every product of a Linear ran on one core while the other waited. Splitting
// the rows gives each OpenMP thread its own single-threaded BLAS call on a block of rows; the
// result is bit-identical (each row is computed by the same kernel either way).
#include <torch/torch.h>

#include <vector>

namespace loopy::model {

// layer(x) for x [..., in_features]; rows split over the threads when x is a CPU float32
// tensor of at least a few hundred rows, no autograd is recording and the switch is on. Either
// way the bias is added inside the product (addmm), never in a second pass over the output
// (LOOPY_FUSED_LINEAR_BIAS=0: LibTorch's frontend, which does that for inputs of 3+ dims).
torch::Tensor forward_linear(torch::nn::Linear& layer, const torch::Tensor& x);
// The same for weight [out, in] and bias [out] (or undefined) given apart: a 1x1 convolution's
// weights viewed as a linear layer's, for example.
torch::Tensor forward_linear(const torch::Tensor& weight, const torch::Tensor& bias,
                             const torch::Tensor& x);

// forward_linear(layer, x) + residual, residual shaped like the output. Where the engine's own
// product applies (below) the residual is where its sums start: no pass of its own over the
// output (attention's out-projections: 27 adds of a tiny-model step).
torch::Tensor forward_linear_plus(torch::nn::Linear& layer, const torch::Tensor& x,
                                  const torch::Tensor& residual);

// On CPUs with AVX-512F (model/cpu_dispatch.h) forward_linear computes products of at most 128
// inputs and 256 outputs (a multiple of 16) with the engine's own loop instead of BLAS, unless
// LOOPY_CPU_OWN_PRODUCT=0 or switched off here (between runs). Applies: whether it would.
void set_cpu_own_product_enabled(bool enabled);
bool cpu_own_product_applies(const torch::nn::Linear& layer, const torch::Tensor& x);
// The same for a contiguous CPU float32 input of `rows` rows that no autograd records (a fused
// caller's own checks).
bool cpu_own_product_fits(const torch::nn::Linear& layer, int64_t rows);
// weight [N, K] (CPU float32, any strides) into `out` as a contiguous [K, N], the layout
// product_rows_cpu reads. A plain loop: LibTorch's t().contiguous() cost four operators a call
// (~0.7 ms of a tiny model's step in the profile, 188 calls). Keeping the transposed weights
// between calls instead raised the peak RSS by ~25 MiB (heap fragmentation), so each call
// transposes again.
void transpose_weight(const torch::Tensor& weight, std::vector<float>& out);
// y [rows, n] = bias + add + x [rows, k] . wt [k, n] (all contiguous; bias and add [rows, n]
// may be null) by that loop, on the calling thread, for fused callers (model/cpu_feed_forward.h)
// where it applies.
void product_rows_cpu(const float* x, int64_t rows, const float* wt, const float* bias, float* y,
                      int64_t k, int64_t n, const float* add = nullptr);

// On unless LOOPY_PARALLEL_LINEAR=0; set between runs, not while a model runs.
void set_parallel_linear_enabled(bool enabled);
bool parallel_linear_enabled();

}  // namespace loopy::model
