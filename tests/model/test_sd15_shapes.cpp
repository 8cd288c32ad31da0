// Bank shapes and sizes of the full `sd15` Loopy configuration. A real SD 1.5-sized ReferenceNet
// runs on a small latent to check the shape derivation, which then gives the 64x64 shapes
// without a full-size forward.
#include <QtTest>

#include "model/loopy_model.h"

using namespace loopy;
using Shape = std::vector<int64_t>;

namespace {

int64_t count_parameters(const torch::nn::Module& module) {
    int64_t n = 0;
    for (const auto& p : module.parameters())
        n += p.numel();
    return n;
}

std::vector<Shape> shapes_of(const std::vector<torch::Tensor>& tensors) {
    std::vector<Shape> out;
    for (const auto& t : tensors)
        out.push_back(t.sizes().vec());
    return out;
}

std::vector<Shape> repeat(const Shape& shape, int n) {
    return std::vector<Shape>(n, shape);
}

std::vector<Shape> join(std::initializer_list<std::vector<Shape>> parts) {
    std::vector<Shape> out;
    for (const auto& p : parts)
        out.insert(out.end(), p.begin(), p.end());
    return out;
}

}  // namespace

class Sd15Shapes : public QObject {
    Q_OBJECT
  private Q_SLOTS:
    void derivation_matches_sd15_forward();
    void banks_at_512();
    void new_layer_sizes();
};

void Sd15Shapes::derivation_matches_sd15_forward() {
    const auto config = model::LoopyConfig::preset("sd15");
    torch::NoGradGuard no_grad;
    model::ReferenceNet reference(config);  // ~3.4 GB of float32
    reference->eval();
    QCOMPARE(count_parameters(*reference), int64_t{859520964 + 768});  // SD U-Net + null context
    auto ref = reference->encode_reference(torch::randn({1, 4, 16, 16}));
    auto motion = reference->encode_motion(torch::randn({1, 2, 4, 16, 16}),
                                           torch::tensor({true, false}).view({1, 2}));
    const auto expected = model::bank_shapes(reference->config, 1, 2, 16, 16);
    QCOMPARE(shapes_of(ref.layers), expected.reference);
    QCOMPARE(shapes_of(motion.sites), expected.motion);
}

// What the method's 512x512, 20-motion-frame setting hands the denoiser, from SD 1.5's layout:
// widths 320/640/1280/1280 at 64/32/16/8, two layers per down block, three per up block, no
// attention in the last down and first up block.
void Sd15Shapes::banks_at_512() {
    const auto config = model::LoopyConfig::preset("sd15");
    const int64_t m = config.motion_frames(), s = config.latent_size();
    QCOMPARE(m, int64_t{20});
    QCOMPARE(s, int64_t{64});
    const auto shapes = model::bank_shapes(config.unet_config(), 1, m, s, s);
    const auto expected_reference = join({repeat({1, 4096, 320}, 2),
                                          repeat({1, 1024, 640}, 2),
                                          repeat({1, 256, 1280}, 2),
                                          {{1, 64, 1280}},
                                          repeat({1, 256, 1280}, 3),
                                          repeat({1, 1024, 640}, 3),
                                          repeat({1, 4096, 320}, 3)});
    const auto expected_motion = join({repeat({1, 20, 320, 64, 64}, 2),
                                       repeat({1, 20, 640, 32, 32}, 2),
                                       repeat({1, 20, 1280, 16, 16}, 2),
                                       repeat({1, 20, 1280, 8, 8}, 2),
                                       {{1, 20, 1280, 8, 8}},  // mid
                                       repeat({1, 20, 1280, 8, 8}, 3),
                                       repeat({1, 20, 1280, 16, 16}, 3),
                                       repeat({1, 20, 640, 32, 32}, 3),
                                       repeat({1, 20, 320, 64, 64}, 3)});
    QCOMPARE(shapes.reference, expected_reference);
    QCOMPARE(shapes.motion, expected_motion);
    int64_t reference_floats = 0, motion_floats = 0;
    for (const auto& r : shapes.reference)
        reference_floats += r[1] * r[2];
    for (const auto& r : shapes.motion)
        motion_floats += r[1] * r[2] * r[3] * r[4];
    qInfo("sd15 banks per video: reference %.1f MB, motion %.1f MB (float32)",
          reference_floats * 4 / 1e6, motion_floats * 4 / 1e6);
}

// The new layers' parameters, one site per width (building the whole sd15 denoiser would take
// ~7 GB and minutes).
void Sd15Shapes::new_layer_sizes() {
    const auto config = model::LoopyConfig::preset("sd15");
    const auto unet = config.unet_config();
    std::map<int64_t, int> sites_per_width;
    for (const auto& site : model::unet_layer_sites(unet))
        ++sites_per_width[site.channels];
    QCOMPARE(sites_per_width, (std::map<int64_t, int>{{320, 5}, {640, 5}, {1280, 11}}));
    torch::NoGradGuard no_grad;
    int64_t temporal = 0, audio = 0;
    for (const auto& [ch, n] : sites_per_width) {
        auto o = model::TransformerTemporalModelOptions(ch, 8, ch / 8).norm_num_groups(32);
        temporal += n * (count_parameters(*model::InterClipTemporalLayer(o, 20)) +
                         count_parameters(*model::TransformerTemporalModel(o)));
        audio += n * count_parameters(*model::AudioAttention(ch, 8, 768));
    }
    const auto w2v = config.audio_encoder_config();
    model::AudioProjection proj(
        model::AudioProjectionOptions(w2v.num_hidden_layers, w2v.hidden_size));
    model::AudioToLatents a2l(model::AudioToLatentsOptions(768, 1280));
    const int64_t p = count_parameters(*proj), a = count_parameters(*a2l);
    qInfo(
        "sd15 new parameters: temporal layers %lld, audio attention %lld, audio_proj %lld, "
        "audio_to_latents %lld",
        (long long)temporal, (long long)audio, (long long)p, (long long)a);
    // proj1 takes the whole window: 5 frames x 12 layers x 768 channels.
    QCOMPARE(proj->proj1->weight.sizes().vec(), (Shape{512, 5 * 12 * 768}));
    QCOMPARE(proj->proj3->weight.sizes().vec(), (Shape{32 * 768, 512}));
    QCOMPARE(a2l->embeddings.sizes().vec(), (Shape{128, 256}));
    QCOMPARE(a2l->proj_out->weight.sizes().vec(), (Shape{1280, 256}));
}

QTEST_APPLESS_MAIN(Sd15Shapes)
#include "test_sd15_shapes.moc"
