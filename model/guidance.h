#pragma once
// Loopy's three-pass classifier-free guidance:
//   e = e(none) + ref * (e(ref) - e(none)) + audio * (e(ref, audio) - e(ref))
// "none" drops the reference (and with it the motion frames) and the audio; "ref" drops only the
// audio; "ref, audio" drops nothing. Rewritten as weights of the three passes,
//   e = (1 - ref) e(none) + (ref - audio) e(ref) + audio e(ref, audio),
// a pass whose weight is zero need not run (ratios 1/1: only the fully conditioned pass).
#include <torch/torch.h>

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "model/loopy_unet.h"

namespace loopy::model {

enum class GuidancePass { None = 0, Reference = 1, ReferenceAudio = 2 };

struct GuidanceWeights {
    std::array<double, 3> weight{};  // per GuidancePass
    explicit GuidanceWeights(double reference_ratio, double audio_ratio);
    // The passes with a non-zero weight, in GuidancePass order (at least one).
    std::vector<GuidancePass> passes() const;
};

// The formula above, literally (tests compare the pass-weight form with it).
torch::Tensor guidance_formula(const torch::Tensor& e_none, const torch::Tensor& e_ref,
                               const torch::Tensor& e_ref_audio, double reference_ratio,
                               double audio_ratio);

// The ratios a checkpoint recommends (what its model card found best), metadata key
// kGuidanceKey as JSON {"audio": A, "reference": R}; tools use them when the user gives none.
inline constexpr const char* kGuidanceKey = "loopy.guidance";
struct GuidanceRatios {
    double audio = 5.0;  // the method's defaults
    double reference = 3.0;
};
// nullopt without the key; loopy::Error naming `source` when it is malformed.
std::optional<GuidanceRatios> recommended_guidance(const Metadata& metadata,
                                                   const std::string& source);
Metadata guidance_metadata(const GuidanceRatios& ratios);

// Per-item drop flags for a batch holding `passes` (one item each, in order).
DropFlags guidance_drop_flags(const std::vector<GuidancePass>& passes, torch::Device device);

// sum over passes of weight * prediction; predictions [P, ...] in `passes` order.
torch::Tensor combine_guidance(const torch::Tensor& predictions,
                               const std::vector<GuidancePass>& passes,
                               const GuidanceWeights& weights);

}  // namespace loopy::model
