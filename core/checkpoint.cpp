#include "core/checkpoint.h"

#include <cstdint>
#include <sstream>

#include "core/error.h"

namespace loopy {
namespace st = safetensors;

torch::ScalarType to_scalar_type(st::DType dtype) {
    switch (dtype) {
        case st::DType::BOOL:
            return torch::kBool;
        case st::DType::U8:
            return torch::kByte;
        case st::DType::I8:
            return torch::kChar;
        case st::DType::I16:
            return torch::kShort;
        case st::DType::I32:
            return torch::kInt;
        case st::DType::I64:
            return torch::kLong;
        case st::DType::F16:
            return torch::kHalf;
        case st::DType::BF16:
            return torch::kBFloat16;
        case st::DType::F32:
            return torch::kFloat;
        case st::DType::F64:
            return torch::kDouble;
        default:
            break;
    }
    throw Error("dtype " + std::string(st::dtype_name(dtype)) + " is not supported by LibTorch");
}

st::DType to_safetensors_dtype(torch::ScalarType type) {
    switch (type) {
        case torch::kBool:
            return st::DType::BOOL;
        case torch::kByte:
            return st::DType::U8;
        case torch::kChar:
            return st::DType::I8;
        case torch::kShort:
            return st::DType::I16;
        case torch::kInt:
            return st::DType::I32;
        case torch::kLong:
            return st::DType::I64;
        case torch::kHalf:
            return st::DType::F16;
        case torch::kBFloat16:
            return st::DType::BF16;
        case torch::kFloat:
            return st::DType::F32;
        case torch::kDouble:
            return st::DType::F64;
        default:
            break;
    }
    throw Error(std::string("cannot store tensors of type ") + c10::toString(type));
}

TensorMap load_safetensors(const std::string& path, Metadata* metadata) {
    st::File file = st::File::open(path);
    if (metadata) *metadata = file.header.metadata;
    TensorMap out;
    auto mapping = file.mapping;
    for (const st::TensorInfo& info : file.header.tensors) {
        torch::ScalarType type;
        try {
            type = to_scalar_type(info.dtype);
        } catch (const Error& e) {
            throw Error(path + ": tensor '" + info.name + "': " + e.what());
        }
        void* data = file.tensor_data(info);
        const auto options = torch::TensorOptions().dtype(type);
        const std::size_t align = st::dtype_size(info.dtype);
        if (reinterpret_cast<std::uintptr_t>(data) % align == 0) {
            out[info.name] = torch::from_blob(
                data, info.shape, [mapping](void*) {}, options);
        } else {  // unaligned data cannot be aliased safely by vectorised kernels
            out[info.name] = torch::empty(info.shape, options);
            std::memcpy(out[info.name].data_ptr(), data, info.nbytes());
        }
    }
    return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
    std::vector<torch::Tensor> keep;  // contiguous CPU copies live until the write finishes
    std::vector<st::TensorView> views;
    for (const auto& [name, tensor] : tensors) {
        keep.push_back(tensor.detach().to(torch::kCPU).contiguous());
        const torch::Tensor& t = keep.back();
        views.push_back({name, to_safetensors_dtype(t.scalar_type()), t.sizes().vec(), t.data_ptr(),
                         static_cast<std::size_t>(t.numel() * t.element_size())});
    }
    st::write(path, views, metadata);
}

std::string canonical_key(const std::string& key) {
    struct Rule {
        const char* from;
        const char* to;
    };
    // Suffix rewrites. Weight norm: torch.nn.utils.parametrizations (PyTorch >= 2.1) vs the
    // legacy weight_g/weight_v. VAE attention: diffusers < 0.14 names.
    static const Rule kSuffixRules[] = {
        {"parametrizations.weight.original0", "weight_g"},
        {"parametrizations.weight.original1", "weight_v"},
        {"attentions.0.query.weight", "attentions.0.to_q.weight"},
        {"attentions.0.query.bias", "attentions.0.to_q.bias"},
        {"attentions.0.key.weight", "attentions.0.to_k.weight"},
        {"attentions.0.key.bias", "attentions.0.to_k.bias"},
        {"attentions.0.value.weight", "attentions.0.to_v.weight"},
        {"attentions.0.value.bias", "attentions.0.to_v.bias"},
        {"attentions.0.proj_attn.weight", "attentions.0.to_out.0.weight"},
        {"attentions.0.proj_attn.bias", "attentions.0.to_out.0.bias"},
    };
    for (const Rule& r : kSuffixRules) {
        const std::string from = r.from;
        if (key.size() >= from.size() &&
            key.compare(key.size() - from.size(), from.size(), from) == 0 &&
            (key.size() == from.size() || key[key.size() - from.size() - 1] == '.'))
            return key.substr(0, key.size() - from.size()) + r.to;
    }
    return key;
}

namespace {

std::string shape_string(at::IntArrayRef sizes) {
    std::ostringstream os;
    os << sizes;
    return os.str();
}

void append_list(std::ostringstream& os, const char* title, const std::vector<std::string>& keys) {
    if (keys.empty()) return;
    os << "\n  " << title << " (" << keys.size() << "):";
    const std::size_t shown = std::min<std::size_t>(keys.size(), 40);
    for (std::size_t i = 0; i < shown; ++i)
        os << "\n    " << keys[i];
    if (shown < keys.size()) os << "\n    ... and " << keys.size() - shown << " more";
}

bool has_any_prefix(const std::string& key, const std::vector<std::string>& prefixes) {
    for (const auto& p : prefixes)
        if (key.rfind(p, 0) == 0) return true;
    return false;
}

}  // namespace

std::string LoadReport::describe() const {
    std::ostringstream os;
    os << "checkpoint does not match the model: " << missing.size() << " missing, "
       << unexpected.size() << " unexpected, " << mismatched.size() << " wrong shape";
    append_list(os, "missing", missing);
    append_list(os, "unexpected", unexpected);
    append_list(os, "wrong shape", mismatched);
    return os.str();
}

LoadReport load_state_dict(torch::nn::Module& module, const TensorMap& tensors,
                           const LoadOptions& options, const std::string& source) {
    TensorMap by_name;
    for (const auto& [key, tensor] : tensors) {
        if (key.rfind(options.prefix, 0) != 0) continue;
        by_name[canonical_key(key.substr(options.prefix.size()))] = tensor;
    }
    LoadReport report;
    std::map<std::string, torch::Tensor> targets;
    for (const auto& item : module.named_parameters(true))
        targets[item.key()] = item.value();
    for (const auto& item : module.named_buffers(true))
        targets[item.key()] = item.value();

    torch::NoGradGuard no_grad;
    for (auto& [name, target] : targets) {
        auto it = by_name.find(name);
        if (it == by_name.end()) {
            report.missing.push_back(options.prefix + name);
        } else if (it->second.sizes() != target.sizes()) {
            report.mismatched.push_back(options.prefix + name + ": file " +
                                        shape_string(it->second.sizes()) + " vs model " +
                                        shape_string(target.sizes()));
        } else {
            target.copy_(it->second);
            ++report.loaded;
        }
    }
    for (const auto& [name, tensor] : by_name)
        if (!targets.count(name) && !has_any_prefix(name, options.ignore_unexpected_prefixes))
            report.unexpected.push_back(options.prefix + name);

    if (options.strict && !report.ok())
        throw Error((source.empty() ? std::string() : source + ": ") + report.describe());
    return report;
}

TensorMap state_dict(const torch::nn::Module& module, const std::string& prefix) {
    TensorMap out;
    for (const auto& item : module.named_parameters(true))
        out[prefix + item.key()] = item.value();
    for (const auto& item : module.named_buffers(true))
        out[prefix + item.key()] = item.value();
    return out;
}

}  // namespace loopy
