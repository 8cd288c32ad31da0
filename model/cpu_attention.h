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

#include <vector>

namespace loopy::model {

// Keys and values in parts, attended as one sequence (the parts concatenated along L): part i is
// [P_i, H, L_i, D] with P_i dividing the queries' batch B, item r reading the part's row
// r mod P_i (1: shared by every item; a motion memory per spatial position, repeated for every
// video). The kernel reads the parts where they are, so [own tokens ; reference tokens] or
// [motion frames ; clip frames] need no copy.
struct KeyValueParts {
    std::vector<torch::Tensor> keys, values;
};

// [P, ...] -> [B, ...] with item r = row r mod P (P divides B): what a part stands for.
torch::Tensor repeat_to_batch(const torch::Tensor& t, int64_t batch);

// True when cpu_attention can take these inputs: CPU float32 tensors [B, H, L, D] with the same
// B, H and D, no autograd recording, and the kernel enabled (see set_cpu_attention_enabled).
bool cpu_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);
bool cpu_attention_applies(const torch::Tensor& q, const KeyValueParts& kv);

// softmax(q k^T / sqrt(D) + mask) v with q [B, H, Lq, D], k and v [B, H, Lk, D] (any strides);
// key_mask bool [B, Lk] (true: attend; shared by the heads) or undefined. Masked keys are left
// out, not weighted by zero: a row without any key gives zeros. Returns [B, H, Lq, D], a
// transposed view of a contiguous [B, Lq, H, D] tensor.
torch::Tensor cpu_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const torch::Tensor& key_mask = {});
// The same over keys and values in parts; key_mask [B, sum of L_i].
torch::Tensor cpu_attention(const torch::Tensor& q, const KeyValueParts& kv,
                            const torch::Tensor& key_mask = {});

// The kernel is on unless LOOPY_CPU_ATTENTION=0 is set; benchmarks and tests switch it to compare
// with LibTorch's operators. Not thread-safe against running models: set it between runs.
void set_cpu_attention_enabled(bool enabled);
bool cpu_attention_enabled();
// Long rows of 8 or 16 channels take an AVX-512 copy where cpu_avx512_active()
// (model/cpu_dispatch.h).

// softmax(q k^T / sqrt(D) + mask) v for [B, H, L, D] tensors by whichever path is fastest here:
// cpu_attention when it applies, else LibTorch (compat::scaled_dot_product_attention without a
// mask, masked math with one; parts are expanded and concatenated first). The one entry point
// for the model's attention products. Every row must keep at least one key.
torch::Tensor attention_product(const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& key_mask = {});
torch::Tensor attention_product(const torch::Tensor& q, const KeyValueParts& kv,
                                const torch::Tensor& key_mask = {});

}  // namespace loopy::model
