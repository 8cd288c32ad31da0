#pragma once
// The one place where LibTorch 1.13 (Debian) and LibTorch 2.x (CUDA builds) differ for us.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <limits>
#include <vector>

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
    const int64_t lq = q.size(-2), lk = k.size(-2), d = q.size(-1);
    if (lq * lk * d < (int64_t{1} << 16)) {  // many small products: one bmm is fastest
        auto scores = torch::matmul(q, k.transpose(-2, -1)).mul_(scale);
        return torch::matmul(scores.softmax(-1), v);
    }
    // Debian's 1.13 bmm runs large products 10-20x slower than BLAS mm does; one mm per matrix
    // is fast and keeps a single score matrix alive at a time.
    auto q3 = q.reshape({-1, lq, d});
    auto k3 = k.reshape({-1, lk, d});
    auto v3 = v.reshape({-1, lk, v.size(-1)});
    std::vector<torch::Tensor> out;
    out.reserve(static_cast<size_t>(q3.size(0)));
    for (int64_t i = 0; i < q3.size(0); ++i)
        out.push_back(torch::mm(torch::mm(q3[i], k3[i].t()).mul_(scale).softmax(-1), v3[i]));
    auto shape = q.sizes().vec();
    shape.back() = v.size(-1);
    return torch::stack(out).view(shape);
#endif
}

// The same with a key mask (bool [B, Lk], true: the key takes part) broadcast over heads and
// queries; every row must keep a key. With `fused`, LibTorch >= 2.0 hands it to SDPA (which
// picks a kernel that takes masks); otherwise exact math with q scaled before q k^T (the float16
// range).
inline torch::Tensor scaled_dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& v,
                                                  const torch::Tensor& key_mask, bool fused) {
    const auto mask = key_mask.to(torch::kBool).view({k.size(0), 1, 1, k.size(2)});
#if LOOPY_TORCH_AT_LEAST(2, 0)
    if (fused) return at::scaled_dot_product_attention(q, k, v, mask);
#endif
    (void)fused;
    const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
    auto scores = torch::matmul(q * scale, k.transpose(-2, -1));
    scores.masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity());
    return torch::matmul(scores.softmax(-1), v);
}

inline bool cuda_available() {
    return torch::cuda::is_available();
}

// CUDA autocast to `dtype` while it lives (torch.autocast("cuda", dtype) in Python); the state
// before is restored after. LibTorch 2.4 made the API per device type.
class CudaAutocastGuard {
  public:
    explicit CudaAutocastGuard(at::ScalarType dtype) {
#if LOOPY_TORCH_AT_LEAST(2, 4)
        was_enabled_ = at::autocast::is_autocast_enabled(at::kCUDA);
        was_dtype_ = at::autocast::get_autocast_dtype(at::kCUDA);
        at::autocast::set_autocast_enabled(at::kCUDA, true);
        at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
        was_enabled_ = at::autocast::is_enabled();
        was_dtype_ = at::autocast::get_autocast_gpu_dtype();
        at::autocast::set_enabled(true);
        at::autocast::set_autocast_gpu_dtype(dtype);
#endif
        at::autocast::increment_nesting();
    }
    ~CudaAutocastGuard() {
        // Leaving the outermost region frees the casts of the weights cached inside it.
        if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if LOOPY_TORCH_AT_LEAST(2, 4)
        at::autocast::set_autocast_enabled(at::kCUDA, was_enabled_);
        at::autocast::set_autocast_dtype(at::kCUDA, was_dtype_);
#else
        at::autocast::set_enabled(was_enabled_);
        at::autocast::set_autocast_gpu_dtype(was_dtype_);
#endif
    }
    CudaAutocastGuard(const CudaAutocastGuard&) = delete;
    CudaAutocastGuard& operator=(const CudaAutocastGuard&) = delete;

  private:
    bool was_enabled_ = false;
    at::ScalarType was_dtype_ = at::kHalf;
};

}  // namespace loopy::compat
