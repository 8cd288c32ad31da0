// The training core (model/training.h) on random batches with the micro network: condition-mask
// statistics, which parameters each stage trains, bit-for-bit resume and EMA.
#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <QtTest>
#include <cmath>
#include <filesystem>
#include <map>
#include <tuple>

#include "core/safetensors.h"
#include "model/preview_decoder.h"
#include "model/training.h"
#include "model/vae_training.h"
#include "pipeline/tiny_model.h"
#include "test_util.h"
#include "train/random_batch.h"

using namespace loopy;
using model::TrainStage;

namespace {

using test::random_batch;

std::map<std::string, torch::Tensor> snapshot(torch::nn::Module& module) {
    std::map<std::string, torch::Tensor> out;
    for (const auto& p : module.named_parameters())
        out[p.key()] = p.value().detach().clone();
    return out;
}

// The share of set flags lies within four standard errors of the probability p.
void verify_rate(const torch::Tensor& flags, double p, const char* what) {
    const double rate = flags.to(torch::kFloat64).mean().item<double>();
    const double sigma = std::sqrt(p * (1 - p) / static_cast<double>(flags.numel()));
    QVERIFY2(std::abs(rate - p) < 4 * sigma,
             qPrintable(QString("%1: %2 vs %3").arg(what).arg(rate).arg(p)));
}

bool is_temporal_or_audio(const std::string& name) {
    return test::contains(name, "inter_clip_temporal") ||
           test::contains(name, "audio_attentions") || test::contains(name, "motion_modules") ||
           name.rfind("audio_", 0) == 0;
}

// Trains `steps` steps and returns the trainer (micro network, random start weights).
model::TrainerOptions fast_options(TrainStage stage) {
    model::TrainerOptions o;
    o.stage = stage;
    o.lr = 1e-3;
    o.seed = 11;
    return o;
}

std::string metadata_value(const std::string& path, const std::string& key) {
    const auto meta = safetensors::File::open(path).header.metadata;
    const auto it = meta.find(key);
    return it == meta.end() ? "(absent)" : it->second;
}

QString temp_dir(const char* name) {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("loopy_train_test_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(dir);
    return QString::fromStdString(dir.string());
}

}  // namespace

class TrainingTest : public QObject {
    Q_OBJECT

  private Q_SLOTS:
    void initTestCase() { torch::set_num_threads(1); }

    void maskStatisticsMatchTheMethod() {
        auto gen = at::detail::createCPUGenerator(123);
        const int64_t n = 40000;
        const auto m = model::sample_condition_masks(n, gen);
        verify_rate(m.drop_audio, 0.10, "audio");
        verify_rate(m.drop_reference, 0.15, "reference");
        verify_rate(m.drop_motion, 0.40, "motion");
        // The model drops motion frames with the reference too: 1 - 0.85 * 0.6.
        verify_rate(m.drop_motion | m.drop_reference, 1 - 0.85 * 0.6, "motion effective");
        // Independence: both audio and reference dropped at 0.10 * 0.15.
        verify_rate(m.drop_audio & m.drop_reference, 0.015, "audio and reference");
        for (int64_t c = 0; c < 3; ++c)
            verify_rate(m.condition == c, 1.0 / 3.0, "condition");
        QCOMPARE(m.condition.min().item<int64_t>(), 0);
        QCOMPARE(m.condition.max().item<int64_t>(), 2);
    }

    void otherMaskProbabilities() {
        // `loopy train --drop-*`: the same draws against other thresholds.
        auto gen = at::detail::createCPUGenerator(7);
        const int64_t n = 40000;
        const auto m = model::sample_condition_masks(n, gen, {0.0, 0.5, 1.0});
        verify_rate(m.drop_reference, 0.5, "reference");
        QVERIFY(!m.drop_audio.any().item<bool>());
        QVERIFY(m.drop_motion.all().item<bool>());
    }

    void masksAreSeeded() {
        auto a = at::detail::createCPUGenerator(5), b = at::detail::createCPUGenerator(5);
        const auto x = model::sample_condition_masks(64, a),
                   y = model::sample_condition_masks(64, b);
        QVERIFY(torch::equal(x.drop_audio, y.drop_audio));
        QVERIFY(torch::equal(x.condition, y.condition));
    }

    void stageParameterLists() {
        auto net = test::random_network(test::micro_config());
        const auto s1 = model::stage_parameters(*net, TrainStage::Image);
        const auto s2 = model::stage_parameters(*net, TrainStage::Video);
        QVERIFY(!s1.empty() && !s2.empty());
        for (const auto& [name, p] : s1) {
            QVERIFY2(!is_temporal_or_audio(name) && name.rfind("vae.", 0) != 0, name.c_str());
        }
        for (const auto& [name, p] : s2)
            QVERIFY2(is_temporal_or_audio(name), name.c_str());
        for (const auto& p : net->named_parameters())
            QVERIFY2(!(model::trained_in_stage(p.key(), TrainStage::Image) &&
                       model::trained_in_stage(p.key(), TrainStage::Video)),
                     p.key().c_str());
        // Every audio encoder / projection / audio-to-latents weight trains in stage 2.
        bool encoder = false;
        for (const auto& [name, p] : s2)
            encoder = encoder || name.rfind("audio_encoder.", 0) == 0;
        QVERIFY(encoder);
    }

    void stageOneTrainsOnlySpatialLayers() { check_stage(TrainStage::Image); }
    void stageTwoTrainsOnlyTemporalAndAudioLayers() { check_stage(TrainStage::Video); }

    void resumeIsBitForBitStageOne() { check_resume(TrainStage::Image); }
    void resumeIsBitForBitStageTwo() { check_resume(TrainStage::Video); }

  private:
    void check_resume(TrainStage stage) {
        const auto config = test::micro_config();
        auto opts = fast_options(stage);
        opts.ema_decay = 0.9;
        const int64_t n = 2;
        auto batch = [&](int64_t step) { return random_batch(config, 2, 100 + step); };

        model::Trainer straight(test::random_network(config), opts);
        for (int64_t i = 0; i < 2 * n; ++i)
            straight.step(batch(i));

        const auto dir = temp_dir("resume").toStdString();
        {
            model::Trainer first(test::random_network(config), opts);
            for (int64_t i = 0; i < n; ++i)
                first.step(batch(i));
            first.save(dir, n * 2);
        }
        model::Trainer resumed(test::random_network(config, 99), opts);  // other start weights
        QCOMPARE(resumed.resume(dir), n * 2);
        for (int64_t i = n; i < 2 * n; ++i)
            resumed.step(batch(i));

        const auto a = snapshot(straight.model()), b = snapshot(resumed.model());
        for (const auto& [name, value] : a)
            QVERIFY2(torch::equal(value, b.at(name)), name.c_str());
        // The EMA export matches too.
        straight.save(dir + "_a", 0);
        resumed.save(dir + "_b", 0);
        const auto ea = load_safetensors(dir + "_a/" + model::kTrainEmaFile);
        const auto eb = load_safetensors(dir + "_b/" + model::kTrainEmaFile);
        for (const auto& [name, value] : ea)
            QVERIFY2(torch::equal(value, eb.at(name)), name.c_str());
        // The saved model is a Loopy checkpoint `loopy render` can load.
        auto loaded = model::load_loopy_checkpoint(dir + "_a/" + model::kTrainModelFile);
        QVERIFY(torch::equal(loaded->audio_proj->proj1->weight, a.at("audio_proj.proj1.weight")));
        for (const auto& d : {dir, dir + "_a", dir + "_b"})
            std::filesystem::remove_all(d);
    }

  private Q_SLOTS:
    void resumeRejectsAnotherStage() {
        const auto config = test::micro_config();
        const auto dir = temp_dir("stage").toStdString();
        auto opts = fast_options(TrainStage::Image);
        opts.v_prediction = true;
        model::Trainer one(test::random_network(config), opts);
        one.save(dir, 0);
        // The run's model tells the sampler what it predicts.
        QCOMPARE(model::load_loopy_checkpoint(dir + "/" + model::kTrainModelFile)->prediction_type,
                 std::string("v_prediction"));
        model::Trainer two(test::random_network(config), fast_options(TrainStage::Video));
        QVERIFY(test::contains(test::error_of([&] { two.resume(dir); }), "stage"));
        std::filesystem::remove_all(dir);
    }

    // The EMA model is the run's model with the averaged weights: the same metadata (a
    // v-prediction run's EMA model must be sampled as one) and, after one step at decay 0.5, the
    // mean of the start and trained weights.
    void emaModelIsTheModelWithAveragedWeights() {
        const auto config = test::micro_config();
        const auto dir = temp_dir("ema").toStdString();
        auto opts = fast_options(TrainStage::Video);
        opts.v_prediction = true;
        opts.ema_decay = 0.5;
        model::Trainer trainer(test::random_network(config), opts);
        const auto before = snapshot(trainer.model());
        trainer.step(random_batch(config, 2, 7));
        trainer.save(dir, 1);
        Metadata model_meta, ema_meta;
        load_safetensors(dir + "/" + model::kTrainModelFile, &model_meta);
        load_safetensors(dir + "/" + model::kTrainEmaFile, &ema_meta);
        for (const auto& [key, value] : model_meta)
            QVERIFY2(ema_meta.count(key) && ema_meta.at(key) == value, key.c_str());
        QCOMPARE(ema_meta.size(), model_meta.size());
        auto ema = model::load_loopy_checkpoint(dir + "/" + model::kTrainEmaFile);
        QCOMPARE(ema->prediction_type, std::string("v_prediction"));
        const auto after = snapshot(trainer.model()), averaged = snapshot(*ema);
        const std::string name = "audio_proj.proj1.weight";  // trained in stage 2
        QVERIFY(!torch::equal(after.at(name), before.at(name)));
        QVERIFY(
            torch::allclose(averaged.at(name), (before.at(name) + after.at(name)) / 2, 1e-5, 1e-7));
        std::filesystem::remove_all(dir);
    }

    // loopy train never changes the VAE, so the --init checkpoint's preview decoder goes into
    // every model the run writes (model and EMA), bit for bit, also after --resume, with the
    // training record of both; none is made up when it has none.
    void savesKeepTheInitsPreviewDecoder() {
        const auto config = test::micro_config();
        const auto dir = temp_dir("preview").toStdString();
        std::filesystem::create_directories(dir);
        const auto with = dir + "/with.safetensors", without = dir + "/without.safetensors";
        auto net = test::random_network(config);
        torch::manual_seed(5);
        model::PreviewDecoder preview(model::preview_decoder_options(config));
        auto record = model::preview_decoder_metadata(*preview);
        record.insert({{"loopy.train.vae_steps", "123"}, {"loopy.train.preview_steps", "45"}});
        model::save_loopy_checkpoint(with, *net, record, model::preview_decoder_tensors(*preview));
        model::save_loopy_checkpoint(without, *net,
                                     {{"loopy.train.vae_steps", "67"},
                                      {"loopy.train.preview_steps", "89"}});  // a stale record
        auto opts = fast_options(TrainStage::Video);
        opts.ema_decay = 0.9;
        model::Trainer trainer(net, opts);
        trainer.keep_unchanged_parts(with);
        trainer.save(dir + "/run", 0);
        // A resumed run reads its own model, preview decoder and all, and keeps it.
        model::Trainer resumed(test::random_network(config), opts);
        resumed.resume(dir + "/run");
        resumed.keep_unchanged_parts(dir + "/run/" + model::kTrainModelFile);
        resumed.save(dir + "/run", 0);
        const auto expected = model::preview_decoder_tensors(*preview);
        for (const char* file : {model::kTrainModelFile, model::kTrainEmaFile}) {
            const auto path = dir + "/run/" + file;
            QVERIFY2(model::has_preview_decoder(path), path.c_str());
            const auto kept = model::preview_decoder_tensors(*model::load_preview_decoder(path));
            QCOMPARE(kept.size(), expected.size());
            for (const auto& [name, tensor] : expected)
                QVERIFY2(kept.count(name) && torch::equal(kept.at(name), tensor), name.c_str());
            QCOMPARE(metadata_value(path, "loopy.train.vae_steps"), std::string("123"));
            QCOMPARE(metadata_value(path, "loopy.train.preview_steps"), std::string("45"));
        }
        model::Trainer plain(test::random_network(config), opts);
        plain.keep_unchanged_parts(without);
        plain.save(dir + "/plain", 0);
        const auto plain_model = dir + "/plain/" + model::kTrainModelFile;
        QVERIFY(!model::has_preview_decoder(plain_model));
        QCOMPARE(metadata_value(plain_model, "loopy.train.vae_steps"), std::string("67"));
        QCOMPARE(metadata_value(plain_model, "loopy.train.preview_steps"), std::string("(absent)"));
        std::filesystem::remove_all(dir);
    }

    void reusedPartsComeFromTheCheckpoint() {
        // A network of another U-Net width takes the checkpoint's VAE and audio encoder as they
        // are, and keeps its own fresh denoiser.
        const auto config = test::micro_config();
        const auto dir = temp_dir("reuse").toStdString();
        std::filesystem::create_directories(dir);
        const auto path = dir + "/pretrained.safetensors";
        auto pretrained = test::random_network(config, 7);
        model::save_loopy_checkpoint(path, *pretrained);
        auto wider_config = config;
        wider_config.unet["block_out_channels"] = {16, 16};
        wider_config.validate();
        auto wider = test::random_network(wider_config, 8);
        const auto fresh_conv_in = wider->denoising_unet->conv_in->weight.clone();
        model::reuse_pretrained_parts(*wider, path);
        for (const auto& [part, ours, theirs] :
             {std::tuple{"vae.", state_dict(*wider->vae), state_dict(*pretrained->vae)},
              std::tuple{"audio_encoder.", state_dict(*wider->audio_encoder),
                         state_dict(*pretrained->audio_encoder)}}) {
            QVERIFY(!ours.empty());
            for (const auto& [name, tensor] : theirs)
                QVERIFY2(torch::equal(ours.at(name), tensor), (part + name).c_str());
        }
        QVERIFY(torch::equal(wider->denoising_unet->conv_in->weight, fresh_conv_in));
        // Another VAE is refused before anything is copied.
        auto other_vae = wider_config;
        other_vae.vae["scaling_factor"] = 0.5;
        auto refused = test::random_network(other_vae, 9);
        // Copies (state_dict() holds the module's own tensors), to see whether they change.
        const auto before = snapshot(*refused->audio_encoder);
        QVERIFY_EXCEPTION_THROWN(model::reuse_pretrained_parts(*refused, path), Error);
        for (const auto& [name, tensor] : state_dict(*refused->audio_encoder))
            QVERIFY2(torch::equal(before.at(name), tensor), name.c_str());
        // So is another audio encoder, and the VAE, checked first, is not copied either.
        auto other_audio = wider_config;
        other_audio.audio_encoder["intermediate_size"] = 48;
        auto refused_audio = test::random_network(other_audio, 10);
        const auto vae_before = snapshot(*refused_audio->vae);
        QVERIFY_EXCEPTION_THROWN(model::reuse_pretrained_parts(*refused_audio, path), Error);
        for (const auto& [name, tensor] : state_dict(*refused_audio->vae))
            QVERIFY2(torch::equal(vae_before.at(name), tensor), name.c_str());
        std::filesystem::remove_all(dir);
    }

    void adamwMatchesTheFormula() {
        // One parameter, two steps, against the update written out by hand.
        auto p = torch::tensor({1.0, -2.0}, torch::kFloat64).set_requires_grad(true);
        model::AdamW::Options o;
        o.weight_decay = 0.1;
        model::AdamW opt({{"p", p}}, o);
        const double lr = 0.01;
        double ref[2] = {1.0, -2.0}, m[2] = {0, 0}, v[2] = {0, 0};
        const double g[2][2] = {{0.5, -1.0}, {0.25, 2.0}};
        for (int t = 1; t <= 2; ++t) {
            p.mutable_grad() = torch::tensor({g[t - 1][0], g[t - 1][1]}, torch::kFloat64);
            opt.step(lr);
            for (int i = 0; i < 2; ++i) {
                ref[i] *= 1 - lr * o.weight_decay;
                m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[t - 1][i];
                v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[t - 1][i] * g[t - 1][i];
                const double mh = m[i] / (1 - std::pow(o.beta1, t));
                const double vh = std::sqrt(v[i]) / std::sqrt(1 - std::pow(o.beta2, t));
                ref[i] -= lr * mh / (vh + o.eps);
            }
        }
        QVERIFY(std::abs(p[0].item<double>() - ref[0]) < 1e-12);
        QVERIFY(std::abs(p[1].item<double>() - ref[1]) < 1e-12);
    }

    void gradientClipping() {
        auto p = torch::zeros({2}).set_requires_grad(true);
        p.mutable_grad() = torch::tensor({3.0f, 4.0f});
        QCOMPARE(model::clip_gradients({{"p", p}}, 1.0), 5.0);
        QVERIFY(std::abs(p.grad().norm().item<double>() - 1.0) < 1e-5);
    }

    void vaeTrainingReducesTheLoss() {
        auto vae = test::random_network(test::micro_config())->vae;
        model::VaeTrainerOptions o;
        o.lr = 2e-3;
        model::VaeTrainer trainer(vae, o);
        auto gen = at::detail::createCPUGenerator(3);
        // A smooth image: low-frequency colours.
        auto images = torch::nn::functional::interpolate(
            torch::rand({2, 3, 4, 4}, gen) * 2 - 1, torch::nn::functional::InterpolateFuncOptions()
                                                        .size(std::vector<int64_t>{32, 32})
                                                        .mode(torch::kBilinear)
                                                        .align_corners(false));
        const double psnr_before = model::reconstruction_psnr(*vae, images);
        const double first = trainer.step(images).loss;
        double last = first;
        for (int i = 0; i < 60; ++i)
            last = trainer.step(images).loss;
        QVERIFY2(last < first / 3, qPrintable(QString("%1 -> %2").arg(first).arg(last)));
        const double psnr_after = model::reconstruction_psnr(*vae, images);
        qInfo("reconstruction PSNR %.2f -> %.2f dB", psnr_before, psnr_after);
        QVERIFY(psnr_after > psnr_before + 3.0);
        // The same figure by hand: 10 log10(2^2 / MSE) of the clamped reconstruction.
        torch::NoGradGuard no_grad;
        vae->eval();
        const double mse = (vae->decode(vae->encode(images).mode()).clamp(-1, 1) - images)
                               .pow(2)
                               .mean()
                               .item<double>();
        QVERIFY(std::abs(psnr_after - 10 * std::log10(4.0 / mse)) < 1e-3);
    }

    void nonFiniteStepIsSkippedWithoutTouchingTheWeights() {
        const auto config = test::micro_config();
        model::Trainer trainer(test::random_network(config), fast_options(TrainStage::Video));
        const auto before = snapshot(trainer.model());
        auto batch = random_batch(config, 2, 11);
        batch.latents[0][0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
        const auto stats = trainer.step(batch);
        QVERIFY(stats.skipped);
        QCOMPARE(stats.step, int64_t(1));
        for (const auto& [name, value] : snapshot(trainer.model()))
            QVERIFY2(torch::equal(value, before.at(name)), name.c_str());
        const auto next = trainer.step(random_batch(config, 2, 12));  // training goes on
        QVERIFY(!next.skipped && std::isfinite(next.loss));
        bool changed = false;
        for (const auto& [name, value] : snapshot(trainer.model()))
            changed = changed || !torch::equal(value, before.at(name));
        QVERIFY(changed);
    }

    // Without CUDA a CUDA trainer is refused with a reason; with it, two steps there follow the
    // CPU's within float32 rounding (the draws stay on the CPU, so both see the same noise).
    void cudaTrainingFollowsTheCpu() {
        const auto config = test::micro_config();
        auto options = fast_options(TrainStage::Video);
        options.autocast_bf16 = true;
        QVERIFY(test::contains(
            test::error_of([&] { model::Trainer(test::random_network(config), options); }),
            "for CUDA devices only"));
        options.autocast_bf16 = false;
        options.device = torch::Device(torch::kCUDA);
        if (!torch::cuda::is_available()) {
            QVERIFY(test::contains(
                test::error_of([&] { model::Trainer(test::random_network(config), options); }),
                "no CUDA device"));
            return;
        }
        model::Trainer gpu(test::random_network(config), options);
        model::Trainer cpu(test::random_network(config), fast_options(TrainStage::Video));
        for (uint64_t seed : {21, 22}) {
            const auto a = cpu.step(random_batch(config, 2, seed));
            const auto b = gpu.step(random_batch(config, 2, seed));
            QVERIFY2(std::abs(a.loss - b.loss) <= 1e-4 * std::abs(a.loss),
                     qPrintable(QString("%1 vs %2").arg(a.loss).arg(b.loss)));
        }
        const auto on_cpu = snapshot(cpu.model());
        for (const auto& [name, value] : snapshot(gpu.model()))
            QVERIFY2(torch::allclose(value.cpu(), on_cpu.at(name), 1e-4, 1e-5), name.c_str());
    }

    // `train-vae --decoder-only --mouth-weight W`: the encoder (so every latent) stays as it
    // is; uniform weights give the plain loss; weights of the wrong shape are refused.
    void vaeDecoderOnlyKeepsTheEncoder() {
        auto vae = test::random_network(test::micro_config())->vae;
        const auto before = snapshot(*vae);
        model::VaeTrainerOptions o;
        o.decoder_only = true;
        o.lr = 1e-3;
        model::VaeTrainer trainer(vae, o);
        const auto images = torch::rand({2, 3, 32, 32}) * 2 - 1;
        auto weights = torch::ones({2, 1, 32, 32});
        weights.narrow(2, 20, 6).narrow(3, 10, 12).fill_(5.0);
        for (int i = 0; i < 3; ++i)
            QVERIFY(!trainer.step(images, weights).skipped);
        int changed = 0;
        for (const auto& p : vae->named_parameters()) {
            const bool same = torch::equal(p.value(), before.at(p.key()));
            const bool decoder =
                p.key().rfind("decoder.", 0) == 0 || p.key().rfind("post_quant_conv.", 0) == 0;
            QVERIFY2(decoder || same, p.key().c_str());
            changed += decoder && !same;
        }
        QVERIFY(changed > 10);

        model::VaeLossOptions mode;
        mode.posterior_mode = true;
        auto gen = at::detail::createCPUGenerator(1);
        const double plain = model::vae_loss(*vae, images, mode, gen).total.item<double>();
        const double uniform =
            model::vae_loss(*vae, images, mode, gen, torch::full({2, 1, 32, 32}, 3.0))
                .total.item<double>();
        QVERIFY2(std::abs(plain - uniform) < 1e-5 * plain, qPrintable(QString::number(uniform)));
        const double weighted =
            model::vae_loss(*vae, images, mode, gen, weights).total.item<double>();
        QVERIFY(std::abs(weighted - plain) > 1e-6);
        QVERIFY_EXCEPTION_THROWN(
            model::vae_loss(*vae, images, mode, gen, torch::ones({2, 3, 32, 32})), Error);
    }

    // The VAE trainer shares the same update (model::apply_update): a NaN image skips the step.
    void vaeNonFiniteStepIsSkipped() {
        auto vae = test::random_network(test::micro_config())->vae;
        model::VaeTrainer trainer(vae, model::VaeTrainerOptions{});
        const auto before = snapshot(*vae);
        auto images = torch::rand({2, 3, 32, 32}) * 2 - 1;
        images[0][0][5][5] = std::numeric_limits<float>::quiet_NaN();
        const auto stats = trainer.step(images);
        QVERIFY(stats.skipped);
        QCOMPARE(stats.step, int64_t(1));
        for (const auto& p : vae->named_parameters())
            QVERIFY2(torch::equal(p.value(), before.at(p.key())), p.key().c_str());
        QVERIFY(!trainer.step(images.nan_to_num()).skipped);
    }

    // loss_weight: a per-item weighted mean, so scaling one item's weights changes nothing, a
    // constant weight gives the plain mean, and a non-uniform one changes the loss.
    void lossWeightIsAPerItemWeightedMean() {
        const auto config = test::micro_config();
        auto net = test::random_network(config);
        net->eval();
        torch::NoGradGuard no_grad;
        model::DDIMScheduler scheduler(model::DDIMConfig{});
        model::LossOptions options;
        options.audio = model::audio_feature_options(config);
        auto batch = random_batch(config, 2, 21);
        auto loss = [&](const torch::Tensor& weight) {
            batch.loss_weight = weight;
            std::vector<at::Generator> gens = {at::detail::createCPUGenerator(1),
                                               at::detail::createCPUGenerator(2)};
            return model::diffusion_loss(*net, scheduler, batch, options, gens).item<double>();
        };
        const auto& lat = batch.latents;
        const auto shape = std::vector<int64_t>{2, lat.size(1), 1, lat.size(3), lat.size(4)};
        const double plain = loss({});
        QVERIFY(std::abs(loss(torch::full(shape, 3.0)) - plain) < 1e-6 * plain);
        auto scaled = torch::ones(shape);
        scaled[1].fill_(50.0);  // a global normalisation would weigh item 1 fifty times more
        QVERIFY(std::abs(loss(scaled) - plain) < 1e-6 * plain);
        auto mouth = torch::ones(shape);
        mouth.narrow(3, 0, 2).fill_(20.0);
        QVERIFY(std::abs(loss(mouth) - plain) > 1e-3 * plain);
        QVERIFY(test::contains(test::error_of([&] {
                                   loss(torch::ones({2, 1, 1, 2, 2}));
                               }),
                               "loss_weight"));
    }

    void latentScalingGivesUnitVariance() {
        auto vae = test::random_network(test::micro_config())->vae;
        auto images = torch::rand({20, 3, 32, 32}, at::detail::createCPUGenerator(5)) * 2 - 1;
        const double factor = model::latent_scaling_factor(*vae, images);
        torch::NoGradGuard no_grad;
        vae->eval();
        const double scaled_std = (vae->encode(images).mode() * factor).std().item<double>();
        QVERIFY2(std::abs(scaled_std - 1.0) < 1e-4, qPrintable(QString::number(scaled_std)));
        QVERIFY(std::abs(factor - 0.18215) > 1e-3);  // a random VAE is not SD's
    }

    // Stage 2 with train_image_layers: the denoiser's image layers move too, the reference net
    // does not.
    void stageTwoCanFineTuneTheImageLayers() {
        const auto config = test::micro_config();
        auto options = fast_options(TrainStage::Video);
        options.train_image_layers = true;
        model::Trainer trainer(test::random_network(config), options);
        const auto before = snapshot(trainer.model());
        for (int i = 0; i < 2; ++i)
            (void)trainer.step(random_batch(config, 4, 7 + i));
        const auto after = snapshot(trainer.model());
        int image_changed = 0, image = 0;
        for (const auto& [name, value] : before) {
            const bool same = torch::equal(value, after.at(name));
            if (name.rfind("reference_unet.", 0) == 0) QVERIFY2(same, name.c_str());
            if (name.rfind("denoising_unet.", 0) == 0 &&
                model::trained_in_stage(name, TrainStage::Image)) {
                ++image;
                image_changed += same ? 0 : 1;
            }
        }
        QVERIFY2(
            image > 0 && image_changed > image * 9 / 10,
            qPrintable(QString("%1 of %2 image layers changed").arg(image_changed).arg(image)));
    }

  private:
    void check_stage(TrainStage stage) {
        const auto config = test::micro_config();
        model::Trainer trainer(test::random_network(config), fast_options(stage));
        const auto before = snapshot(trainer.model());
        for (int i = 0; i < 2; ++i) {  // 2 x 4 items: every audio-to-latents input is drawn
            const auto stats = trainer.step(random_batch(config, 4, 7 + i));
            QVERIFY(std::isfinite(stats.loss) && stats.grad_norm > 0);
        }
        const auto after = snapshot(trainer.model());
        int changed = 0, trained = 0;
        for (const auto& [name, value] : before) {
            const bool same = torch::equal(value, after.at(name));
            if (!model::trained_in_stage(name, stage)) {
                QVERIFY2(same, ("frozen but changed: " + name).c_str());
            } else {
                ++trained;
                changed += same ? 0 : 1;
                // Only the reference net has parameters no loss path reaches: those after the
                // input of its last self-attention (conv_out, the last block's attention, ...).
                if (same) QVERIFY2(name.rfind("reference_unet.", 0) == 0, name.c_str());
            }
        }
        QVERIFY2(
            changed > trained * 9 / 10,
            qPrintable(QString("%1 of %2 trained parameters changed").arg(changed).arg(trained)));
    }
};

QTEST_GUILESS_MAIN(TrainingTest)
#include "test_training.moc"
