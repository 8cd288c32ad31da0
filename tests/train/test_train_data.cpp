// The training data loader (render/train_data.h) on clips made by loopy::synth, and training on
// them: the micro network overfits one clip.
#include <QtTest>

#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/training.h"
#include "pipeline/tiny_model.h"
#include "render/synth_dataset.h"
#include "render/train_data.h"
#include "test_util.h"

using namespace loopy;

namespace {

constexpr int64_t kFramesPerClip = 100;  // 4 s at 25 fps

}  // namespace

class TrainDataTest : public QObject {
    Q_OBJECT

    std::string dir_;
    model::LoopyConfig config_ = test::micro_config();
    model::LoopyModel net_{nullptr};

  private Q_SLOTS:
    void initTestCase() {
        torch::set_num_threads(1);
        dir_ = (std::filesystem::temp_directory_path() /
                ("loopy_train_data_" + std::to_string(::getpid())))
                   .string();
        synth::SynthOptions o;
        o.out = dir_;
        o.clips = 2;
        o.seed = 5;
        o.clip.size = 128;
        o.clip.seconds = 4.0;
        synth::run_synth(o);
        net_ = test::random_network(config_);
    }

    void cleanupTestCase() { std::filesystem::remove_all(dir_); }

    void findsAndReadsClips() {
        const auto clips = render::find_train_clips(dir_);
        QCOMPARE(clips.size(), size_t{2});
        const auto clip = render::read_train_clip(clips[0], 32);
        QCOMPARE(clip.name, std::string("clip_0000005"));
        QCOMPARE(clip.frame_count(), kFramesPerClip);
        QCOMPARE(clip.frames.sizes().vec(), (std::vector<int64_t>{kFramesPerClip, 3, 32, 32}));
        QCOMPARE(static_cast<int64_t>(clip.audio.size()), kFramesPerClip * model::kSamplesPerFrame);
        QCOMPARE(clip.expression.size(1), int64_t{30});
        QVERIFY(test::contains(test::error_of([] { render::find_train_clips("/nonexistent"); }),
                               "not a folder"));
    }

    void variancesMatchTruth() {
        const auto folder = render::find_train_clips(dir_)[1];
        const auto clip = render::read_train_clip(folder, 32);
        std::ifstream in(folder + "/truth.json");
        const auto truth = nlohmann::json::parse(in);
        int checked = 0;
        for (const auto& w : truth.at("windows")) {
            const auto first = w.at("first_frame").get<int64_t>();
            const double head = w.at("head_variance").get<double>();
            const double expr = w.at("expression_variance").get<double>();
            // truth.json keeps keypoints to 1e-3 px; the variances come from the exact ones.
            QVERIFY(std::abs(render::head_movement_variance(clip, first, 12) - head) <
                    1e-3 * head + 1e-9);
            QVERIFY(std::abs(render::expression_variance(clip, first, 12) - expr) <
                    1e-3 * expr + 1e-9);
            ++checked;
        }
        QCOMPARE(checked, 8);
    }

    void batchesFollowInference() {
        render::TrainDataOptions o;
        o.frames = config_.num_frames;
        o.seed = 3;
        render::TrainDataset data(dir_, config_, *net_->vae, o);
        QCOMPARE(data.clip_count(), int64_t{2});
        const int64_t b = 6, h = config_.history_frames(), f = config_.num_frames;
        const auto batch = data.batch(4, b);
        const int64_t s = config_.latent_size();
        QCOMPARE(batch.latents.sizes().vec(), (std::vector<int64_t>{b, f, 4, s, s}));
        QCOMPARE(batch.history.sizes().vec(), (std::vector<int64_t>{b, h, 4, s, s}));
        QCOMPARE(batch.reference.sizes().vec(), (std::vector<int64_t>{b, 4, s, s}));
        for (int64_t i = 0; i < b; ++i) {
            const auto src = data.source(4 + i);
            const auto& lat = data.clip_latents(src.clip);
            QVERIFY(torch::equal(batch.latents[i], lat.narrow(0, src.first_frame, f)));
            QVERIFY(torch::equal(batch.reference[i], lat[src.reference_frame]));
            // The frames just before the clip are the history's last ones; older ones masked.
            const int64_t known = std::min(h, src.first_frame);
            QCOMPARE(batch.history_valid[i].sum().item<int64_t>(), known);
            if (known > 0)
                QVERIFY(torch::equal(batch.history[i].narrow(0, h - known, known),
                                     lat.narrow(0, src.first_frame - known, known)));
            QVERIFY(batch.history[i].narrow(0, 0, h - known).abs().sum().item<double>() == 0);
            // Audio: inference's window for these frames, zeros outside the clip.
            const auto plan = model::plan_audio_window(config_.audio_encoder_config(), o.audio,
                                                       src.first_frame, f);
            const auto& samples = batch.audio[static_cast<size_t>(i)];
            QCOMPARE(static_cast<int64_t>(samples.size()), plan.num_samples);
            const auto& audio = data.clip(src.clip).audio;
            for (int64_t k = 0; k < plan.num_samples; k += 97) {
                const int64_t at = plan.first_sample + k;
                const float want = at >= 0 && at < static_cast<int64_t>(audio.size())
                                       ? audio[static_cast<size_t>(at)]
                                       : 0.0f;
                QCOMPARE(samples[static_cast<size_t>(k)], want);
            }
            QCOMPARE(batch.head_variance[i][0].item<float>(),
                     static_cast<float>(
                         render::head_movement_variance(data.clip(src.clip), src.first_frame, f)));
        }
    }

    // loopy train-audio: each frame's mouth opening as the target, inference's audio window as
    // the input; the encoder learns to predict the opening from the speech.
    void audioPretrainingLearnsTheMouth() {
        std::vector<render::TrainClip> clips;
        for (const auto& folder : render::find_train_clips(dir_))
            clips.push_back(render::read_train_clip(folder, 32));
        const auto& clip = clips[0];
        const auto track = render::mouth_opening_track(clip);
        QCOMPARE(track.size(0), clip.frame_count());
        QVERIFY(std::abs(track.mean().item<double>()) < 1e-5);
        QVERIFY(std::abs(track.std().item<double>() - 1.0) < 1e-4);
        const auto height = clip.mouth_box.select(1, 3) - clip.mouth_box.select(1, 1);
        QVERIFY(model::pearson_correlation(track, height) > 0.9999);

        const auto audio = model::audio_feature_options(config_);
        const int64_t f = config_.num_frames;
        const auto batch = render::audio_pretrain_batch(clips, config_, audio, f, 7, 10, 3);
        QCOMPARE(batch.targets.sizes().vec(), (std::vector<int64_t>{3, f}));
        QCOMPARE(batch.size(), int64_t{3});
        const auto again = render::audio_pretrain_batch(clips, config_, audio, f, 7, 10, 3);
        QVERIFY(torch::equal(batch.targets, again.targets) && batch.audio == again.audio);
        const auto plan = model::plan_audio_window(config_.audio_encoder_config(), audio, 0, f);
        for (const auto& samples : batch.audio)
            QCOMPARE(static_cast<int64_t>(samples.size()), plan.num_samples);

        auto net = test::random_network(config_, 4);
        model::AudioPretrainerOptions o;
        o.audio = audio;
        o.lr = 1e-3;  // the micro encoder, 300 steps on one batch
        o.warmup_steps = 20;
        model::AudioPretrainer trainer(net, o);
        auto encoder_weights = [&] {
            std::vector<torch::Tensor> flat;
            for (const auto& p : net->audio_encoder->parameters())
                flat.push_back(p.detach().reshape({-1}).clone());
            return torch::cat(flat);
        };
        const auto before = encoder_weights();
        // Overfitting one batch: the error must fall and the prediction follow the mouth, which
        // needs gradients through the head and the encoder. (How well it generalises is reported
        // by `loopy train-audio --eval-data`; on the micro network it varies from run to run.)
        // Steps are reproducible by default (AudioPretrainerOptions::reproducible).
        const auto fixed = render::audio_pretrain_batch(clips, config_, audio, f, 7, 0, 4);
        auto score = [&] {
            const auto predicted = trainer.predict(fixed.audio, f);
            return std::make_pair(torch::mse_loss(predicted, fixed.targets).item<double>(),
                                  model::pearson_correlation(predicted, fixed.targets));
        };
        const auto [mse_before, r_before] = score();
        for (int64_t step = 0; step < 300; ++step)
            trainer.step(fixed);
        const auto [mse_after, r_after] = score();
        qInfo("audio pretraining: MSE %.3f -> %.3f, mouth-opening r %.3f -> %.3f", mse_before,
              mse_after, r_before, r_after);
        QVERIFY(mse_after < 0.3 * mse_before);
        QVERIFY(r_after > 0.8);
        QVERIFY((encoder_weights() - before).abs().max().item<double>() > 1e-4);
    }

    // --mouth-weight: the weight map covers each frame's mouth box (from the lip keypoints) and
    // nothing far from it; batches carry the map of their frames; weight 1 gives no map.
    void mouthWeightCoversTheMouth() {
        const auto clip = render::read_train_clip(render::find_train_clips(dir_)[0], 32);
        const int64_t s = 16;  // the tiny config's latent grid at 128 px
        const auto map = render::mouth_weight_map(clip, 10, 20, s, 8.0);
        QCOMPARE(map.sizes().vec(), (std::vector<int64_t>{20, 1, s, s}));
        const auto heavy = map == 8.0;
        QVERIFY((heavy | (map == 1.0)).all().item<bool>());
        for (int64_t t = 0; t < 20; ++t) {
            const auto box = clip.mouth_box[10 + t];
            const double cx = (box[0].item<double>() + box[2].item<double>()) / 2;
            const double cy = (box[1].item<double>() + box[3].item<double>()) / 2;
            QVERIFY(cy > 0.55 && cy < 0.85);  // the synthetic face's mouth: below the middle
            const auto x = static_cast<int64_t>(cx * s), y = static_cast<int64_t>(cy * s);
            QVERIFY(heavy[t][0][y][x].item<bool>());
            QVERIFY(!heavy[t][0][0][0].item<bool>() && !heavy[t][0][s / 4][x].item<bool>());
            const auto cells = heavy[t][0].sum().item<int64_t>();
            QVERIFY(cells >= 4 && cells < s * s / 4);
        }

        render::TrainDataOptions o;
        o.frames = config_.num_frames;
        o.seed = 3;
        render::TrainDataset plain(dir_, config_, *net_->vae, o);
        QVERIFY(!plain.batch(0, 2).loss_weight.defined());
        o.mouth_loss_weight = 8.0;
        render::TrainDataset data(dir_, config_, *net_->vae, o);
        const auto batch = data.batch(0, 3);
        for (int64_t i = 0; i < 3; ++i) {
            const auto src = data.source(i);
            QVERIFY(torch::equal(batch.loss_weight[i],
                                 render::mouth_weight_map(data.clip(src.clip), src.first_frame,
                                                          o.frames, config_.latent_size(), 8.0)));
        }
        o.mouth_loss_weight = 0.5;
        QVERIFY(test::contains(
            test::error_of([&] { render::TrainDataset(dir_, config_, *net_->vae, o); }),
            "mouth loss weight"));
    }

    void orderIsSeededAndVisitsEveryClip() {
        render::TrainDataOptions o;
        o.seed = 9;
        render::TrainDataset a(dir_, config_, *net_->vae, o), b(dir_, config_, *net_->vae, o);
        o.seed = 10;
        render::TrainDataset c(dir_, config_, *net_->vae, o);
        bool differs = false;
        for (int64_t n = 0; n < 40; n += 2) {
            const auto x = a.source(n), y = b.source(n), z = c.source(n);
            QCOMPARE(x.clip, y.clip);
            QCOMPARE(x.first_frame, y.first_frame);
            QCOMPARE(x.reference_frame, y.reference_frame);
            differs = differs || x.first_frame != z.first_frame;
            // Each epoch (2 samples) visits both clips.
            QCOMPARE(a.source(n).clip + a.source(n + 1).clip, int64_t{1});
            QVERIFY(x.first_frame >= 0 && x.first_frame + o.frames <= kFramesPerClip);
        }
        QVERIFY(differs);
    }

    // The cache holds what the samples are made of: the same batches come back from it, the
    // latents to float16 rounding and everything else exactly.
    void cacheGivesTheSameSamples() {
        render::TrainDataOptions o;
        o.frames = config_.num_frames;
        o.seed = 4;
        o.mouth_loss_weight = 5;
        render::TrainDataset folder(dir_, config_, *net_->vae, o);
        const auto path = dir_ + "/cache.safetensors";
        folder.save_cache(path, *net_->vae);
        const auto cached = render::TrainDataset::load_cache(path, config_, *net_->vae, o);
        QCOMPARE(cached.clip_count(), folder.clip_count());
        QCOMPARE(cached.clip(1).name, folder.clip(1).name);
        const auto a = folder.batch(3, 4), b = cached.batch(3, 4);
        QVERIFY(a.latents.abs().max().item<float>() > 0.1f);
        QVERIFY(torch::allclose(b.latents, a.latents, 1e-3, 1e-3));
        QVERIFY(!torch::equal(b.latents, a.latents));  // rounded: a cache, not the folder again
        QVERIFY(torch::allclose(b.history, a.history, 1e-3, 1e-3));
        QVERIFY(torch::equal(b.history_valid, a.history_valid));
        QVERIFY(torch::allclose(b.reference, a.reference, 1e-3, 1e-3));
        QVERIFY(b.audio == a.audio);  // 16-bit audio is stored exactly
        QVERIFY(torch::equal(b.head_variance, a.head_variance));
        QVERIFY(torch::equal(b.expression_variance, a.expression_variance));
        QVERIFY(torch::equal(b.loss_weight, a.loss_weight));
        std::filesystem::remove(path);
    }

    void cacheRefusesWhatItCannotUse() {
        render::TrainDataOptions o;
        o.frames = config_.num_frames;
        render::TrainDataset folder(dir_, config_, *net_->vae, o);
        const auto path = dir_ + "/refused.safetensors";
        folder.save_cache(path, *net_->vae);
        const auto load = [&](model::LoopyModelImpl& net, const std::string& file, int64_t frames) {
            auto options = o;
            options.frames = frames;
            return test::error_of(
                [&] { render::TrainDataset::load_cache(file, net.config, *net.vae, options); });
        };
        // Another VAE encoder would hand the U-Net latents it was not trained on.
        auto other = test::random_network(config_);
        {
            torch::NoGradGuard no_grad;
            other->vae->encoder->parameters().front().add_(1e-3);
        }
        QVERIFY(test::contains(load(*other, path, o.frames), "another VAE encoder"));
        QVERIFY(test::contains(load(*net_, path, kFramesPerClip + 1), "shorter than"));
        // A truncated file, and a safetensors file that is not a cache.
        const auto size = std::filesystem::file_size(path);
        std::filesystem::copy_file(path, path + ".cut");
        std::filesystem::resize_file(path + ".cut", size / 2);
        QVERIFY(!load(*net_, path + ".cut", o.frames).empty());
        const auto checkpoint = dir_ + "/model.safetensors";
        model::save_loopy_checkpoint(checkpoint, *net_);
        QVERIFY(test::contains(load(*net_, checkpoint, o.frames), "not a training data cache"));
        QVERIFY(test::error_of([&] {
                    render::TrainDataset::load_cache(path, config_, *net_->vae, o);
                }).empty());
        for (const auto& file : {path, path + ".cut", checkpoint})
            std::filesystem::remove(file);
    }

    // Stage 2 trains only the temporal and audio layers on top of a random spatial network, so
    // its loss cannot fall as far in the same number of steps (measured: 1.18 -> 0.52).
    void stageTwoOverfitsOneBatch() { overfit(model::TrainStage::Video, config_.num_frames, 2); }
    void stageOneOverfitsOneBatch() { overfit(model::TrainStage::Image, 1, 5); }

  private:
    // The same batch, noise and timesteps every step at a high learning rate: the loss must fall
    // by at least `factor` within 150 steps.
    void overfit(model::TrainStage stage, int64_t frames, double factor) {
        render::TrainDataOptions o;
        o.frames = frames;
        render::TrainDataset data(dir_, config_, *net_->vae, o);
        const auto batch = data.batch(0, 2);
        model::TrainerOptions t;
        t.stage = stage;
        t.lr = 1e-3;
        t.repeat_randomness = true;
        model::Trainer trainer(test::random_network(config_, 4), t);
        const double first = trainer.step(batch).loss;
        double last = first;
        for (int i = 0; i < 150 && last > first / factor; ++i)
            last = trainer.step(batch).loss;
        QVERIFY2(last < first / factor, qPrintable(QString("loss %1 -> %2").arg(first).arg(last)));
    }
};

QTEST_GUILESS_MAIN(TrainDataTest)
#include "test_train_data.moc"
