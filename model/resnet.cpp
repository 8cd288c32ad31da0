#include "model/resnet.h"

#include <ATen/record_function.h>

#include "core/error.h"
#include "model/cpu_group_norm.h"

namespace loopy::model {
namespace nn = torch::nn;
namespace F = torch::nn::functional;

namespace {

nn::Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1, int64_t padding = 1) {
    return nn::Conv2d(nn::Conv2dOptions(in, out, 3).stride(stride).padding(padding));
}

}  // namespace

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetBlock2DOptions& opts) : options(opts) {
    const int64_t in = opts.in_channels(), out = opts.out_channels();
    norm1 = register_module("norm1",
                            nn::GroupNorm(nn::GroupNormOptions(opts.groups(), in).eps(opts.eps())));
    conv1 = register_module("conv1", conv3x3(in, out));
    if (opts.temb_channels() > 0)
        time_emb_proj = register_module("time_emb_proj", nn::Linear(opts.temb_channels(), out));
    norm2 = register_module(
        "norm2", nn::GroupNorm(nn::GroupNormOptions(opts.groups(), out).eps(opts.eps())));
    conv2 = register_module("conv2", conv3x3(out, out));
    if (in != out)
        conv_shortcut = register_module("conv_shortcut", nn::Conv2d(nn::Conv2dOptions(in, out, 1)));
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
    RECORD_USER_SCOPE("loopy::resnet");
    auto h = conv1(forward_group_norm(norm1, x, {}, true));
    torch::Tensor time_shift;  // one bias per channel, added to h before norm2
    if (time_emb_proj) {
        if (!temb.defined()) throw Error("ResnetBlock2D: time embedding expected but not given");
        time_shift = time_emb_proj(F::silu(temb));
    }
    h = conv2(forward_group_norm(norm2, h, time_shift, true));
    return (conv_shortcut ? conv_shortcut(x) : x) + h;
}

Downsample2DImpl::Downsample2DImpl(const Downsample2DOptions& opts) : options(opts) {
    conv =
        register_module("conv", conv3x3(opts.channels(), opts.out_channels(), 2, opts.padding()));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
    // diffusers' padding-0 variant: zero-pad right and bottom only, so the stride-2 windows start
    // at the top-left pixel (the original LDM / SD VAE encoder).
    if (options.padding() == 0)
        return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1}).mode(torch::kConstant).value(0)));
    return conv(x);
}

Upsample2DImpl::Upsample2DImpl(const Upsample2DOptions& opts) : options(opts) {
    conv = register_module("conv", conv3x3(opts.channels(), opts.out_channels()));
}

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x,
                                      const std::vector<int64_t>& output_size) {
    auto interp = F::InterpolateFuncOptions().mode(torch::kNearest);
    if (output_size.empty())
        interp.scale_factor(std::vector<double>{2.0, 2.0});
    else
        interp.size(output_size);
    return conv(F::interpolate(x, interp));
}

}  // namespace loopy::model
