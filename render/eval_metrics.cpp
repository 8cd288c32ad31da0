#include "render/eval_metrics.h"

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

#include "core/error.h"

namespace loopy::eval {
namespace {

void check_pair(const cv::Mat& a, const cv::Mat& b, const char* what) {
    if (a.empty() || a.size() != b.size() || a.type() != b.type() || a.depth() != CV_8U)
        throw Error(std::string(what) +
                    ": the images must be non-empty 8-bit of one size and type");
}

cv::Mat luma(const cv::Mat& img) {
    cv::Mat f;
    if (img.channels() == 1) {
        img.convertTo(f, CV_64F);
        return f;
    }
    img.convertTo(f, CV_64FC3);
    cv::Mat y;
    cv::transform(f, y, cv::Matx13d(0.299, 0.587, 0.114));  // RGB order
    return y;
}

double mean_valid(const cv::Mat& map) {
    constexpr int kHalf = 5;  // an 11x11 window fits from 5 pixels inside each border
    if (map.rows < 2 * kHalf + 1 || map.cols < 2 * kHalf + 1) return cv::mean(map)[0];
    return cv::mean(map(cv::Rect(kHalf, kHalf, map.cols - 2 * kHalf, map.rows - 2 * kHalf)))[0];
}

std::vector<double> coordinates(const std::vector<synth::Keypoints>& w, int point, int axis,
                                cv::Size image, int relative_to = -1) {
    std::vector<double> v;
    for (const auto& k : w) {
        const double scale = axis == 0 ? image.width : image.height;
        double c = axis == 0 ? k[point].x : k[point].y;
        if (relative_to >= 0) c -= axis == 0 ? k[relative_to].x : k[relative_to].y;
        v.push_back(c / scale);
    }
    return v;
}

double variance(const std::vector<double>& v) {
    if (v.empty()) return 0;
    double mean = 0;
    for (double x : v)
        mean += x;
    mean /= v.size();
    double s = 0;
    for (double x : v)
        s += (x - mean) * (x - mean);
    return s / v.size();
}

}  // namespace

double psnr(const cv::Mat& a, const cv::Mat& b) {
    check_pair(a, b, "psnr");
    cv::Mat diff;
    cv::absdiff(a, b, diff);
    diff.convertTo(diff, CV_64F);
    const cv::Scalar s = cv::sum(diff.mul(diff));
    const double sum_sq = s[0] + s[1] + s[2] + s[3];
    if (sum_sq == 0) return std::numeric_limits<double>::infinity();
    const double mse = sum_sq / (static_cast<double>(a.total()) * a.channels());
    return 10 * std::log10(255.0 * 255.0 / mse);
}

double psnr(const cv::Mat& a, const cv::Mat& b, const cv::Rect& region) {
    check_pair(a, b, "psnr");
    const cv::Rect r = region & cv::Rect(0, 0, a.cols, a.rows);
    if (r.area() == 0) throw Error("psnr: the region is outside the image");
    return psnr(a(r), b(r));
}

double ssim(const cv::Mat& a, const cv::Mat& b) {
    check_pair(a, b, "ssim");
    const double c1 = std::pow(0.01 * 255, 2), c2 = std::pow(0.03 * 255, 2);
    const cv::Mat x = luma(a), y = luma(b);
    auto blur = [](const cv::Mat& m) {
        cv::Mat out;
        cv::GaussianBlur(m, out, cv::Size(11, 11), 1.5, 1.5, cv::BORDER_REPLICATE);
        return out;
    };
    const cv::Mat mx = blur(x), my = blur(y);
    const cv::Mat sxx = blur(x.mul(x)) - mx.mul(mx), syy = blur(y.mul(y)) - my.mul(my);
    const cv::Mat sxy = blur(x.mul(y)) - mx.mul(my);
    cv::Mat num = (2 * mx.mul(my) + c1).mul(2 * sxy + c2);
    cv::Mat den = (mx.mul(mx) + my.mul(my) + c1).mul(sxx + syy + c2);
    cv::Mat map;
    cv::divide(num, den, map);
    return mean_valid(map);
}

double ssim(const cv::Mat& a, const cv::Mat& b, const cv::Rect& region) {
    check_pair(a, b, "ssim");
    const cv::Rect r = region & cv::Rect(0, 0, a.cols, a.rows);
    if (r.area() == 0) throw Error("ssim: the region is outside the image");
    return ssim(a(r), b(r));
}

cv::Rect mouth_region(const synth::Keypoints& keypoints, cv::Size image, double margin) {
    std::vector<cv::Point2f> lips(keypoints.begin() + 48, keypoints.end());
    const cv::Rect2f box = cv::boundingRect(lips);
    const float w = std::max(16.0f, box.width * static_cast<float>(1 + 2 * margin));
    const float h = std::max(16.0f, box.height * static_cast<float>(1 + 2 * margin));
    const cv::Point2f c(box.x + box.width / 2, box.y + box.height / 2);
    const cv::Rect r(cvRound(c.x - w / 2), cvRound(c.y - h / 2), cvRound(w), cvRound(h));
    return r & cv::Rect(0, 0, image.width, image.height);
}

cv::Rect lower_face_region(cv::Size image) {
    return cv::Rect(cvRound(0.15 * image.width), cvRound(0.35 * image.height),
                    cvRound(0.7 * image.width), cvRound(0.55 * image.height));
}

double mouth_opening(const cv::Mat& rgb, const cv::Rect& region) {
    if (rgb.empty() || rgb.type() != CV_8UC3) throw Error("mouth_opening: expects an RGB image");
    const cv::Rect r = region & cv::Rect(0, 0, rgb.cols, rgb.rows);
    std::vector<int> per_column(static_cast<size_t>(std::max(0, r.width)), 0);
    long count = 0;
    for (int y = r.y; y < r.y + r.height; ++y) {
        const auto* row = rgb.ptr<cv::Vec3b>(y);
        for (int x = r.x; x < r.x + r.width; ++x) {
            const cv::Vec3b p = row[x];
            if (synth::is_mouth_interior(p[0], p[1], p[2])) {
                ++per_column[x - r.x];
                ++count;
            }
        }
    }
    const auto columns =
        std::count_if(per_column.begin(), per_column.end(), [](int n) { return n > 0; });
    if (columns == 0) return 0;
    return static_cast<double>(count) / columns / rgb.rows;
}

double mouth_opening(const cv::Mat& rgb) {
    return mouth_opening(rgb, lower_face_region(rgb.size()));
}

std::vector<double> mouth_openings(const std::vector<cv::Mat>& frames) {
    std::vector<double> out;
    for (const auto& f : frames)
        out.push_back(mouth_opening(f));
    return out;
}

double pearson(const std::vector<double>& a, const std::vector<double>& b) {
    if (a.size() != b.size()) throw Error("pearson: the series differ in length");
    const size_t n = a.size();
    if (n < 2) return 0;
    double ma = 0, mb = 0;
    for (size_t i = 0; i < n; ++i) {
        ma += a[i];
        mb += b[i];
    }
    ma /= n;
    mb /= n;
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; ++i) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    // A (numerically) constant series has no correlation: 0 by definition.
    if (saa <= 1e-12 * n || sbb <= 1e-12 * n) return 0;
    return sab / std::sqrt(saa * sbb);
}

double standard_error(const std::vector<double>& values) {
    double sum = 0;
    int n = 0;
    for (double v : values) {
        if (std::isnan(v)) continue;
        if (std::isinf(v)) return std::numeric_limits<double>::infinity();
        sum += v;
        ++n;
    }
    if (n < 2) return std::nan("");
    const double mean = sum / n;
    double squares = 0;
    for (double v : values)
        if (!std::isnan(v)) squares += (v - mean) * (v - mean);
    return std::sqrt(squares / (n - 1) / n);
}

double temporal_jitter(const std::vector<cv::Mat>& frames) {
    if (frames.size() < 2) return 0;
    double total = 0;
    for (size_t t = 1; t < frames.size(); ++t) {
        check_pair(frames[t], frames[t - 1], "temporal_jitter");
        cv::Mat diff;
        cv::absdiff(frames[t], frames[t - 1], diff);
        const cv::Scalar s = cv::sum(diff);
        total +=
            (s[0] + s[1] + s[2] + s[3]) / (static_cast<double>(diff.total()) * diff.channels());
    }
    return total / (frames.size() - 1);
}

double jitter_ratio(const std::vector<cv::Mat>& generated, const std::vector<cv::Mat>& truth) {
    const double t = temporal_jitter(truth);
    if (t == 0) return std::numeric_limits<double>::quiet_NaN();
    return temporal_jitter(generated) / t;
}

double eye_white_fraction(const cv::Mat& rgb, const synth::Keypoints& keypoints) {
    long white = 0, total = 0;
    for (int first : {36, 42}) {
        std::vector<cv::Point2f> eye(keypoints.begin() + first, keypoints.begin() + first + 6);
        const cv::Rect2f b = cv::boundingRect(eye);
        const cv::Rect r = cv::Rect(cvRound(b.x - 0.25 * b.width), cvRound(b.y - 0.25 * b.height),
                                    cvRound(1.5 * b.width) + 1, cvRound(1.5 * b.height) + 1) &
                           cv::Rect(0, 0, rgb.cols, rgb.rows);
        for (int y = r.y; y < r.y + r.height; ++y) {
            for (int x = r.x; x < r.x + r.width; ++x) {
                const cv::Vec3b p = rgb.at<cv::Vec3b>(y, x);
                const int lo = std::min({p[0], p[1], p[2]}), hi = std::max({p[0], p[1], p[2]});
                white += lo >= 150 && hi - lo <= 45;
                ++total;
            }
        }
    }
    return total > 0 ? static_cast<double>(white) / total : 0.0;
}

std::vector<double> blink_onsets(const std::vector<double>& closedness, double fps,
                                 double threshold) {
    std::vector<double> onsets;
    for (size_t i = 1; i < closedness.size(); ++i)
        if (closedness[i - 1] < threshold && closedness[i] >= threshold) onsets.push_back(i / fps);
    return onsets;
}

std::vector<double> blink_onsets_from_pixels(const std::vector<cv::Mat>& frames,
                                             const std::vector<synth::Keypoints>& keypoints,
                                             double fps) {
    if (frames.size() != keypoints.size())
        throw Error("blink_onsets_from_pixels: one keypoint set per frame is needed");
    std::vector<double> open;
    for (size_t i = 0; i < frames.size(); ++i)
        open.push_back(eye_white_fraction(frames[i], keypoints[i]));
    std::vector<double> sorted = open;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted.empty() ? 0 : sorted[sorted.size() / 2];
    if (median <= 0) return {};
    std::vector<double> closed;
    for (double o : open)
        closed.push_back(1 - o / median);
    return blink_onsets(closed, fps, 0.5);
}

double blinks_per_minute(const std::vector<double>& onsets, double seconds) {
    return seconds > 0 ? 60.0 * onsets.size() / seconds : 0.0;
}

double head_movement_variance(const std::vector<synth::Keypoints>& window, cv::Size image) {
    return variance(coordinates(window, 30, 0, image)) +
           variance(coordinates(window, 30, 1, image));
}

double expression_variance(const std::vector<synth::Keypoints>& window, cv::Size image) {
    double sum = 0;
    int points = 0;
    for (int i = 17; i <= 47; ++i) {
        if (i == 30) continue;
        sum += variance(coordinates(window, i, 0, image, 30)) +
               variance(coordinates(window, i, 1, image, 30));
        ++points;
    }
    return sum / points;
}

std::vector<WindowVariance> window_variances(const std::vector<synth::Keypoints>& frames,
                                             cv::Size image, int window) {
    std::vector<WindowVariance> out;
    if (window <= 0) throw Error("window_variances: the window must hold at least one frame");
    for (size_t first = 0; first + window <= frames.size(); first += window) {
        const std::vector<synth::Keypoints> w(frames.begin() + first,
                                              frames.begin() + first + window);
        out.push_back({static_cast<int>(first), head_movement_variance(w, image),
                       expression_variance(w, image)});
    }
    return out;
}

}  // namespace loopy::eval
