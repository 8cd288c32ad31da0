#pragma once
// The one place where LibTorch 1.13 (Debian) and LibTorch 2.x (CUDA builds) differ for us.
#include <torch/torch.h>
#include <torch/version.h>

#define LOOPY_TORCH_AT_LEAST(major, minor) \
    (TORCH_VERSION_MAJOR > (major) ||      \
     (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace loopy::compat {

// softmax(q k^T / sqrt(d)) v over the last two dims; q [..., Lq, D], k/v [..., Lk, D].
// LibTorch >= 2.0 dispatches to fused kernels (flash / memory-efficient); 1.13 uses exact math.
inline torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& v) {
#if LOOPY_TORCH_AT_LEAST(2, 0)
    return at::scaled_dot_product_attention(q, k, v);
#else
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    auto scores = torch::matmul(q, k.transpose(-2, -1)).mul_(scale);
    return torch::matmul(scores.softmax(-1), v);
#endif
}

inline bool cuda_available() {
    return torch::cuda::is_available();
}

}  // namespace loopy::compat
