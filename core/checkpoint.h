#pragma once
// Tensors in and out of safetensors files, and strict loading of a module tree by name.
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "core/safetensors.h"

namespace loopy {

using TensorMap = std::map<std::string, torch::Tensor>;
using Metadata = std::map<std::string, std::string>;

torch::ScalarType to_scalar_type(safetensors::DType dtype);  // throws for dtypes LibTorch lacks
safetensors::DType to_safetensors_dtype(torch::ScalarType type);

// Tensors alias the file's memory mapping (copy-on-write) where the data is aligned; the mapping
// lives as long as any tensor does.
TensorMap load_safetensors(const std::string& path, Metadata* metadata = nullptr);

// Atomic write (temporary file + rename). Tensors are made contiguous on the CPU first.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const Metadata& metadata = {});

// Upstream checkpoints name some tensors in more than one way (weight-norm parametrisations,
// diffusers' pre-0.14 VAE attention names). This maps a file's key to the name our modules use;
// it is the one place such rules live.
std::string canonical_key(const std::string& key);

struct LoadOptions {
    std::string prefix;  // only keys under this prefix are considered, with the prefix stripped
    bool strict = true;  // throw if anything is missing, unexpected or of the wrong shape
    std::vector<std::string> ignore_unexpected_prefixes;  // e.g. a CTC head we do not build
};

struct LoadReport {
    std::vector<std::string> missing;
    std::vector<std::string> unexpected;
    std::vector<std::string> mismatched;  // "name: file [..] vs model [..]"
    std::size_t loaded = 0;
    bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
    std::string describe() const;
};

// Copies tensors into the module's parameters and buffers by name, converting dtype. With
// options.strict, every problem is collected and reported in one loopy::Error.
LoadReport load_state_dict(torch::nn::Module& module, const TensorMap& tensors,
                           const LoadOptions& options = {}, const std::string& source = "");

// The module's parameters and buffers by name, with an optional prefix ("vae.").
TensorMap state_dict(const torch::nn::Module& module, const std::string& prefix = "");

}  // namespace loopy
