// Evaluation metrics against values worked out by hand, and the report files.
#include <QtTest>

#include <QTemporaryDir>

#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "render/eval_metrics.h"
#include "render/eval_report.h"
#include "test_util.h"

namespace eval = loopy::eval;
using loopy::synth::Keypoints;

namespace {

cv::Mat flat(int size, int value) {
    return cv::Mat(size, size, CV_8UC3, cv::Scalar::all(value));
}

cv::Mat textured(int size, int seed) {
    cv::Mat img(size, size, CV_8UC3);
    cv::RNG rng(static_cast<std::uint64_t>(seed));
    rng.fill(img, cv::RNG::UNIFORM, 0, 256);
    cv::GaussianBlur(img, img, cv::Size(0, 0), 2.0);
    return img;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

Keypoints still_face() {
    Keypoints k;
    for (int i = 0; i < 68; ++i)
        k[i] = cv::Point2f(20.0f + i % 10, 30.0f + i / 10);
    return k;
}

}  // namespace

class EvalMetricsTest : public QObject {
    Q_OBJECT

  private Q_SLOTS:
    void psnrKnownValues() {
        const cv::Mat a = textured(64, 1);
        QVERIFY(std::isinf(eval::psnr(a, a)));
        // A constant offset of 10: MSE = 100, PSNR = 10 log10(255^2 / 100).
        QVERIFY(std::abs(eval::psnr(flat(32, 100), flat(32, 110)) - 28.130803608679106) < 1e-9);
        cv::Mat b = a.clone();
        b(cv::Rect(0, 0, 8, 8)).setTo(cv::Scalar::all(0));
        QVERIFY(std::isinf(eval::psnr(a, b, cv::Rect(16, 16, 32, 32))));
        QVERIFY(std::isfinite(eval::psnr(a, b)));
        QVERIFY(loopy::test::contains(loopy::test::error_of([&] { eval::psnr(a, flat(32, 0)); }),
                                      "one size"));
    }

    void ssimKnownValues() {
        const cv::Mat a = textured(64, 2);
        QVERIFY(std::abs(eval::ssim(a, a) - 1.0) < 1e-9);
        // Two flat images: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) with C1 = (0.01 * 255)^2.
        const double c1 = std::pow(0.01 * 255, 2);
        const double expected = (2 * 100.0 * 110.0 + c1) / (100.0 * 100 + 110.0 * 110 + c1);
        QVERIFY(std::abs(eval::ssim(flat(32, 100), flat(32, 110)) - expected) < 1e-6);
        cv::Mat shifted;
        cv::Mat m = (cv::Mat_<double>(2, 3) << 1, 0, 2, 0, 1, 0);
        cv::warpAffine(a, shifted, m, a.size(), cv::INTER_NEAREST, cv::BORDER_REFLECT);
        const double s_shift = eval::ssim(a, shifted);
        cv::Mat noisy = a.clone(), noise(a.size(), CV_16SC3);
        cv::randn(noise, 0, 20);
        cv::Mat a16;
        a.convertTo(a16, CV_16SC3);
        cv::Mat(a16 + noise).convertTo(noisy, CV_8UC3);
        const double s_noise = eval::ssim(a, noisy);
        QVERIFY2(s_shift < 0.95 && s_shift > -1, qPrintable(QString::number(s_shift)));
        QVERIFY2(s_noise < 0.95 && s_noise > 0, qPrintable(QString::number(s_noise)));
        QVERIFY(std::abs(eval::ssim(a, a, cv::Rect(5, 5, 20, 20)) - 1.0) < 1e-9);
    }

    void pearsonConventions() {
        const std::vector<double> a = {1, 2, 3, 4}, b = {2, 4, 6, 8}, c = {4, 3, 2, 1};
        QVERIFY(std::abs(eval::pearson(a, b) - 1) < 1e-12);
        QVERIFY(std::abs(eval::pearson(a, c) + 1) < 1e-12);
        QCOMPARE(eval::pearson(a, {5, 5, 5, 5}), 0.0);  // a constant series: 0 by definition
        QCOMPARE(eval::pearson({1}, {2}), 0.0);
        QVERIFY(!loopy::test::error_of([&] { eval::pearson(a, {1, 2}); }).empty());
    }

    void keypointVariancesByHand() {
        // Four frames in a 100 x 100 image; the whole face slides right by 10 px a frame.
        std::vector<Keypoints> w(4, still_face());
        for (int t = 0; t < 4; ++t)
            for (auto& p : w[t])
                p.x += 10.0f * t;
        // Nose tip u = 0.x + {0, .1, .2, .3}: population variance 0.0125; v is constant.
        QVERIFY(std::abs(eval::head_movement_variance(w, {100, 100}) - 0.0125) < 1e-9);
        QVERIFY(eval::expression_variance(w, {100, 100}) < 1e-12);  // a rigid move
        // Point 17 also bobs 0, 10, 0, 10 px down (relative v: variance 0.0025).
        for (int t = 0; t < 4; ++t)
            w[t][17].y += 10.0f * (t % 2);
        QVERIFY(std::abs(eval::expression_variance(w, {100, 100}) - 0.0025 / 30) < 1e-9);
        // Moving the nose tip alone moves every relative position: 30 points, each 0.0125.
        std::vector<Keypoints> nose(4, still_face());
        for (int t = 0; t < 4; ++t)
            nose[t][30].x += 10.0f * t;
        QVERIFY(std::abs(eval::expression_variance(nose, {100, 100}) - 0.0125) < 1e-9);
        QVERIFY(std::abs(eval::head_movement_variance(nose, {200, 100}) - 0.0125 / 4) < 1e-9);
        const auto windows =
            eval::window_variances(std::vector<Keypoints>(25, still_face()), {100, 100}, 12);
        QCOMPARE(windows.size(), size_t{2});
        QCOMPARE(windows[1].first_frame, 12);
        QCOMPARE(windows[0].head, 0.0);
    }

    void jitterAndMouthAndBlinks() {
        const std::vector<cv::Mat> frames = {flat(16, 0), flat(16, 10), flat(16, 10)};
        QCOMPARE(eval::temporal_jitter(frames), 5.0);
        const std::vector<cv::Mat> truth = {flat(16, 0), flat(16, 5), flat(16, 10)};
        QCOMPARE(eval::jitter_ratio(frames, truth), 1.0);
        QVERIFY(std::isnan(eval::jitter_ratio(frames, {flat(16, 3), flat(16, 3)})));
        // A 20 x 10 block of mouth-interior colour: mean column height 10 of 100 rows.
        cv::Mat face(100, 100, CV_8UC3, cv::Scalar(200, 160, 140));
        face(cv::Rect(40, 60, 20, 10)).setTo(cv::Scalar(118, 20, 78));
        QVERIFY(std::abs(eval::mouth_opening(face) - 0.1) < 1e-12);
        face(cv::Rect(40, 60, 20, 10)).setTo(cv::Scalar(180, 90, 100));  // lips: not interior
        QCOMPARE(eval::mouth_opening(face), 0.0);
        const std::vector<double> closed = {0, 0.2, 0.9, 0.1, 0, 0, 0.6, 1, 0};
        const auto onsets = eval::blink_onsets(closed, 2.0);
        QCOMPARE(onsets.size(), size_t{2});
        QCOMPARE(onsets[0], 1.0);
        QCOMPARE(onsets[1], 3.0);
        QCOMPARE(eval::blinks_per_minute(onsets, 30.0), 4.0);
    }

    void standardErrorOfTheMean() {
        // {1, 2, 3, 4}: sample variance 5/3, so the mean's standard error is sqrt(5/3 / 4).
        QVERIFY(std::abs(eval::standard_error({1, 2, 3, 4}) - std::sqrt(5.0 / 12.0)) < 1e-12);
        const double nan = std::nan("");
        QVERIFY(std::abs(eval::standard_error({1, nan, 2, 3, 4}) - std::sqrt(5.0 / 12.0)) < 1e-12);
        QCOMPARE(eval::standard_error({0.3, 0.3, 0.3}), 0.0);
        QVERIFY(std::isnan(eval::standard_error({0.7})));
        QVERIFY(std::isnan(eval::standard_error({0.7, nan})));
        QVERIFY(std::isinf(eval::standard_error({1, std::numeric_limits<double>::infinity()})));
    }

    void reportFilesExistAndParse() {
        QTemporaryDir dir;
        eval::ReportInputs in;
        in.table.metrics = {"psnr", "ssim", "mouth_r"};
        const double inf = std::numeric_limits<double>::infinity();
        in.table.rows = {{"model", "clip_0000001", {28.5, 0.9, 0.8}},
                         {"model", "clip_0000002", {30.5, 0.8, 0.6}},
                         {"static", "clip_0000001", {20, 0.7, 0}},
                         {"ground truth", "clip_0000001", {inf, 1, 1}}};
        for (int r = 0; r < 2; ++r) {
            in.sheet_rows.push_back({});
            for (int c = 0; c < 3; ++c)
                in.sheet_rows.back().push_back(textured(64, r * 3 + c));
        }
        in.sheet_row_labels = {"model", "truth"};
        in.sheet_column_labels = {"0.0 s", "1.0 s", "2.0 s"};
        std::vector<double> sine, cosine;
        for (int i = 0; i < 100; ++i) {
            sine.push_back(0.05 + 0.04 * std::sin(i * 0.2));
            cosine.push_back(0.05 + 0.04 * std::cos(i * 0.2));
        }
        in.mouth_series = {{"generated", sine, cv::Scalar(220, 60, 40)},
                           {"ground truth", cosine, cv::Scalar(40, 90, 220)}};
        const auto files = eval::write_report(dir.path().toStdString(), in);

        std::istringstream csv(read_text(files.csv));
        std::vector<std::string> lines;
        for (std::string line; std::getline(csv, line);)
            lines.push_back(line);
        QCOMPARE(lines.size(), size_t{5});
        QCOMPARE(lines[0], std::string("method,clip,psnr,ssim,mouth_r"));
        QCOMPARE(lines[4], std::string("ground truth,clip_0000001,inf,1,1"));
        const std::string md = read_text(files.markdown);
        QVERIFY(loopy::test::contains(md, "| method | clips | psnr | ssim | mouth_r |"));
        QVERIFY(loopy::test::contains(md, "| model | 2 | 29.5 | 0.85 | 0.7 |"));
        QVERIFY(loopy::test::contains(md, "| ground truth | 1 | inf | 1 | 1 |"));
        // The spread table: the model's two clips give standard errors, one clip gives none.
        QVERIFY2(loopy::test::contains(md, "Standard error of each mean"), md.c_str());
        QVERIFY2(loopy::test::contains(md, "| model | 2 | 1 | 0.05 | 0.1 |"), md.c_str());
        QVERIFY2(loopy::test::contains(md, "| static | 1 | n/a | n/a | n/a |"), md.c_str());
        const cv::Mat sheet = cv::imread(files.contact_sheet), plot = cv::imread(files.mouth_plot);
        QCOMPARE(sheet.cols, 140 + 3 * (64 + 4));
        QCOMPARE(sheet.rows, 28 + 2 * (64 + 4));
        QCOMPARE(plot.cols, 900);
        QCOMPARE(plot.rows, 320);
        // Both lines are drawn: the plot holds red-ish and blue-ish pixels (BGR on disk).
        int red = 0, blue = 0;
        for (int y = 0; y < plot.rows; ++y)
            for (int x = 0; x < plot.cols; ++x) {
                const auto p = plot.at<cv::Vec3b>(y, x);
                red += p[2] > 180 && p[0] < 80;
                blue += p[0] > 180 && p[2] < 80;
            }
        QVERIFY(red > 100 && blue > 100);
    }
};

QTEST_APPLESS_MAIN(EvalMetricsTest)
#include "test_eval_metrics.moc"
