// Model loading and the settings/device helpers of the engine API (core/engine.h).
#include "core/engine.h"

#include <ATen/Context.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/log.h"
#include "core/system.h"

namespace loopy {

namespace {

void use_channels_last(torch::nn::Module& module) {
    torch::NoGradGuard no_grad;
    for (auto& p : module.parameters())
        if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
}

}  // namespace

void GenerationSettings::validate() const {
    if (steps < 1 || steps > 1000) throw Error("steps must be between 1 and 1000");
    if (decode_batch < 1) throw Error("decode batch must be at least 1");
    if (!std::isfinite(audio_ratio) || !std::isfinite(reference_ratio))
        throw Error("guidance ratios must be finite numbers");
}

const char* decoder_name(Decoder decoder) {
    return decoder == Decoder::preview ? "preview" : "full";
}

Decoder parse_decoder(const std::string& name) {
    if (name == "full") return Decoder::full;
    if (name == "preview") return Decoder::preview;
    throw Error("unknown decoder '" + name + "' (full or preview)");
}

torch::Device parse_device(const std::string& name) {
    torch::Device device(torch::kCPU);
    try {
        device = torch::Device(name);
    } catch (const std::exception&) {
        throw Error("unknown device '" + name + "' (cpu, cuda or cuda:N)");
    }
    if (device.is_cuda() && !torch::cuda::is_available())
        throw Error("device '" + name +
                    "': this LibTorch build has no CUDA (or no GPU is visible)");
    if (!device.is_cpu() && !device.is_cuda())
        throw Error("device '" + name + "' is not supported (cpu, cuda or cuda:N)");
    return device;
}

torch::ScalarType parse_dtype(const std::string& name, const torch::Device& device) {
    torch::ScalarType type;
    if (name == "float32")
        type = torch::kFloat32;
    else if (name == "float16")
        type = torch::kFloat16;
    else if (name == "bfloat16")
        type = torch::kBFloat16;
    else
        throw Error("unknown dtype '" + name + "' (float32, float16 or bfloat16)");
    if (type != torch::kFloat32 && !device.is_cuda())
        throw Error("dtype " + name + " needs a CUDA device; the CPU runs float32");
    return type;
}

Model::Model(model::LoopyModel network, model::PreviewDecoder preview, const ModelOptions& options,
             std::string path)
    : network_(std::move(network)),
      preview_(std::move(preview)),
      options_(options),
      path_(std::move(path)) {
    set_num_threads(options.threads);
    reuse_freed_memory();
    device_ = parse_device(options.device);
    dtype_ = parse_dtype(options.dtype, device_);
    // LOOPY_CUDNN_BENCHMARK=1: cuDNN times its convolution algorithms on each new shape and keeps
    // the fastest, instead of its heuristics' pick (off by default: see bench/results/README.md).
    if (device_.is_cuda()) {
        const char* benchmark = std::getenv("LOOPY_CUDNN_BENCHMARK");
        at::globalContext().setBenchmarkCuDNN(benchmark && std::string(benchmark) == "1");
    }
    if (options.audio_context_seconds < 0 || options.audio_context_seconds > 30)
        throw Error("audio context must be between 0 and 30 seconds");
    network_->to(device_, dtype_);
    network_->eval();
    if (preview_) {
        preview_->to(device_, dtype_);
        preview_->eval();
    }
    if (options.channels_last) {
        use_channels_last(*network_);
        if (preview_) use_channels_last(*preview_);
    }
}

void Model::check_decoder(Decoder decoder) const {
    if (decoder == Decoder::preview && !has_preview_decoder())
        throw Error(
            (path_.empty() ? std::string("this model") : path_) +
            " has no fast preview decoder: distil one with `loopy train-vae --preview "
            "--init <checkpoint> --data <clips> --out <file>`, or use the full VAE decoder");
}

std::shared_ptr<Model> Model::load(const std::string& path, const ModelOptions& options) {
    // Check the options and the metadata before reading hundreds of megabytes.
    parse_dtype(options.dtype, parse_device(options.device));
    Metadata metadata;
    const auto tensors = load_safetensors(path, &metadata);  // mapped: no tensor is read yet
    auto guidance = model::recommended_guidance(metadata, path);
    auto network = model::load_loopy_checkpoint(tensors, metadata, path);
    auto preview = model::load_preview_decoder(tensors, metadata, network->config, path);
    std::shared_ptr<Model> model(new Model(std::move(network), std::move(preview), options, path));
    model->recommended_guidance_ = guidance;
    return model;
}

bool use_recommended_guidance(const Model& model, GenerationSettings& settings, bool audio_given,
                              bool reference_given) {
    const auto& r = model.recommended_guidance();
    if (!r) return false;
    bool changed = false;
    if (!audio_given && settings.audio_ratio != r->audio) {
        settings.audio_ratio = r->audio;
        changed = true;
    }
    if (!reference_given && settings.reference_ratio != r->reference) {
        settings.reference_ratio = r->reference;
        changed = true;
    }
    return changed;
}

std::shared_ptr<Model> Model::from_network(model::LoopyModel network, const ModelOptions& options,
                                           model::PreviewDecoder preview) {
    return std::shared_ptr<Model>(new Model(std::move(network), std::move(preview), options, ""));
}

}  // namespace loopy
