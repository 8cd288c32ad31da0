#pragma once
// Attention over many small matrices on the CPU in one pass.
//
// The temporal layers attend along 12-32 frames at every spatial position: thousands of tiny
// matrices per call. LibTorch 1.13's CPU bmm handles each one with a select and a BLAS call
// (~1-2 us of overhead apiece, on one thread), then softmax, masking and head merging each make
// another pass over memory. This kernel computes q.k^T, the key mask, the softmax and the product
// with v per (item, head) while the matrix is in cache, on every intra-op thread, and writes the
// result in the merged-heads layout so that merge_heads needs no copy.
#include <torch/torch.h>

namespace loopy::model {

// True when cpu_attention can take these inputs: CPU float32 tensors [B, H, L, D] with the same
// B, H and D, no autograd recording, and the kernel enabled (see set_cpu_attention_enabled).
bool cpu_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// softmax(q k^T / sqrt(D) + mask) v with q [B, H, Lq, D], k and v [B, H, Lk, D] (any strides);
// key_mask bool [B, Lk] (true: attend; shared by the heads) or undefined. Every row must keep at
// least one key. Returns [B, H, Lq, D], a transposed view of a contiguous [B, Lq, H, D] tensor.
torch::Tensor cpu_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& key_mask = {});

// The kernel is on unless LOOPY_CPU_ATTENTION=0 is set; benchmarks and tests switch it to compare
// with LibTorch's operators. Not thread-safe against running models: set it between runs.
void set_cpu_attention_enabled(bool enabled);
bool cpu_attention_enabled();

// softmax(q k^T / sqrt(D) + mask) v for [B, H, L, D] tensors by whichever path is fastest here:
// cpu_attention when it applies, else LibTorch (compat::scaled_dot_product_attention without a
// mask, masked math with one). The one entry point for the model's attention products.
torch::Tensor attention_product(const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& key_mask = {});

}  // namespace loopy::model
