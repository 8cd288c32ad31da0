#pragma once
// Shared by the parity tests: where the reference tensors live and how to compare with them.
#include <torch/torch.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "core/checkpoint.h"

namespace loopy::test {

// $LOOPY_GOLDENS if set (another reference set with the same file names), else the copy in
// tests/data/goldens.
inline std::string goldens_dir() {
    if (const char* env = std::getenv("LOOPY_GOLDENS"); env && *env) return env;
    return std::string(LOOPY_TEST_DATA) + "/goldens";
}

struct Golden {
    TensorMap tensors;
    Metadata metadata;
    nlohmann::json config;  // metadata["config"], the upstream config of the tiny model

    const torch::Tensor& at(const std::string& key) const {
        auto it = tensors.find(key);
        if (it == tensors.end()) throw std::runtime_error("golden has no tensor '" + key + "'");
        return it->second;
    }
    // Weights only (no in.* / out.*), as a real checkpoint would hold them.
    TensorMap weights() const {
        TensorMap w;
        for (const auto& [k, v] : tensors)
            if (k.rfind("in.", 0) != 0 && k.rfind("out.", 0) != 0) w[k] = v;
        return w;
    }
};

inline Golden load_golden(const std::string& file) {
    Golden g;
    g.tensors = load_safetensors(goldens_dir() + "/" + file, &g.metadata);
    if (g.metadata.count("config")) g.config = nlohmann::json::parse(g.metadata["config"]);
    return g;
}

// ||out - ref|| / ||ref||, computed in float64.
inline double relative_error(const torch::Tensor& out, const torch::Tensor& ref) {
    auto o = out.detach().to(torch::kDouble);
    auto r = ref.detach().to(torch::kDouble);
    return (o - r).norm().item<double>() / std::max(r.norm().item<double>(), 1e-30);
}

constexpr double kParityTolerance = 1e-4;

}  // namespace loopy::test
