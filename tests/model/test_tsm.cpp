// Loopy's temporal segment module: which history frames become motion frames, and masking.
#include <QtTest>

#include <numeric>
#include <set>

#include "core/error.h"
#include "model/temporal_segment.h"

using namespace loopy;
using model::SegmentSampling;
using model::TemporalSegmentOptions;

namespace {

TemporalSegmentOptions tsm(int64_t s, double r, int64_t k,
                           SegmentSampling sampling = SegmentSampling::Uniform) {
    TemporalSegmentOptions o;
    o.stride = s;
    o.expand_ratio = r;
    o.num_segments = k;
    o.sampling = sampling;
    return o;
}

// history[b, t] = t (+ 1000 b): a frame's value says where it came from.
torch::Tensor numbered_history(int64_t batch, int64_t length) {
    auto t = torch::arange(length, torch::kFloat32).unsqueeze(0);
    auto b = torch::arange(batch, torch::kFloat32).unsqueeze(1) * 1000;
    return (t + b).unsqueeze(-1);  // [B, H, 1]
}

std::vector<int64_t> as_vector(const torch::Tensor& t) {
    auto c = t.to(torch::kLong).contiguous();
    return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

class TemporalSegmentTest : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void default_indices();
    void other_settings();
    void no_expansion_is_the_last_frames();
    void abstraction_picks_those_frames();
    void mean_pooling();
    void masking_of_frames_not_generated();
    void random_sampling_stays_in_group();
    void motion_history_rolls();
    void rejects_bad_options();
};

// s=4, r=1, K=5: segments of 64, 32, 16, 8, 4 frames (oldest first) -> 4 frames each.
void TemporalSegmentTest::default_indices() {
    const auto o = tsm(4, 1, 5);
    QCOMPARE(model::history_length(o), int64_t{124});
    QCOMPARE(model::num_motion_frames(o), int64_t{20});
    const auto segments = model::temporal_segments(o);
    QCOMPARE(segments.size(), size_t{5});
    QCOMPARE(segments[0].begin, int64_t{0});
    QCOMPARE(segments[0].end, int64_t{64});
    QCOMPARE(segments[4].begin, int64_t{120});
    QCOMPARE(segments[4].end, int64_t{124});
    const std::vector<int64_t> expected{8,   24,  40,  56,  68,  76,  84,  92,  98,  102,
                                        106, 110, 113, 115, 117, 119, 120, 121, 122, 123};
    QCOMPARE(model::uniform_source_indices(o), expected);
}

void TemporalSegmentTest::other_settings() {
    // s=2, r=2, K=3: 18, 6, 2 frames; groups of 9, 3, 1.
    QCOMPARE(model::history_length(tsm(2, 2, 3)), int64_t{26});
    QCOMPARE(model::uniform_source_indices(tsm(2, 2, 3)),
             (std::vector<int64_t>{4, 13, 19, 22, 24, 25}));
    // s=4, r=0.25, K=4: round(4 * 1.25^k) = 8, 6, 5, 4 frames; uneven groups split at
    // floor(i * n / s): 6 -> [0,1) [1,3) [3,4) [4,6); 5 -> [0,1) [1,2) [2,3) [3,5).
    const auto o = tsm(4, 0.25, 4);
    QCOMPARE(model::history_length(o), int64_t{23});
    QCOMPARE(model::uniform_source_indices(o),
             (std::vector<int64_t>{1, 3, 5, 7, 8, 10, 11, 13, 14, 15, 16, 18, 19, 20, 21, 22}));
}

void TemporalSegmentTest::no_expansion_is_the_last_frames() {
    std::vector<int64_t> all(12);
    std::iota(all.begin(), all.end(), 0);
    QCOMPARE(model::uniform_source_indices(tsm(4, 0, 3)), all);
}

void TemporalSegmentTest::abstraction_picks_those_frames() {
    const auto o = tsm(4, 1, 5);
    auto out = model::abstract_history(numbered_history(2, 124), {}, o);
    QCOMPARE(out.frames.sizes().vec(), (std::vector<int64_t>{2, 20, 1}));
    QVERIFY(out.mask.all().item<bool>());
    QCOMPARE(as_vector(out.frames[0].squeeze(-1)), model::uniform_source_indices(o));
    auto second = out.frames[1].squeeze(-1) - 1000;
    QCOMPARE(as_vector(second), model::uniform_source_indices(o));
}

void TemporalSegmentTest::mean_pooling() {
    auto out =
        model::abstract_history(numbered_history(1, 124), {}, tsm(4, 1, 5, SegmentSampling::Mean));
    auto f = out.frames[0].squeeze(-1);
    QCOMPARE(f[0].item<float>(), 7.5f);     // mean of 0..15
    QCOMPARE(f[4].item<float>(), 67.5f);    // mean of 64..71
    QCOMPARE(f[12].item<float>(), 112.5f);  // mean of 112, 113
    QCOMPARE(f[19].item<float>(), 123.0f);
}

// Only the last 10 frames exist: earlier motion frames are zero and masked.
void TemporalSegmentTest::masking_of_frames_not_generated() {
    const auto o = tsm(4, 1, 5);
    auto valid = torch::zeros({1, 124}, torch::kBool);
    valid.narrow(1, 114, 10).fill_(true);
    auto history = numbered_history(1, 124) + 1;  // no frame is 0 by chance
    auto uniform = model::abstract_history(history, valid, o);
    const auto idx = model::uniform_source_indices(o);
    for (int64_t j = 0; j < 20; ++j) {
        const bool present = idx[j] >= 114;
        QCOMPARE(uniform.mask[0][j].item<bool>(), present);
        QCOMPARE(uniform.frames[0][j][0].item<float>(), present ? float(idx[j] + 1) : 0.0f);
    }
    auto mean = model::abstract_history(history, valid, tsm(4, 1, 5, SegmentSampling::Mean));
    QVERIFY(!mean.mask[0][12].item<bool>());  // group [112, 114): nothing generated yet
    QVERIFY(mean.mask[0][13].item<bool>());   // group [114, 116)
    QCOMPARE(mean.frames[0][12][0].item<float>(), 0.0f);
    QCOMPARE(mean.frames[0][13][0].item<float>(), 115.5f);  // mean of 115, 116 (values + 1)
}

void TemporalSegmentTest::random_sampling_stays_in_group() {
    const auto o = tsm(4, 1, 5, SegmentSampling::Random);
    const auto groups = model::motion_frame_groups(o);
    auto valid = torch::ones({3, 124}, torch::kBool);
    valid.narrow(1, 0, 100).fill_(false);
    std::set<int64_t> seen_in_first_group;
    for (uint64_t seed = 0; seed < 20; ++seed) {
        auto gen = at::detail::createCPUGenerator(seed);
        auto out = model::abstract_history(numbered_history(3, 124), valid, o, gen);
        for (int64_t b = 0; b < 3; ++b) {
            for (int64_t j = 0; j < 20; ++j) {
                const bool any_valid = groups[j].end > 100;
                QCOMPARE(out.mask[b][j].item<bool>(), any_valid);
                if (!any_valid) continue;
                const auto v = static_cast<int64_t>(out.frames[b][j][0].item<float>()) - 1000 * b;
                QVERIFY(v >= std::max<int64_t>(groups[j].begin, 100) && v < groups[j].end);
                if (j == 9) seen_in_first_group.insert(v);  // group [100, 104)
            }
        }
    }
    QVERIFY2(seen_in_first_group.size() > 1, "random sampling always picked the same frame");
    // The same generator seed gives the same frames.
    auto a = model::abstract_history(numbered_history(3, 124), valid, o,
                                     at::detail::createCPUGenerator(7));
    auto b = model::abstract_history(numbered_history(3, 124), valid, o,
                                     at::detail::createCPUGenerator(7));
    QVERIFY(torch::equal(a.frames, b.frames));
}

void TemporalSegmentTest::motion_history_rolls() {
    const auto o = tsm(2, 1, 2);  // 4 + 2 = 6 frames of history
    model::MotionHistory history(o, 1, {1});
    QVERIFY(!history.valid().any().item<bool>());
    history.push(torch::tensor({1.f, 2.f, 3.f, 4.f}).view({1, 4, 1}));
    QCOMPARE(as_vector(history.valid()[0]), (std::vector<int64_t>{0, 0, 1, 1, 1, 1}));
    history.push(torch::tensor({5.f, 6.f, 7.f, 8.f}).view({1, 4, 1}));
    QVERIFY(history.valid().all().item<bool>());
    QCOMPARE(as_vector(history.frames()[0].squeeze(-1)), (std::vector<int64_t>{3, 4, 5, 6, 7, 8}));
    // Groups [0,2) [2,4) [4,5) [5,6): centres 1, 3, 4, 5 -> values 4, 6, 7, 8.
    QCOMPARE(as_vector(history.abstract().frames[0].squeeze(-1)),
             (std::vector<int64_t>{4, 6, 7, 8}));
    history.reset();
    QVERIFY(!history.abstract().mask.any().item<bool>());
}

void TemporalSegmentTest::rejects_bad_options() {
    QVERIFY_EXCEPTION_THROWN(model::history_length(tsm(0, 1, 5)), Error);
    QVERIFY_EXCEPTION_THROWN(model::history_length(tsm(4, -1, 5)), Error);
    QVERIFY_EXCEPTION_THROWN(model::history_length(tsm(4, 1, 0)), Error);
    QVERIFY_EXCEPTION_THROWN(model::history_length(tsm(4, 10, 40)), Error);
    QVERIFY_EXCEPTION_THROWN(model::parse_segment_sampling("median"), Error);
    QVERIFY_EXCEPTION_THROWN(model::abstract_history(torch::zeros({1, 10, 1}), {}, tsm(4, 1, 5)),
                             Error);
}

QTEST_APPLESS_MAIN(TemporalSegmentTest)
#include "test_tsm.moc"
