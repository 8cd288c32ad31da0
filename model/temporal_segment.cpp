#include "model/temporal_segment.h"

#include <cmath>

#include "core/error.h"

namespace loopy::model {

namespace {

constexpr int64_t kMaxHistory = 100000;  // far beyond any clip history; stops runaway configs

std::vector<int64_t> segment_lengths_nearest_first(const TemporalSegmentOptions& o) {
    std::vector<int64_t> lengths;
    for (int64_t k = 0; k < o.num_segments; ++k)
        lengths.push_back(static_cast<int64_t>(
            std::llround(static_cast<double>(o.stride) * std::pow(1.0 + o.expand_ratio, k))));
    return lengths;
}

// Broadcasts a [B, M] mask over a [B, M, ...] tensor.
torch::Tensor expand_mask(const torch::Tensor& mask, const torch::Tensor& like) {
    auto shape = mask.sizes().vec();
    shape.resize(like.dim(), 1);
    return mask.view(shape);
}

MotionFrames sample_uniform(const torch::Tensor& history, const torch::Tensor& valid,
                            const TemporalSegmentOptions& o) {
    auto index = torch::tensor(uniform_source_indices(o), torch::kLong).to(history.device());
    auto mask = valid.index_select(1, index);
    auto frames = history.index_select(1, index) * expand_mask(mask, history).to(history.dtype());
    return {frames, mask};
}

MotionFrames sample_mean(const torch::Tensor& history, const torch::Tensor& valid,
                         const TemporalSegmentOptions& o) {
    std::vector<torch::Tensor> frames, masks;
    for (const auto& g : motion_frame_groups(o)) {
        auto w = valid.narrow(1, g.begin, g.size());                    // [B, n]
        auto x = history.narrow(1, g.begin, g.size());                  // [B, n, ...]
        auto count = w.sum(1).to(history.dtype());                      // [B]
        auto sum = (x * expand_mask(w, x).to(history.dtype())).sum(1);  // [B, ...]
        frames.push_back(sum / expand_mask(count.clamp_min(1), sum));
        masks.push_back(count > 0);
    }
    return {torch::stack(frames, 1), torch::stack(masks, 1)};
}

MotionFrames sample_random(const torch::Tensor& history, const torch::Tensor& valid,
                           const TemporalSegmentOptions& o, c10::optional<at::Generator> gen) {
    const auto groups = motion_frame_groups(o);
    const int64_t b = history.size(0), m = static_cast<int64_t>(groups.size());
    auto u = torch::rand({b, m}, gen, torch::kDouble);
    auto valid_cpu = valid.to(torch::kCPU);
    auto ok = valid_cpu.accessor<bool, 2>();
    auto uu = u.accessor<double, 2>();
    auto index = torch::zeros({b, m}, torch::kLong);
    auto mask = torch::zeros({b, m}, torch::kBool);
    for (int64_t i = 0; i < b; ++i) {
        for (int64_t j = 0; j < m; ++j) {
            std::vector<int64_t> candidates;
            for (int64_t t = groups[j].begin; t < groups[j].end; ++t)
                if (ok[i][t]) candidates.push_back(t);
            if (candidates.empty()) continue;
            const auto pick =
                static_cast<size_t>(uu[i][j] * static_cast<double>(candidates.size()));
            index[i][j] = candidates[std::min(pick, candidates.size() - 1)];
            mask[i][j] = true;
        }
    }
    index = index.to(history.device());
    mask = mask.to(history.device());
    auto shape = index.sizes().vec();
    shape.resize(history.dim(), 1);
    auto gather_index = index.view(shape).expand([&] {
        auto s = history.sizes().vec();
        s[1] = m;
        return s;
    }());
    auto frames = history.gather(1, gather_index) * expand_mask(mask, history).to(history.dtype());
    return {frames, mask};
}

}  // namespace

std::string to_string(SegmentSampling sampling) {
    switch (sampling) {
        case SegmentSampling::Uniform:
            return "uniform";
        case SegmentSampling::Mean:
            return "mean";
        case SegmentSampling::Random:
            return "random";
    }
    return "uniform";
}

SegmentSampling parse_segment_sampling(const std::string& name) {
    if (name == "uniform") return SegmentSampling::Uniform;
    if (name == "mean") return SegmentSampling::Mean;
    if (name == "random") return SegmentSampling::Random;
    throw Error("temporal segment sampling '" + name + "' is not one of uniform, mean, random");
}

void TemporalSegmentOptions::validate() const {
    const std::string where = "temporal segment module: ";
    if (stride < 1) throw Error(where + "stride must be >= 1, got " + std::to_string(stride));
    if (!(expand_ratio >= 0) || !std::isfinite(expand_ratio))
        throw Error(where + "expand_ratio must be >= 0, got " + std::to_string(expand_ratio));
    if (num_segments < 1)
        throw Error(where + "num_segments must be >= 1, got " + std::to_string(num_segments));
    const double total =
        static_cast<double>(stride) *
        (expand_ratio == 0 ? static_cast<double>(num_segments)
                           : (std::pow(1.0 + expand_ratio, num_segments) - 1) / expand_ratio);
    if (total > static_cast<double>(kMaxHistory))
        throw Error(where + "stride " + std::to_string(stride) + ", expand_ratio " +
                    std::to_string(expand_ratio) + " and " + std::to_string(num_segments) +
                    " segments span more than " + std::to_string(kMaxHistory) + " frames");
}

std::vector<FrameRange> temporal_segments(const TemporalSegmentOptions& o) {
    o.validate();
    auto lengths = segment_lengths_nearest_first(o);
    std::vector<FrameRange> out;
    int64_t begin = 0;
    for (auto it = lengths.rbegin(); it != lengths.rend(); ++it) {  // oldest first
        out.push_back({begin, begin + *it});
        begin += *it;
    }
    return out;
}

int64_t history_length(const TemporalSegmentOptions& o) {
    return temporal_segments(o).back().end;
}

int64_t num_motion_frames(const TemporalSegmentOptions& o) {
    o.validate();
    return o.num_segments * o.stride;
}

std::vector<FrameRange> motion_frame_groups(const TemporalSegmentOptions& o) {
    std::vector<FrameRange> groups;
    for (const auto& seg : temporal_segments(o)) {
        const int64_t n = seg.size();
        for (int64_t i = 0; i < o.stride; ++i)
            groups.push_back({seg.begin + i * n / o.stride, seg.begin + (i + 1) * n / o.stride});
    }
    return groups;
}

std::vector<int64_t> uniform_source_indices(const TemporalSegmentOptions& o) {
    std::vector<int64_t> out;
    for (const auto& g : motion_frame_groups(o))
        out.push_back(g.begin + g.size() / 2);
    return out;
}

MotionFrames abstract_history(const torch::Tensor& history, const torch::Tensor& valid_in,
                              const TemporalSegmentOptions& o,
                              c10::optional<at::Generator> generator) {
    const int64_t h = history_length(o);
    if (history.dim() < 2 || history.size(1) != h)
        throw Error("temporal segment module: history must be [B, " + std::to_string(h) +
                    ", ...] for these options, got " + c10::str(history.sizes()));
    auto valid = valid_in.defined()
                     ? valid_in.to(torch::kBool)
                     : torch::ones({history.size(0), h}, history.options().dtype(torch::kBool));
    if (valid.sizes() != torch::IntArrayRef({history.size(0), h}))
        throw Error("temporal segment module: valid must be [B, " + std::to_string(h) + "], got " +
                    c10::str(valid.sizes()));
    switch (o.sampling) {
        case SegmentSampling::Mean:
            return sample_mean(history, valid, o);
        case SegmentSampling::Random:
            return sample_random(history, valid, o, generator);
        case SegmentSampling::Uniform:
            break;
    }
    return sample_uniform(history, valid, o);
}

// --- MotionHistory ---

MotionHistory::MotionHistory(const TemporalSegmentOptions& options, int64_t batch,
                             std::vector<int64_t> frame_shape, torch::TensorOptions tensor_options)
    : options_(options) {
    std::vector<int64_t> shape{batch, history_length(options)};
    shape.insert(shape.end(), frame_shape.begin(), frame_shape.end());
    frames_ = torch::zeros(shape, tensor_options);
    valid_ = torch::zeros({batch, shape[1]}, tensor_options.dtype(torch::kBool));
}

void MotionHistory::push(const torch::Tensor& frames) {
    if (frames.dim() != frames_.dim() || frames.size(0) != frames_.size(0) ||
        frames.sizes().slice(2) != frames_.sizes().slice(2))
        throw Error("MotionHistory::push: frames must be [B, n] + " +
                    c10::str(frames_.sizes().slice(2)) + ", got " + c10::str(frames.sizes()));
    const int64_t h = frames_.size(1);
    auto ones = torch::ones({frames.size(0), frames.size(1)}, valid_.options());
    const int64_t start = frames.size(1);  // drop the oldest n frames
    frames_ = torch::cat({frames_, frames.to(frames_.options())}, 1).narrow(1, start, h);
    valid_ = torch::cat({valid_, ones}, 1).narrow(1, start, h);
    frames_ = frames_.contiguous();
    valid_ = valid_.contiguous();
}

void MotionHistory::reset() {
    frames_.zero_();
    valid_.zero_();
}

MotionFrames MotionHistory::abstract(c10::optional<at::Generator> generator) const {
    return abstract_history(frames_, valid_, options_, generator);
}

}  // namespace loopy::model
