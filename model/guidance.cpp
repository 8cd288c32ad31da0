#include "model/guidance.h"

#include <nlohmann/json.hpp>

#include <cmath>

#include "core/error.h"

namespace loopy::model {

GuidanceWeights::GuidanceWeights(double reference_ratio, double audio_ratio)
    : weight{1.0 - reference_ratio, reference_ratio - audio_ratio, audio_ratio} {}

std::vector<GuidancePass> GuidanceWeights::passes() const {
    std::vector<GuidancePass> out;
    for (int i = 0; i < 3; ++i)
        if (weight[i] != 0.0) out.push_back(static_cast<GuidancePass>(i));
    // All weights zero cannot happen (they sum to 1), but keep one pass regardless.
    if (out.empty()) out.push_back(GuidancePass::ReferenceAudio);
    return out;
}

torch::Tensor guidance_formula(const torch::Tensor& e_none, const torch::Tensor& e_ref,
                               const torch::Tensor& e_ref_audio, double reference_ratio,
                               double audio_ratio) {
    return e_none + reference_ratio * (e_ref - e_none) + audio_ratio * (e_ref_audio - e_ref);
}

DropFlags guidance_drop_flags(const std::vector<GuidancePass>& passes, torch::Device device) {
    std::vector<uint8_t> reference, audio;
    for (auto pass : passes) {
        reference.push_back(pass == GuidancePass::None);
        audio.push_back(pass != GuidancePass::ReferenceAudio);
    }
    const auto n = static_cast<int64_t>(passes.size());
    auto as_tensor = [&](const std::vector<uint8_t>& v) {
        return torch::from_blob(const_cast<uint8_t*>(v.data()), {n}, torch::kUInt8)
            .to(device, torch::kBool);
    };
    DropFlags flags;
    flags.reference = as_tensor(reference);
    flags.audio = as_tensor(audio);
    return flags;
}

torch::Tensor combine_guidance(const torch::Tensor& predictions,
                               const std::vector<GuidancePass>& passes,
                               const GuidanceWeights& weights) {
    if (predictions.size(0) != static_cast<int64_t>(passes.size()))
        throw Error("combine_guidance: one prediction per pass expected");
    torch::Tensor out;
    for (size_t i = 0; i < passes.size(); ++i) {
        auto term = predictions[static_cast<int64_t>(i)] * weights.weight[int(passes[i])];
        out = out.defined() ? out + term : term;
    }
    return out.unsqueeze(0);
}

std::optional<GuidanceRatios> recommended_guidance(const Metadata& metadata,
                                                   const std::string& source) {
    const auto it = metadata.find(kGuidanceKey);
    if (it == metadata.end()) return std::nullopt;
    const auto bad = [&](const std::string& why) {
        return Error(source + ": metadata '" + kGuidanceKey + "' " + why +
                     " (expected {\"audio\": A, \"reference\": R})");
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception&) {
        throw bad("is not valid JSON");
    }
    GuidanceRatios r;
    for (auto [key, value] : {std::pair{"audio", &r.audio}, std::pair{"reference", &r.reference}}) {
        if (!j.is_object() || !j.contains(key) || !j[key].is_number())
            throw bad(std::string("has no number '") + key + "'");
        *value = j[key].get<double>();
        if (!std::isfinite(*value) || *value < 0 || *value > 100)
            throw bad(std::string("has '") + key + "' outside 0..100");
    }
    return r;
}

Metadata guidance_metadata(const GuidanceRatios& ratios) {
    return {{kGuidanceKey,
             nlohmann::json{{"audio", ratios.audio}, {"reference", ratios.reference}}.dump()}};
}

}  // namespace loopy::model
