#include "model/motion_features.h"

#include <algorithm>
#include <iterator>
#include <string>

#include "core/error.h"

namespace loopy::model {

std::vector<int64_t> motion_frame_ids(const TemporalSegmentOptions& options, int64_t first_frame) {
    if (options.sampling != SegmentSampling::Uniform) return {};
    auto ids = uniform_source_indices(options);
    for (auto& id : ids)
        id += first_frame - history_length(options);
    return ids;
}

MotionBank MotionFeatureCache::encode(ReferenceNetImpl& net, const torch::Tensor& latents,
                                      const torch::Tensor& mask,
                                      const std::vector<int64_t>& frame_ids) {
    if (latents.dim() != 5 || latents.size(0) != 1)
        throw Error("MotionFeatureCache: motion latents must be [1, M, C, h, w]");
    const int64_t m = latents.size(1);
    if (!mask.defined() || mask.numel() != m || static_cast<int64_t>(frame_ids.size()) != m)
        throw Error("MotionFeatureCache: needs a mask and a frame id per motion frame (" +
                    std::to_string(m) + ")");
    const auto present = mask.reshape({m}).to(torch::kCPU, torch::kBool);
    const auto* is_present = present.data_ptr<bool>();

    // The frames present and not stored yet, each once.
    std::vector<int64_t> slots;
    std::vector<int64_t> new_ids;
    for (int64_t i = 0; i < m; ++i) {
        const int64_t id = frame_ids[static_cast<size_t>(i)];
        if (!is_present[i] || frames_.count(id) ||
            std::find(new_ids.begin(), new_ids.end(), id) != new_ids.end())
            continue;
        slots.push_back(i);
        new_ids.push_back(id);
    }
    if (!slots.empty()) {
        const auto index = torch::tensor(slots, torch::kLong).to(latents.device());
        const auto fresh = net.encode_motion(latents.index_select(1, index));
        for (size_t j = 0; j < new_ids.size(); ++j) {
            auto& sites = frames_[new_ids[j]];
            for (const auto& site : fresh.sites)
                sites.push_back(site[0][static_cast<int64_t>(j)]);
        }
        encoded_ += static_cast<int64_t>(slots.size());
    }

    MotionBank bank;
    bank.mask = mask.reshape({1, m}).to(torch::kBool);
    const auto shapes =
        bank_shapes(net.config, 1, m, latents.size(3), latents.size(4)).motion;  // [1, M, C, h, w]
    for (size_t s = 0; s < shapes.size(); ++s) {
        // One zero frame per site serves every absent motion frame (stack copies it).
        const auto absent =
            torch::zeros({shapes[s][2], shapes[s][3], shapes[s][4]}, latents.options());
        std::vector<torch::Tensor> per_frame;
        for (int64_t i = 0; i < m; ++i)
            per_frame.push_back(is_present[i] ? frames_.at(frame_ids[static_cast<size_t>(i)])[s]
                                              : absent);
        bank.sites.push_back(torch::stack(per_frame).unsqueeze(0));
    }
    return bank;
}

void MotionFeatureCache::forget_unneeded(const TemporalSegmentOptions& options,
                                         int64_t next_first_frame, int64_t clip_frames) {
    const auto sources = uniform_source_indices(options);
    const int64_t history = history_length(options);
    for (auto it = frames_.begin(); it != frames_.end();) {
        const int64_t position = it->first - next_first_frame + history;
        const bool sampled_again = std::any_of(sources.begin(), sources.end(), [&](int64_t source) {
            return source <= position && (position - source) % clip_frames == 0;
        });
        it = sampled_again ? std::next(it) : frames_.erase(it);
    }
}

}  // namespace loopy::model
