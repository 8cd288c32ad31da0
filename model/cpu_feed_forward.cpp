#include "model/cpu_feed_forward.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/record_function.h>

#include <algorithm>

#include "core/system.h"
#include "model/cpu_dispatch.h"
#include "model/cpu_geglu.h"
#include "model/cpu_layer_norm.h"
#include "model/cpu_linear.h"

namespace loopy::model {

namespace {

EnvironmentSwitch& enabled_switch() {
    static EnvironmentSwitch on_off{"LOOPY_CPU_FUSED_FEED_FORWARD"};
    return on_off;
}

// The widest intermediate of a tile (rows x 2 * inner floats) stays within this many floats
// (256 KB, within a core's L2); at least kMinTileRows rows, so that each BLAS call has work.
constexpr int64_t kTileFloats = 64 * 1024;
constexpr int64_t kMinTileRows = 32;

bool usable(const torch::Tensor& t) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32;
}

bool applies(torch::nn::LayerNorm& norm, torch::nn::Linear& proj, torch::nn::Linear& out,
             const torch::Tensor& h) {
    if (!cpu_fused_feed_forward_enabled() || at::in_parallel_region() || blas_threads() > 1)
        return false;
    if (!usable(h) || h.dim() < 2 || !cpu_layer_norm_applies(*norm, h)) return false;
    for (const torch::Tensor* t : {&proj->weight, &proj->bias, &out->weight, &out->bias})
        if (!usable(*t)) return false;
    if (torch::GradMode::is_enabled() &&
        (h.requires_grad() || proj->weight.requires_grad() || proj->bias.requires_grad() ||
         out->weight.requires_grad() || out->bias.requires_grad()))
        return false;
    const int64_t c = h.size(-1), wide = proj->weight.size(0);
    return proj->weight.size(1) == c && wide % 2 == 0 && out->weight.size(0) == c &&
           out->weight.size(1) == wide / 2;
}

}  // namespace

void set_cpu_fused_feed_forward_enabled(bool enabled) {
    enabled_switch().set(enabled);
}

bool cpu_fused_feed_forward_enabled() {
    return enabled_switch().on();
}

torch::Tensor fused_feed_forward(torch::nn::LayerNorm& norm, torch::nn::Linear& proj,
                                 torch::nn::Linear& out, const torch::Tensor& h_in) {
    if (!applies(norm, proj, out, h_in)) return {};
    const auto h = h_in.contiguous();
    const int64_t c = h.size(-1), rows = h.numel() / c, wide = proj->weight.size(0);
    // For `--profile` and the FLOP counter (core/flop_counter.cpp): the products inside are not
    // recorded, as in forward_linear.
    RECORD_FUNCTION("loopy::feed_forward",
                    std::vector<c10::IValue>({h, proj->weight, out->weight}));
    auto y = torch::empty_like(h);
    const auto h_rows = h.view({rows, c}), y_rows = y.view({rows, c});
    const auto proj_t = proj->weight.t(), out_t = out->weight.t();
    // The engine's own products where they apply (AVX-512), on weights transposed once.
    const bool own = cpu_own_product_fits(proj, rows) && cpu_own_product_fits(out, rows);
    std::vector<float> proj_tc, out_tc;
    if (own) {
        transpose_weight(proj->weight, proj_tc);
        transpose_weight(out->weight, out_tc);
    }
    const int64_t tile = std::clamp(kTileFloats / wide, kMinTileRows, rows);
    const int64_t tiles = (rows + tile - 1) / tile;
    const at::ThreadLocalState caller_state;  // OpenMP threads do not inherit it
    at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
        at::ThreadLocalStateGuard same_state(caller_state);
        at::RecordFunctionGuard unrecorded(false);
        auto normed = torch::empty({tile, c}, h.options());
        auto widened = torch::empty({tile, wide}, h.options());
        auto gated = torch::empty({tile, wide / 2}, h.options());
        for (int64_t t = begin; t < end; ++t) {
            const int64_t first = t * tile, n = std::min(tile, rows - first);
            layer_norm_rows_cpu(*norm, h.data_ptr<float>() + first * c, normed.data_ptr<float>(),
                                n);
            auto y_n = y_rows.narrow(0, first, n);
            if (own) {
                product_rows_cpu(normed.data_ptr<float>(), n, proj_tc.data(),
                                 proj->bias.data_ptr<float>(), widened.data_ptr<float>(), c, wide);
            } else {
                auto widened_n = widened.narrow(0, 0, n);
                at::addmm_out(widened_n, proj->bias, normed.narrow(0, 0, n), proj_t);
            }
            geglu_rows_cpu(widened.data_ptr<float>(), gated.data_ptr<float>(), wide / 2, n);
            if (own) {  // the residual h is where the sums start: no pass of its own
                product_rows_cpu(gated.data_ptr<float>(), n, out_tc.data(),
                                 out->bias.data_ptr<float>(), y.data_ptr<float>() + first * c,
                                 wide / 2, c, h.data_ptr<float>() + first * c);
            } else {
                at::addmm_out(y_n, out->bias, gated.narrow(0, 0, n), out_t);
                y_n.add_(h_rows.narrow(0, first, n));
            }
        }
    });
    return y;
}

}  // namespace loopy::model
