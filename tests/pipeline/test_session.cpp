// The engine's generation session (core/engine.h) with random-weight tiny models: guidance,
// motion history, streaming, caching, determinism, settings changes and cancellation.
#include <QtTest>

#include <set>
#include <thread>

#include "core/decode_worker.h"
#include "core/engine.h"
#include "core/flop_counter.h"
#include "core/resources.h"
#include "model/cpu_attention.h"
#include "model/cpu_dispatch.h"
#include "model/cpu_feed_forward.h"
#include "model/cpu_geglu.h"
#include "model/cpu_group_norm.h"
#include "model/cpu_layer_norm.h"
#include "model/cpu_linear.h"
#include "model/guidance.h"
#include "model/temporal_segment.h"
#include "operator_calls.h"
#include "pipeline/tiny_model.h"
#include "test_util.h"

using namespace loopy;

namespace {

constexpr int kSize = 64;

struct Output {
    std::vector<Frame> frames;
    SessionStats stats;
    torch::Tensor history;
};

GenerationSettings fast_settings(int steps = 3) {
    GenerationSettings s;
    s.steps = steps;
    s.seed = 7;
    return s;
}

// Generates a whole utterance, pushing it in chunks of `chunk` samples (0: at once).
Output generate(const std::shared_ptr<Model>& model, const std::vector<float>& audio,
                const GenerationSettings& settings, size_t chunk = 0,
                const std::vector<uint8_t>& portrait = test::test_portrait(kSize)) {
    Session session(model, portrait.data(), kSize, kSize, settings);
    Output out;
    auto keep = [&](const Frame& f) { out.frames.push_back(f); };
    if (chunk == 0) chunk = audio.size();
    for (size_t i = 0; i < audio.size(); i += chunk) {
        session.push_audio(audio.data() + i, std::min(chunk, audio.size() - i));
        session.generate(keep);
    }
    session.end_audio();
    session.generate(keep);
    out.stats = session.stats();
    out.history = session.motion_history().frames().clone();
    return out;
}

bool same_frames(const Output& a, const Output& b) {
    if (a.frames.size() != b.frames.size()) return false;
    for (size_t i = 0; i < a.frames.size(); ++i)
        if (a.frames[i].rgb != b.frames[i].rgb || a.frames[i].index != b.frames[i].index)
            return false;
    return true;
}

// The random tiny model of the tests with a random fast preview decoder.
std::shared_ptr<Model> preview_model() {
    auto net = test::random_network(test::tiny_config(kSize));
    return Model::from_network(net, {}, test::random_preview(net->config, 3));
}

int max_pixel_difference(const Output& a, const Output& b) {
    int worst = 0;
    for (size_t i = 0; i < std::min(a.frames.size(), b.frames.size()); ++i)
        for (size_t j = 0; j < a.frames[i].rgb.size(); ++j)
            worst = std::max(worst, std::abs(int(a.frames[i].rgb[j]) - int(b.frames[i].rgb[j])));
    return worst;
}

}  // namespace

class SessionTest : public QObject {
    Q_OBJECT
    std::shared_ptr<Model> model_ = test::random_model(kSize);

  private Q_SLOTS:
    void guidanceFormulaOnKnownTensors() {
        const auto e0 = torch::full({1, 2}, 1.0), e1 = torch::full({1, 2}, 2.0),
                   e2 = torch::full({1, 2}, 4.0);
        // 1 + 3 (2 - 1) + 5 (4 - 2) = 14
        QCOMPARE(model::guidance_formula(e0, e1, e2, 3.0, 5.0)[0][0].item<double>(), 14.0);
        const model::GuidanceWeights w(3.0, 5.0);
        QCOMPARE(int(w.passes().size()), 3);
        const auto combined = model::combine_guidance(torch::cat({e0, e1, e2}), w.passes(), w);
        QCOMPARE(combined[0][0].item<double>(), 14.0);
        // Random predictions and ratios: the pass-weight form equals the formula.
        torch::manual_seed(3);
        const auto p = torch::randn({3, 2, 4, 5});
        for (auto [ref, audio] : std::vector<std::pair<double, double>>{{3, 5}, {1.5, 0}, {0, 2}}) {
            const model::GuidanceWeights weights(ref, audio);
            std::vector<torch::Tensor> used;
            for (auto pass : weights.passes())
                used.push_back(p[int(pass)]);
            const auto got = model::combine_guidance(torch::stack(used), weights.passes(), weights);
            const auto want = model::guidance_formula(p[0], p[1], p[2], ref, audio);
            QVERIFY(torch::allclose(got[0], want, 1e-5, 1e-5));
        }
        // Which passes run: 0/0 only the unconditional one, 1/1 only the full one.
        QVERIFY(model::GuidanceWeights(0, 0).passes() ==
                std::vector<model::GuidancePass>{model::GuidancePass::None});
        QVERIFY(model::GuidanceWeights(1, 1).passes() ==
                std::vector<model::GuidancePass>{model::GuidancePass::ReferenceAudio});
    }

    void zeroRatiosGiveTheUnconditionalOutput() {
        // With ratios 0/0 only e(none) counts: neither the portrait nor the audio matters.
        auto settings = fast_settings();
        settings.reference_ratio = settings.audio_ratio = 0;
        std::vector<uint8_t> other_portrait(kSize * kSize * 3, 90);
        const auto a = generate(model_, test::test_audio(0.6), settings);
        const auto b = generate(model_, test::test_audio(0.6, 2.0), settings, 0, other_portrait);
        QVERIFY(same_frames(a, b));
        // Control: with guidance both change the frames.
        settings = fast_settings();
        const auto c = generate(model_, test::test_audio(0.6), settings);
        const auto d = generate(model_, test::test_audio(0.6, 2.0), settings, 0, other_portrait);
        QVERIFY(!same_frames(c, d));
        QVERIFY(!same_frames(a, c));
    }

    void batchedGuidanceEqualsSeparatePasses() {
        auto settings = fast_settings();
        settings.batch_guidance = true;
        const auto batched = generate(model_, test::test_audio(0.9), settings);
        settings.batch_guidance = false;
        const auto separate = generate(model_, test::test_audio(0.9), settings);
        QCOMPARE(batched.frames.size(), separate.frames.size());
        QVERIFY(torch::allclose(batched.history, separate.history, 1e-4, 1e-4));
        QVERIFY(max_pixel_difference(batched, separate) <= 1);
    }

    void motionHistoryKeepsTheLatestFramesInOrder() {
        model::TemporalSegmentOptions tsm;
        model::MotionHistory history(tsm, 1, {1});
        const int64_t h = model::history_length(tsm);
        QCOMPARE(history.valid().sum().item<int64_t>(), 0);
        QVERIFY(!history.abstract().mask.any().item<bool>());  // nothing generated yet
        for (int clip = 0; clip < 12; ++clip) {
            auto frames = torch::arange(clip * 12, clip * 12 + 12, torch::kFloat32) + 1;
            history.push(frames.reshape({1, 12, 1}));
            const int64_t pushed = (clip + 1) * 12;
            QCOMPARE(history.valid().sum().item<int64_t>(), std::min(pushed, h));
            // The newest frame last, then older ones in order.
            for (int64_t i = 0; i < std::min(pushed, h); ++i)
                QCOMPARE(history.frames()[0][h - 1 - i][0].item<float>(), float(pushed - i));
            // Uniform TSM output: the value at each source index, masked where not yet generated.
            const auto motion = history.abstract();
            const auto sources = model::uniform_source_indices(tsm);
            for (size_t m = 0; m < sources.size(); ++m) {
                const bool exists = sources[m] >= h - pushed;
                QCOMPARE(motion.mask[0][int64_t(m)].item<bool>(), exists);
                const float want = exists ? history.frames()[0][sources[m]][0].item<float>() : 0.0f;
                QCOMPARE(motion.frames[0][int64_t(m)][0].item<float>(), want);
            }
        }
    }

    void sessionFillsItsHistoryClipByClip() {
        Session session(model_, test::test_portrait(kSize).data(), kSize, kSize, fast_settings(1));
        const auto audio = test::test_audio(2.0);  // 50 frames: 5 clips (the last partial)
        session.push_audio(audio.data(), audio.size());
        session.end_audio();
        int64_t clips = 0;
        while (session.clip_ready()) {
            session.generate_clip({});
            ++clips;
            QCOMPARE(session.motion_history().valid().sum().item<int64_t>(),
                     std::min<int64_t>(clips * 12, 124));
        }
        QCOMPARE(clips, int64_t(5));
        QCOMPARE(session.next_frame(), int64_t(60));
        QVERIFY(session.finished());
    }

    void streamingInChunksEqualsTheWholeFile() {
        const auto audio = test::test_audio(1.3);
        const auto whole = generate(model_, audio, fast_settings());
        const auto chunked = generate(model_, audio, fast_settings(), 1234);
        const auto tiny_chunks = generate(model_, audio, fast_settings(), 160);
        QCOMPARE(int(whole.frames.size()), 33);  // ceil(1.3 * 25)
        QVERIFY(same_frames(whole, chunked));
        QVERIFY(same_frames(whole, tiny_chunks));
        for (size_t i = 0; i < whole.frames.size(); ++i) {
            QCOMPARE(whole.frames[i].index, int64_t(i));
            QCOMPARE(whole.frames[i].timestamp, double(i) / 25.0);
        }
    }

    void referenceIsEncodedOncePerPortrait() {
        const auto out = generate(model_, test::test_audio(1.5), fast_settings(4));
        QCOMPARE(out.stats.clips, int64_t(4));
        QCOMPARE(out.stats.reference_encode.calls, int64_t(1));
        QCOMPARE(out.stats.motion_encode.calls, out.stats.clips);     // once per clip
        QCOMPARE(out.stats.audio_encoder.calls, out.stats.clips);     // once per clip
        QCOMPARE(out.stats.denoise_step.calls, 4 * out.stats.clips);  // one call per step
        QCOMPARE(out.stats.vae_decode.calls, int64_t(38));            // per frame emitted
    }

    void motionCacheKeepsTheFrames() {
        // ModelOptions::motion_cache: each history frame through the ReferenceNet once (on)
        // against all 20 motion frames every clip (off); 4 clips, so later clips reuse frames.
        auto with = [](ModelOptions::MotionCache cache) {
            ModelOptions options;
            options.motion_cache = cache;
            return Model::from_network(test::random_network(test::tiny_config(kSize), 1), options);
        };
        const auto audio = test::test_audio(1.8);
        const auto on = generate(with(ModelOptions::MotionCache::On), audio, fast_settings(2));
        const auto off = generate(with(ModelOptions::MotionCache::Off), audio, fast_settings(2));
        QCOMPARE(on.frames.size(), off.frames.size());
        QVERIFY(on.stats.clips >= 4);
        const int diff = max_pixel_difference(on, off);
        QVERIFY2(diff <= 1, qPrintable(QString("max difference %1 of 255").arg(diff)));
    }

    void sameSeedSameFramesOtherSeedOtherFrames() {
        auto settings = fast_settings();
        const auto a = generate(model_, test::test_audio(0.7), settings);
        const auto b = generate(model_, test::test_audio(0.7), settings);
        QVERIFY(same_frames(a, b));
        settings.seed = 8;
        const auto c = generate(model_, test::test_audio(0.7), settings);
        QVERIFY(!same_frames(a, c));
    }

    void settingsChangeFromTheNextClip() {
        Session session(model_, test::test_portrait(kSize).data(), kSize, kSize, fast_settings(2));
        const auto audio = test::test_audio(1.0);
        session.push_audio(audio.data(), audio.size());
        session.end_audio();
        bool changed = false;
        session.generate_clip({}, [&](const Progress& p) {
            if (!changed && p.step == 1) {  // in the middle of clip 0
                session.set_settings(fast_settings(5));
                changed = true;
            }
        });
        QCOMPARE(session.stats().denoise_step.calls, int64_t(2));  // clip 0 kept its 2 steps
        session.generate_clip({});
        QCOMPARE(session.stats().denoise_step.calls, int64_t(7));  // clip 1 ran 5
        auto bad = fast_settings();
        bad.steps = 0;
        QVERIFY(test::contains(test::error_of([&] { session.set_settings(bad); }), "steps"));
        QCOMPARE(session.settings().steps, 5);
    }

    void cancelStopsBetweenStepsAndLosesNothing() {
        const auto audio = test::test_audio(1.0);
        const auto reference = generate(model_, audio, fast_settings());
        Session session(model_, test::test_portrait(kSize).data(), kSize, kSize, fast_settings());
        session.push_audio(audio.data(), audio.size());
        session.end_audio();
        std::vector<Frame> frames;
        auto keep = [&](const Frame& f) { frames.push_back(f); };
        session.generate_clip(keep);
        bool threw = false;
        try {
            session.generate_clip(keep, [&](const Progress& p) {
                if (p.step == 1) session.cancel();
            });
        } catch (const Cancelled&) {
            threw = true;
        }
        QVERIFY(threw);
        QCOMPARE(int(frames.size()), 12);  // nothing of the cancelled clip
        QCOMPARE(session.next_frame(), int64_t(12));
        session.reset_cancel();
        session.generate(keep);
        Output resumed;
        resumed.frames = frames;
        QVERIFY(same_frames(resumed, reference));  // the cancelled clip, redone, is identical
    }

    void decodeWorkerGivesTheSameFramesInOrder() {
        // Clip n decoded on the worker (1 thread) while clip n+1 is denoised: the frames of the
        // plain loop, in order, from the worker's thread.
        const auto audio = test::test_audio(1.3);
        const auto plain = generate(model_, audio, fast_settings());
        for (const auto decoder : {Decoder::full, Decoder::preview}) {
            auto settings = fast_settings();
            settings.decoder = decoder;
            auto model = decoder == Decoder::preview ? preview_model() : model_;
            const auto reference =
                decoder == Decoder::full ? plain : generate(model, audio, settings);
            Session session(model, test::test_portrait(kSize).data(), kSize, kSize, settings);
            session.push_audio(audio.data(), audio.size());
            session.end_audio();
            Output overlapped;
            std::set<std::thread::id> threads;
            {
                DecodeWorker worker(session, [&](const Frame& f) {
                    overlapped.frames.push_back(f);
                    threads.insert(std::this_thread::get_id());
                });
                while (auto clip = session.denoise_clip())
                    worker.submit(std::move(*clip));
                worker.finish();
                QCOMPARE(worker.frames_emitted(), int64_t(reference.frames.size()));
            }
            QCOMPARE(overlapped.frames.size(), reference.frames.size());  // 33: the last clip short
            for (size_t i = 0; i < overlapped.frames.size(); ++i)
                QCOMPARE(overlapped.frames[i].index, int64_t(i));
            QVERIFY2(max_pixel_difference(overlapped, reference) <= 1,
                     qPrintable(QString::number(max_pixel_difference(overlapped, reference))));
            QCOMPARE(int(threads.size()), 1);
            QVERIFY(threads.count(std::this_thread::get_id()) == 0);
            QCOMPARE(session.stats().vae_decode.calls, int64_t(reference.frames.size()));
            QCOMPARE(session.stats().frames, int64_t(reference.frames.size()));
        }
    }

    void decodeWorkerPassesOnAnErrorAndStops() {
        // A frame callback that fails (a full disk, say) at frame 5: the next submit() rethrows
        // its error, and no frame after it is delivered.
        const auto audio = test::test_audio(1.3);
        Session session(model_, test::test_portrait(kSize).data(), kSize, kSize, fast_settings());
        session.push_audio(audio.data(), audio.size());
        session.end_audio();
        std::vector<int64_t> delivered;
        DecodeWorker worker(session, [&](const Frame& f) {
            if (f.index == 5) throw Error("disk full");
            delivered.push_back(f.index);
        });
        QString error;
        try {
            while (auto clip = session.denoise_clip())
                worker.submit(std::move(*clip));
            worker.finish();
        } catch (const Error& e) {
            error = e.what();
        }
        QCOMPARE(error, QString("disk full"));
        QCOMPARE(delivered, (std::vector<int64_t>{0, 1, 2, 3, 4}));
        QCOMPARE(worker.frames_emitted(), int64_t(5));
        QVERIFY(test::contains(test::error_of([&] { worker.finish(); }), "disk full"));
    }

    void audioShorterThanOneClipStillGivesFrames() {
        const auto out = generate(model_, test::test_audio(0.2), fast_settings(1));
        QCOMPARE(int(out.frames.size()), 5);
    }

    // v-prediction checkpoints (loopy train --v-prediction) must be sampled as such.
    void predictionTypeComesFromTheCheckpoint() {
        QTemporaryDir dir;
        auto net = test::random_network(test::tiny_config(kSize));
        const auto path = [&](const char* name) { return dir.filePath(name).toStdString(); };
        model::save_loopy_checkpoint(path("eps.safetensors"), *net);
        net->prediction_type = "v_prediction";
        model::save_loopy_checkpoint(path("v.safetensors"), *net);
        net->prediction_type = "x0";
        model::save_loopy_checkpoint(path("bad.safetensors"), *net);

        QCOMPARE(model::load_loopy_checkpoint(path("eps.safetensors"))->prediction_type,
                 std::string("epsilon"));
        QCOMPARE(model::load_loopy_checkpoint(path("v.safetensors"))->prediction_type,
                 std::string("v_prediction"));
        const auto message =
            test::error_of([&] { model::load_loopy_checkpoint(path("bad.safetensors")); });
        QVERIFY2(test::contains(message, "'x0'"), message.c_str());

        // Same weights, other parameterisation: the sampler must read it.
        const auto eps = generate(Model::load(path("eps.safetensors"), {}), test::test_audio(0.3),
                                  fast_settings(2));
        const auto v = generate(Model::load(path("v.safetensors"), {}), test::test_audio(0.3),
                                fast_settings(2));
        QCOMPARE(eps.frames.size(), v.frames.size());
        QVERIFY(max_pixel_difference(eps, v) > 8);
    }

    // A checkpoint may recommend its guidance ratios; the user's ratios win, each on its own.
    void recommendedGuidanceComesFromTheCheckpoint() {
        QTemporaryDir dir;
        auto net = test::random_network(test::micro_config());
        const auto path = [&](const char* name) { return dir.filePath(name).toStdString(); };
        model::save_loopy_checkpoint(path("plain.safetensors"), *net);
        model::save_loopy_checkpoint(path("tuned.safetensors"), *net,
                                     model::guidance_metadata({12.0, 2.5}));
        model::save_loopy_checkpoint(path("bad.safetensors"), *net,
                                     {{model::kGuidanceKey, R"({"audio": "loud"})"}});

        const auto plain = Model::load(path("plain.safetensors"), {});
        QVERIFY(!plain->recommended_guidance());
        GenerationSettings s;
        QVERIFY(!use_recommended_guidance(*plain, s, false, false));
        QCOMPARE(s.audio_ratio, 5.0);

        const auto tuned = Model::load(path("tuned.safetensors"), {});
        QVERIFY(tuned->recommended_guidance());
        QCOMPARE(tuned->recommended_guidance()->audio, 12.0);
        QCOMPARE(tuned->recommended_guidance()->reference, 2.5);
        QVERIFY(use_recommended_guidance(*tuned, s, false, false));
        QCOMPARE(s.audio_ratio, 12.0);
        QCOMPARE(s.reference_ratio, 2.5);
        GenerationSettings given;
        given.audio_ratio = 7.0;  // as if --cfg-audio 7 was given, --cfg-ref not
        QVERIFY(use_recommended_guidance(*tuned, given, true, false));
        QCOMPARE(given.audio_ratio, 7.0);
        QCOMPARE(given.reference_ratio, 2.5);

        const auto message = test::error_of([&] { Model::load(path("bad.safetensors"), {}); });
        QVERIFY2(
            test::contains(message, "loopy.guidance") && test::contains(message, "bad.safetensors"),
            message.c_str());
    }

    // The CPU kernels (model/cpu_attention.h, cpu_linear.h, cpu_layer_norm.h, cpu_geglu.h,
    // cpu_feed_forward.h, cpu_group_norm.h, and their AVX-512 copies where the CPU has them)
    // against LibTorch's operators through whole clips of the trained demo model, whose attention
    // is sharp.
    void cpuKernelsKeepTheDemoModelsFrames() {
        const auto checkpoint = default_checkpoint();
        QVERIFY2(!checkpoint.empty(), "the demo model is part of the source tree");
        ModelOptions options;
        options.threads = 2;  // the row-split linears need two, on any machine
        const auto model = Model::load(checkpoint, options);
        const int size = model->resolution();
        test::OperatorCalls ops;
        auto run = [&](bool kernel, double* flops) {
            model::set_cpu_attention_enabled(kernel);
            model::set_parallel_linear_enabled(kernel);
            model::set_cpu_layer_norm_enabled(kernel);
            model::set_cpu_geglu_enabled(kernel);
            model::set_cpu_group_norm_enabled(kernel);
            model::set_cpu_fused_feed_forward_enabled(kernel);
            model::set_cpu_own_product_enabled(kernel);
            model::set_cpu_avx512_enabled(kernel);
            FlopCounter counter;
            Session session(model, test::test_portrait(size).data(), size, size, fast_settings(4));
            Output out;
            const auto audio = test::test_audio(0.96);
            session.push_audio(audio.data(), audio.size());
            session.end_audio();
            session.generate([&](const Frame& f) { out.frames.push_back(f); });
            *flops = counter.flops();
            return out;
        };
        double flops_kernel = 0, flops_libtorch = 0;
        const auto with_kernel = run(true, &flops_kernel);
        const int64_t calls = ops.count("loopy::cpu_attention"),
                      linears = ops.count("loopy::linear"), norms = ops.count("loopy::layer_norm"),
                      geglus = ops.count("loopy::geglu"),
                      feed_forwards = ops.count("loopy::feed_forward"),
                      group_norms = ops.count("loopy::group_norm");
        ops.reset();
        const auto without = run(false, &flops_libtorch);
        model::set_cpu_attention_enabled(true);
        model::set_parallel_linear_enabled(true);
        model::set_cpu_layer_norm_enabled(true);
        model::set_cpu_geglu_enabled(true);
        model::set_cpu_group_norm_enabled(true);
        model::set_cpu_fused_feed_forward_enabled(true);
        model::set_cpu_own_product_enabled(true);
        model::set_cpu_avx512_enabled(true);
        QVERIFY2(calls > 0, "the kernel never ran");
        QCOMPARE(ops.count("loopy::cpu_attention"), int64_t{0});
        QVERIFY2(linears > 0, "no linear layer was split over the threads");
        QCOMPARE(ops.count("loopy::linear"), int64_t{0});
        QVERIFY2(norms > 0 && feed_forwards > 0, "the LayerNorm or feed-forward loop never ran");
        QCOMPARE(geglus, int64_t{0});  // inside the fused feed-forward
        QVERIFY2(group_norms > 0, "the GroupNorm loop never ran");
        QCOMPARE(ops.count("loopy::group_norm"), int64_t{0});
        QCOMPARE(ops.count("loopy::layer_norm"), int64_t{0});
        QCOMPARE(ops.count("loopy::geglu"), int64_t{0});
        QCOMPARE(ops.count("loopy::feed_forward"), int64_t{0});
        QCOMPARE(with_kernel.frames.size(), size_t(24));
        QCOMPARE(without.frames.size(), with_kernel.frames.size());
        const int worst = max_pixel_difference(with_kernel, without);
        QVERIFY2(worst <= 2, qPrintable(QString("frames differ by up to %1/255").arg(worst)));
        // `bench render` counts the kernel's products like LibTorch's.
        QVERIFY2(std::abs(flops_kernel - flops_libtorch) <= 1e-6 * flops_libtorch,
                 qPrintable(QString("%1 vs %2 FLOP").arg(flops_kernel).arg(flops_libtorch)));
    }

    void badPortraitSizeIsRefused() {
        std::vector<uint8_t> small(32 * 32 * 3, 0);
        const auto message = test::error_of([&] { Session(model_, small.data(), 32, 32); });
        QVERIFY2(test::contains(message, "64x64"), message.c_str());
    }
};

QTEST_GUILESS_MAIN(SessionTest)
#include "test_session.moc"
