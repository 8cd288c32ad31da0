#include "core/flop_counter.h"

#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string_view>
#include <vector>

#include "core/engine.h"
#include "core/system.h"

namespace loopy {
namespace {

double product(at::IntArrayRef sizes) {
    double p = 1;
    for (int64_t s : sizes)
        p *= static_cast<double>(s);
    return p;
}

const at::Tensor* tensor_arg(const c10::ArrayRef<const c10::IValue>& inputs, std::size_t i) {
    if (i >= inputs.size() || !inputs[i].isTensor()) return nullptr;
    return &inputs[i].toTensor();
}

// FLOPs of the leaf products; composite ops (linear, matmul, conv2d) end in one of these.
double op_flops(std::string_view name, const c10::ArrayRef<const c10::IValue>& inputs) {
    // loopy::linear: the engine's row-split Linear (model/cpu_linear.h), inputs (x, weight).
    if (name == "loopy::linear") {
        const at::Tensor* x = tensor_arg(inputs, 0);
        const at::Tensor* w = tensor_arg(inputs, 1);
        if (!x || !w || w->dim() != 2) return 0;
        return 2.0 * product(x->sizes()) * static_cast<double>(w->size(0));
    }
    // loopy::feed_forward: the engine's fused feed-forward (model/cpu_feed_forward.h), inputs
    // (h, proj weight [2 inner, C], out weight [C, inner]): the two products over h's rows.
    if (name == "loopy::feed_forward") {
        const at::Tensor* h = tensor_arg(inputs, 0);
        const at::Tensor* proj = tensor_arg(inputs, 1);
        const at::Tensor* out = tensor_arg(inputs, 2);
        if (!h || !proj || !out || h->dim() < 1 || h->size(-1) == 0) return 0;
        const double rows = product(h->sizes()) / static_cast<double>(h->size(-1));
        return 2.0 * rows * (product(proj->sizes()) + product(out->sizes()));
    }
    if (name == "aten::mm" || name == "aten::addmm" || name == "aten::bmm" ||
        name == "aten::baddbmm") {
        const bool has_bias = name == "aten::addmm" || name == "aten::baddbmm";
        const at::Tensor* a = tensor_arg(inputs, has_bias ? 1 : 0);
        const at::Tensor* b = tensor_arg(inputs, has_bias ? 2 : 1);
        if (!a || !b || a->dim() < 2) return 0;
        return 2.0 * product(a->sizes()) * static_cast<double>(b->size(-1));
    }
    if (name == "aten::convolution") {
        const at::Tensor* x = tensor_arg(inputs, 0);
        const at::Tensor* w = tensor_arg(inputs, 1);
        if (!x || !w || x->dim() < 3) return 0;
        // Output elements * (C_in/groups * kernel) multiply-adds; output size from the weight
        // and input shapes needs stride/padding, so take it from the arguments.
        const auto& stride = inputs[3].toIntList();
        const auto& padding = inputs[4].toIntList();
        const auto& dilation = inputs[5].toIntList();
        double out_elems = static_cast<double>(x->size(0)) * static_cast<double>(w->size(0));
        for (int64_t d = 2; d < x->dim(); ++d) {
            const int64_t k = w->size(d), s = stride.get(d - 2), p = padding.get(d - 2),
                          dl = dilation.get(d - 2);
            out_elems *= static_cast<double>((x->size(d) + 2 * p - dl * (k - 1) - 1) / s + 1);
        }
        const double per_output = product(w->sizes().slice(1));
        return 2.0 * out_elems * per_output;
    }
    // Fused attention (LibTorch 2.x's, and the engine's CPU kernel, model/cpu_attention.h):
    // q [..., Lq, D] k [..., Lk, D] v [..., Lk, Dv] -> q k^T and p v. The math fallback is made of
    // bmm calls, counted above.
    if (name == "loopy::cpu_attention" || name == "aten::_scaled_dot_product_flash_attention" ||
        name == "aten::_scaled_dot_product_efficient_attention" ||
        name == "aten::_scaled_dot_product_cudnn_attention" ||
        name == "aten::_scaled_dot_product_flash_attention_for_cpu") {
        const at::Tensor* q = tensor_arg(inputs, 0);
        const at::Tensor* k = tensor_arg(inputs, 1);
        const at::Tensor* v = tensor_arg(inputs, 2);
        if (!q || !k || !v || q->dim() < 2) return 0;
        // The engine's kernel passes the length of all its key parts fourth.
        const double keys = inputs.size() > 3 && inputs[3].isInt()
                                ? static_cast<double>(inputs[3].toInt())
                                : static_cast<double>(k->size(-2));
        return 2.0 * product(q->sizes().slice(0, q->dim() - 1)) * keys *
               static_cast<double>(q->size(-1) + v->size(-1));
    }
    return 0;
}

}  // namespace

struct FlopCounter::State {
    std::atomic<double> flops{0};
    at::CallbackHandle handle = 0;
};

namespace {
// RecordFunction callbacks are plain function pointers: the counter of this thread is found here.
thread_local FlopCounter::State* t_active_counter = nullptr;
}  // namespace

std::unique_ptr<at::ObserverContext> FlopCounter::on_operator(const at::RecordFunction& fn) {
    if (State* state = t_active_counter) {
        const double f = operator_flops(fn);
        if (f > 0) state->flops.store(state->flops.load() + f);
    }
    return nullptr;
}

double operator_flops(const at::RecordFunction& fn) {
    return op_flops(fn.name(), fn.inputs());
}

FlopCounter::FlopCounter() : state_(std::make_unique<State>()) {
    t_active_counter = state_.get();
    state_->handle =
        at::addThreadLocalCallback(at::RecordFunctionCallback(&FlopCounter::on_operator)
                                       .needsInputs(true)
                                       .scopes({at::RecordScope::FUNCTION}));
}

FlopCounter::~FlopCounter() {
    at::removeCallback(state_->handle);
    if (t_active_counter == state_.get()) t_active_counter = nullptr;
}

double FlopCounter::flops() const {
    return state_->flops.load();
}
void FlopCounter::reset() {
    state_->flops.store(0);
}

double median_seconds(int warmup, int repeat, const std::function<void()>& fn) {
    for (int i = 0; i < warmup; ++i)
        fn();
    std::vector<double> times;
    for (int i = 0; i < std::max(1, repeat); ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        times.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
}

double measure_matmul_gflops(int64_t n, int repeat) {
    torch::NoGradGuard no_grad;
    const auto a = torch::randn({n, n});
    const auto b = torch::randn({n, n});
    auto c = torch::empty({n, n});
    // The machine's peak: OpenBLAS on every intra-op thread for this one product, although the
    // engine keeps it at 1 (system.cpp), so "% of matmul" compares with what the cores can do.
    const int blas_before = set_blas_threads(at::get_num_threads());
    const double t = median_seconds(1, repeat, [&] { torch::mm_out(c, a, b); });
    set_blas_threads(blas_before);
    return 2.0 * static_cast<double>(n) * n * n / t / 1e9;
}

double measure_matmul_gflops(const std::string& device, const std::string& dtype) {
    const auto dev = parse_device(device);
    if (!dev.is_cuda()) return measure_matmul_gflops();
    torch::NoGradGuard no_grad;
    const int64_t n = 8192;  // large enough to fill an H100
    const auto opts = torch::TensorOptions().device(dev).dtype(parse_dtype(dtype, dev));
    const auto a = torch::randn({n, n}, opts);
    const auto b = torch::randn({n, n}, opts);
    auto c = torch::empty({n, n}, opts);
    const double t = median_seconds(2, 10, [&] {
        torch::mm_out(c, a, b);
        torch::cuda::synchronize(dev.index() < 0 ? -1 : dev.index());
    });
    return 2.0 * static_cast<double>(n) * n * n / t / 1e9;
}

}  // namespace loopy
