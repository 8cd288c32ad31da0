#pragma once
// Evaluation metrics for generated talking-face videos against ground truth (no Qt, no LibTorch).
// Frames are 8-bit RGB cv::Mat (CV_8UC3); single-channel 8-bit images work where noted.
// The exact definitions are in docs/synthetic-data.md.
#include <limits>
#include <vector>

#include <opencv2/core.hpp>

#include "render/synth_face.h"

namespace loopy::eval {

// PSNR in dB with peak 255 over all pixels and channels: 10 log10(255^2 / MSE); +infinity when
// the images are identical. Throws loopy::Error if sizes or types differ.
double psnr(const cv::Mat& a, const cv::Mat& b);
double psnr(const cv::Mat& a, const cv::Mat& b, const cv::Rect& region);

// SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255,
// computed on luma Y = 0.299 R + 0.587 G + 0.114 B (RGB input) or on the single channel, and
// averaged over the window positions that lie fully inside the image ("valid"; images smaller
// than 11 pixels average every position, borders replicated). 1 for identical images.
double ssim(const cv::Mat& a, const cv::Mat& b);
double ssim(const cv::Mat& a, const cv::Mat& b, const cv::Rect& region);

// The box around the lips (keypoints 48-67) grown by `margin` times its size on each side (and to
// at least 16 x 16 pixels), clipped to the image.
cv::Rect mouth_region(const synth::Keypoints& keypoints, cv::Size image, double margin = 0.5);
// A fixed lower-face box that holds the synthetic mouth at any drawn pose: x in [0.15, 0.85] and
// y in [0.35, 0.9] of the image.
cv::Rect lower_face_region(cv::Size image);

// Mouth opening from pixels: inside `region`, the pixels whose colour is in the mouth-interior
// range (synth::is_mouth_interior) are counted; opening = count / (number of columns holding at
// least one such pixel) / image height, i.e. the mean height of the visible mouth interior as a
// fraction of the image height. 0 when no pixel is in the range. Without a region: the lower face.
double mouth_opening(const cv::Mat& rgb, const cv::Rect& region);
double mouth_opening(const cv::Mat& rgb);
std::vector<double> mouth_openings(const std::vector<cv::Mat>& frames);

// Pearson correlation. Defined as 0 when either series is constant or shorter than 2 (a static
// video has no correlation with speech). Throws loopy::Error if the lengths differ.
double pearson(const std::vector<double>& a, const std::vector<double>& b);

// Standard error of the mean of `values` (sample standard deviation / sqrt(n)), NaN values left
// out: how far a mean over this few clips may be from the mean over many. NaN with fewer than 2
// values; +inf when any value is infinite.
double standard_error(const std::vector<double>& values);

// Temporal jitter: the mean over t = 1..T-1 of the mean absolute difference |F_t - F_(t-1)| over
// every pixel and channel, in 8-bit units. 0 for fewer than 2 frames.
double temporal_jitter(const std::vector<cv::Mat>& frames);
// temporal_jitter(generated) / temporal_jitter(truth); 1 means as much frame-to-frame change as
// the ground truth. NaN when the truth does not change at all.
double jitter_ratio(const std::vector<cv::Mat>& generated, const std::vector<cv::Mat>& truth);

// Eye openness from pixels: the share of eye-white pixels (every channel >= 150 and
// max - min <= 45) in the two eye boxes (keypoints 36-41 and 42-47, grown by 50 %).
double eye_white_fraction(const cv::Mat& rgb, const synth::Keypoints& keypoints);
// Blink onsets (seconds) as upward crossings of `threshold` by a closedness series (e.g. the
// ground-truth blink track).
std::vector<double> blink_onsets(const std::vector<double>& closedness, double fps,
                                 double threshold = 0.5);
// Blink onsets from pixels: closedness = 1 - eye_white_fraction / median over the clip, then
// blink_onsets(closedness, fps, 0.5).
std::vector<double> blink_onsets_from_pixels(const std::vector<cv::Mat>& frames,
                                             const std::vector<synth::Keypoints>& keypoints,
                                             double fps);
double blinks_per_minute(const std::vector<double>& onsets, double seconds);

// Keypoint variances over a window of frames (population variances, divide by n), with
// coordinates normalised by the image size (u = x / width, v = y / height):
//   head:       Var_t(u_30) + Var_t(v_30)                                   (nose tip, point 30)
//   expression: mean over i in 17..47, i != 30, of Var_t(u_i - u_30) + Var_t(v_i - v_30)
double head_movement_variance(const std::vector<synth::Keypoints>& window, cv::Size image);
double expression_variance(const std::vector<synth::Keypoints>& window, cv::Size image);

struct WindowVariance {
    int first_frame = 0;
    double head = 0;
    double expression = 0;
};
// Non-overlapping windows of `window` frames from frame 0; a last partial window is dropped.
std::vector<WindowVariance> window_variances(const std::vector<synth::Keypoints>& frames,
                                             cv::Size image, int window = 12);

}  // namespace loopy::eval
