#include "render/synth_face.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "render/synth_random.h"

namespace loopy::synth {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kMaxGap = 0.42;       // inner-lip gap at jaw_open = 1, head units
constexpr double kEyeLineY = 0.38;     // head origin (eye line) at this fraction of the height
constexpr double kUnitsToImage = 0.2;  // one head unit = 0.2 x image size at scale 1
constexpr double kPivotY = 0.8;        // head rotates about a point below the eye line
constexpr std::uint64_t kStyleStream = 1;
constexpr int kShift = 4;  // fixed-point bits for OpenCV drawing (1/16 pixel)

const Rgb kEyeWhite{238, 236, 228};
const Rgb kTeeth{236, 230, 214};
const Rgb kPupil{18, 16, 16};
const Rgb kMouthDark{118, 20, 78};  // inside is_mouth_interior(), see the header
const Rgb kTongue{150, 38, 96};     // inside is_mouth_interior() too

Rgb scaled(Rgb c, double f) {
    return Rgb(cv::saturate_cast<uchar>(c[0] * f), cv::saturate_cast<uchar>(c[1] * f),
               cv::saturate_cast<uchar>(c[2] * f));
}

Rgb mix(Rgb a, Rgb b, double t) {
    return Rgb(cv::saturate_cast<uchar>(a[0] + (b[0] - a[0]) * t),
               cv::saturate_cast<uchar>(a[1] + (b[1] - a[1]) * t),
               cv::saturate_cast<uchar>(a[2] + (b[2] - a[2]) * t));
}

// Keeps a palette colour (and any blend or darkening of palette colours) out of the mouth range:
// anything but near-black keeps G >= 55 (the range needs G <= 45), near-black stays neutral, and
// no colour is magenta (red and blue both well above green).
Rgb safe_colour(Rgb c) {
    int r = c[0], g = c[1], b = c[2];
    if (std::max({r, g, b}) < 70) {
        r = std::clamp(r, g - 15, g + 15);
        b = std::clamp(b, g - 15, g + 15);
    } else {
        g = std::max(g, 55);
        if (b - g >= 25 && r - g >= 55) r = g + 50;
    }
    return Rgb(cv::saturate_cast<uchar>(r), cv::saturate_cast<uchar>(g),
               cv::saturate_cast<uchar>(b));
}

Rgb hsv_colour(Rng& rng, double s_lo, double s_hi, double v_lo, double v_hi) {
    cv::Mat hsv(1, 1, CV_8UC3,
                cv::Scalar(rng.uniform(0, 180), rng.uniform(s_lo, s_hi) * 255,
                           rng.uniform(v_lo, v_hi) * 255));
    cv::Mat rgb;
    cv::cvtColor(hsv, rgb, cv::COLOR_HSV2RGB);
    return safe_colour(rgb.at<Rgb>(0, 0));
}

Rgb jitter(Rng& rng, Rgb c, double amount) {
    return Rgb(cv::saturate_cast<uchar>(c[0] + rng.normal(0, amount)),
               cv::saturate_cast<uchar>(c[1] + rng.normal(0, amount)),
               cv::saturate_cast<uchar>(c[2] + rng.normal(0, amount)));
}

Rgb skin_tone(Rng& rng) {
    static const Rgb tones[] = {{250, 222, 196}, {238, 196, 160}, {222, 172, 136}, {196, 140, 104},
                                {160, 110, 80},  {122, 84, 60},   {92, 64, 48}};
    const double t = rng.uniform(0, 6);
    const int i = std::min(5, static_cast<int>(t));
    return safe_colour(jitter(rng, mix(tones[i], tones[i + 1], t - i), 4));
}

Rgb pick(Rng& rng, std::initializer_list<Rgb> colours) {
    const int i = rng.index(static_cast<int>(colours.size()));
    return safe_colour(jitter(rng, colours.begin()[i], 5));
}

HairStyle pick_hair(Rng& rng) {
    const double u = rng.uniform();
    if (u < 0.1) return HairStyle::Bald;
    if (u < 0.45) return HairStyle::Short;
    if (u < 0.75) return HairStyle::Long;
    if (u < 0.87) return HairStyle::Bun;
    return HairStyle::Curly;
}

void random_colours(Rng& rng, FaceStyle& s) {
    s.skin = skin_tone(rng);
    s.hair_colour = pick(rng, {{26, 22, 22},
                               {62, 44, 36},
                               {104, 74, 54},
                               {150, 96, 62},
                               {214, 184, 128},
                               {160, 158, 156},
                               {208, 206, 200},
                               {64, 92, 160}});
    s.brow_colour = safe_colour(scaled(s.hair_colour, s.hair_colour[1] > 150 ? 0.7 : 0.85));
    if (s.hair == HairStyle::Bald) s.brow_colour = pick(rng, {{60, 46, 40}, {110, 90, 70}});
    s.iris = pick(rng, {{94, 62, 36},
                        {58, 40, 28},
                        {80, 120, 170},
                        {86, 124, 82},
                        {122, 130, 134},
                        {124, 100, 56}});
    s.lips = safe_colour(jitter(rng, mix(s.skin, Rgb(192, 74, 88), rng.uniform(0.35, 0.55)), 5));
    s.glasses_colour =
        pick(rng, {{20, 20, 22}, {92, 62, 42}, {192, 162, 92}, {170, 170, 176}, {170, 58, 62}});
    s.clothing = hsv_colour(rng, 0.15, 0.8, 0.3, 0.9);
    s.background_a = hsv_colour(rng, 0.05, 0.5, 0.35, 0.95);
    s.background_b = rng.chance(0.5) ? safe_colour(scaled(s.background_a, rng.uniform(0.6, 0.85)))
                                     : hsv_colour(rng, 0.05, 0.5, 0.35, 0.95);
}

void random_shape(Rng& rng, FaceStyle& s) {
    s.face_width = rng.uniform(0.86, 1.04);
    s.chin_y = rng.uniform(1.42, 1.66);
    s.jaw_squareness = rng.uniform();
    s.chin_taper = rng.uniform(0.05, 0.3);
    s.forehead = rng.uniform(1.1, 1.3);
    s.head_scale = rng.uniform(0.92, 1.06);
    s.eye_spacing = rng.uniform(0.38, 0.46);
    s.eye_size = rng.uniform(0.16, 0.21);
    s.brow_height = rng.uniform(0.27, 0.36);
    s.brow_thickness = rng.uniform(0.04, 0.085);
    s.brow_arch = rng.uniform(0.0, 0.08);
    s.nose_length = rng.uniform(0.5, 0.6);
    s.nose_width = rng.uniform(0.16, 0.24);
    s.mouth_y = s.nose_length + rng.uniform(0.3, 0.38);
    s.mouth_width = rng.uniform(0.31, 0.42);
    s.lip_thickness = rng.uniform(0.065, 0.11);
    s.hair_volume = rng.uniform(0.05, 0.18);
    s.hairline = rng.uniform(0.5, 0.72);
    s.glasses = rng.chance(0.3);
    s.glasses_size = rng.uniform(1.3, 1.6);
    s.shoulder_width = rng.uniform(2.3, 2.9);
}

}  // namespace

bool is_mouth_interior(int r, int g, int b) {
    return r >= 90 && r <= 170 && g <= 45 && b >= 50 && b <= 125 && r - g >= 60 && b - g >= 30;
}

const char* to_string(HairStyle style) {
    switch (style) {
        case HairStyle::Bald:
            return "bald";
        case HairStyle::Short:
            return "short";
        case HairStyle::Long:
            return "long";
        case HairStyle::Bun:
            return "bun";
        case HairStyle::Curly:
            return "curly";
    }
    return "?";
}

const char* to_string(BackgroundKind kind) {
    switch (kind) {
        case BackgroundKind::Flat:
            return "flat";
        case BackgroundKind::Gradient:
            return "gradient";
        case BackgroundKind::Noise:
            return "noise";
    }
    return "?";
}

FaceStyle random_face_style(std::uint64_t seed) {
    Rng rng(seed, kStyleStream);
    FaceStyle s;
    s.hair = pick_hair(rng);
    random_shape(rng, s);
    random_colours(rng, s);
    const int bg = rng.index(3);
    s.background = bg == 0   ? BackgroundKind::Flat
                   : bg == 1 ? BackgroundKind::Gradient
                             : BackgroundKind::Noise;
    // Mostly side light, a little from above (shadow toward the lower side).
    s.light_angle = (rng.chance(0.5) ? 0.0 : kPi) + rng.normal(0, 0.3);
    s.light_strength = rng.uniform(0.06, 0.3);
    s.texture_seed = rng.next();
    return s;
}

// ---------------------------------------------------------------------------------------------
// Geometry: the head in head units (x right, y down, z toward the camera), projected to image
// pixels. Keypoints and drawing share every point computed here.
namespace {

struct Projector {
    double s = 1;                   // output pixels per head unit
    double cx = 0, cy = 0;          // output pixel of the head origin (eye-line midpoint)
    double bs = 1, bx = 0, by = 0;  // the body: translated less, not rotated
    cv::Matx33d rotation = cv::Matx33d::eye();

    Projector(const FaceStyle& style, const FaceState& state, int size) {
        const double n = size;
        s = n * kUnitsToImage * style.head_scale * state.scale;
        cx = n * (0.5 + state.tx);
        cy = n * (kEyeLineY + state.ty);
        bs = n * kUnitsToImage * style.head_scale;
        bx = n * (0.5 + 0.4 * state.tx);
        by = n * (kEyeLineY + 0.3 * state.ty);
        const double y = state.yaw * kPi / 180, p = state.pitch * kPi / 180,
                     r = state.roll * kPi / 180;
        const cv::Matx33d ry(std::cos(y), 0, std::sin(y), 0, 1, 0, -std::sin(y), 0, std::cos(y));
        const cv::Matx33d rx(1, 0, 0, 0, std::cos(p), -std::sin(p), 0, std::sin(p), std::cos(p));
        const cv::Matx33d rz(std::cos(r), -std::sin(r), 0, std::sin(r), std::cos(r), 0, 0, 0, 1);
        rotation = rz * rx * ry;
    }
    cv::Point2d head(const cv::Point3d& p) const {
        const cv::Vec3d q = rotation * cv::Vec3d(p.x, p.y - kPivotY, p.z);
        return {cx + s * q[0], cy + s * (q[1] + kPivotY)};
    }
    cv::Point2d body(double x, double y) const { return {bx + bs * x, by + bs * y}; }
};

// Depth of the face surface (an ellipsoid) in front of the silhouette plane.
double surface_z(const FaceStyle& st, double x, double y) {
    const double a = x / (1.05 * st.face_width), b = (y - 0.3) / 1.9;
    return 0.9 * std::sqrt(std::max(0.0, 1 - a * a - b * b));
}

cv::Point3d on_face(const FaceStyle& st, double x, double y, double dz = 0) {
    return {x, y, surface_z(st, x, y) + dz};
}

cv::Point3d mirrored(const cv::Point3d& p) {
    return {-p.x, p.y, p.z};
}

using Landmarks = std::array<cv::Point3d, 68>;

void jaw_landmarks(const FaceStyle& st, const FaceState& f, Landmarks& lm) {
    const double n = 2 + 1.6 * st.jaw_squareness, y0 = 0.05;
    const double drop = f.jaw_open * kMaxGap * 0.85;
    for (int i = 0; i <= 16; ++i) {
        const double th = kPi * i / 16.0, c = std::cos(th), s = std::sin(th);
        const double x = -st.face_width * (c < 0 ? -1 : 1) * std::pow(std::abs(c), 2 / n) *
                         (1 - st.chin_taper * std::pow(s, 4));
        const double y = y0 + (st.chin_y - y0) * std::pow(s, 2 / n) + drop * s * s;
        lm[i] = {x, y, 0.3 * s * s};
    }
}

void brow_landmarks(const FaceStyle& st, const FaceState& f, Landmarks& lm) {
    const double ew = st.eye_size, outer = -(st.eye_spacing + 1.25 * ew);
    const double inner = -(st.eye_spacing - 0.95 * ew);
    for (int j = 0; j < 5; ++j) {
        const double u = j / 4.0;  // outer end to inner end
        const double x = outer + u * (inner - outer);
        const double arch = st.brow_arch * std::sin(kPi * (0.25 + 0.75 * u));
        const double y = -st.brow_height - arch - f.brow_raise * (0.08 + 0.03 * u);
        lm[17 + j] = on_face(st, x, y, 0.04);
        lm[26 - j] = mirrored(lm[17 + j]);
    }
}

void nose_landmarks(const FaceStyle& st, Landmarks& lm) {
    const double nl = st.nose_length, nw = st.nose_width;
    lm[27] = on_face(st, 0, 0.02, 0.12);
    lm[28] = on_face(st, 0, nl * 0.35, 0.2);
    lm[29] = on_face(st, 0, nl * 0.68, 0.28);
    lm[30] = on_face(st, 0, nl, 0.36);
    lm[31] = on_face(st, -nw, nl + 0.03, 0.1);
    lm[32] = on_face(st, -nw * 0.5, nl + 0.07, 0.16);
    lm[33] = on_face(st, 0, nl + 0.085, 0.2);
    lm[34] = mirrored(lm[32]);
    lm[35] = mirrored(lm[31]);
}

void eye_landmarks(const FaceStyle& st, const FaceState& f, Landmarks& lm) {
    const double ex = -st.eye_spacing, ew = st.eye_size, eh = 0.5 * ew;
    const double open_upper = -eh * (1 + 0.15 * f.brow_raise);
    const double upper = open_upper + (0.6 * eh - open_upper) * std::clamp(f.blink, 0.0, 1.0);
    lm[36] = on_face(st, ex - ew, 0.02);
    lm[37] = on_face(st, ex - 0.35 * ew, upper);
    lm[38] = on_face(st, ex + 0.35 * ew, upper);
    lm[39] = on_face(st, ex + ew, 0.03);
    lm[40] = on_face(st, ex + 0.35 * ew, 0.6 * eh);
    lm[41] = on_face(st, ex - 0.35 * ew, 0.6 * eh);
    const int from[6] = {39, 38, 37, 36, 41, 40};  // 42..47 mirror these
    for (int i = 0; i < 6; ++i)
        lm[42 + i] = mirrored(lm[from[i]]);
}

void mouth_landmarks(const FaceStyle& st, const FaceState& f, Landmarks& lm) {
    const double round = std::clamp(f.lip_round, 0.0, 1.0);
    const double mw = st.mouth_width * (1 + 0.2 * std::clamp(f.lip_width, 0.0, 1.0) - 0.3 * round);
    const double gap = std::clamp(f.jaw_open, 0.0, 1.0) * kMaxGap, my = st.mouth_y;
    const double up = my - 0.15 * gap, lo = my + 0.85 * gap;
    const double th_up = st.lip_thickness * (1 + 0.35 * round);
    const double th_lo = 1.25 * th_up;
    const double corner = my + 0.3 * gap - 0.03 * f.lip_width;
    const double dz = 0.08 + 0.1 * round;
    lm[48] = on_face(st, -mw, corner, dz - 0.04);
    lm[49] = on_face(st, -0.62 * mw, up - 0.8 * th_up, dz);
    lm[50] = on_face(st, -0.28 * mw, up - 1.05 * th_up, dz);
    lm[51] = on_face(st, 0, up - 0.9 * th_up, dz);
    lm[52] = mirrored(lm[50]);
    lm[53] = mirrored(lm[49]);
    lm[54] = mirrored(lm[48]);
    lm[55] = on_face(st, 0.6 * mw, lo + 0.85 * th_lo, dz);
    lm[56] = on_face(st, 0.3 * mw, lo + th_lo, dz);
    lm[57] = on_face(st, 0, lo + 1.02 * th_lo, dz);
    lm[58] = mirrored(lm[56]);
    lm[59] = mirrored(lm[55]);
    // Inner lips: rounding pulls the corners in, so the opening grows rounder.
    const double icx = mw * (0.86 - 0.2 * round);
    lm[60] = on_face(st, -icx, corner, dz - 0.02);
    lm[61] = on_face(st, -0.45 * icx, up + 0.2 * (corner - up), dz);
    lm[62] = on_face(st, 0, up, dz);
    lm[63] = mirrored(lm[61]);
    lm[64] = mirrored(lm[60]);
    lm[65] = on_face(st, 0.45 * icx, lo - 0.2 * (lo - corner), dz);
    lm[66] = on_face(st, 0, lo, dz);
    lm[67] = mirrored(lm[65]);
}

Landmarks head_landmarks(const FaceStyle& st, const FaceState& f) {
    Landmarks lm;
    jaw_landmarks(st, f, lm);
    brow_landmarks(st, f, lm);
    nose_landmarks(st, lm);
    eye_landmarks(st, f, lm);
    mouth_landmarks(st, f, lm);
    return lm;
}

// Points on an ellipse in head units (a closed outline), `steps` of them from angle a0 to a1.
std::vector<cv::Point3d> arc(double cx, double cy, double rx, double ry, double a0, double a1,
                             int steps, double z = 0) {
    std::vector<cv::Point3d> pts;
    for (int i = 0; i <= steps; ++i) {
        const double a = a0 + (a1 - a0) * i / steps;
        pts.push_back({cx + rx * std::cos(a), cy - ry * std::sin(a), z});
    }
    return pts;
}

// Uniform Catmull-Rom through `pts` (smooth outlines from a few keypoints).
std::vector<cv::Point2d> smooth(const std::vector<cv::Point2d>& pts, bool closed, int steps = 6) {
    const int n = static_cast<int>(pts.size());
    if (n < 3) return pts;
    std::vector<cv::Point2d> out;
    const int segments = closed ? n : n - 1;
    auto at = [&](int i) {
        if (closed) return pts[(i % n + n) % n];
        return pts[std::clamp(i, 0, n - 1)];
    };
    for (int i = 0; i < segments; ++i) {
        const cv::Point2d p0 = at(i - 1), p1 = at(i), p2 = at(i + 1), p3 = at(i + 2);
        for (int k = 0; k < steps; ++k) {
            const double t = static_cast<double>(k) / steps, t2 = t * t, t3 = t2 * t;
            out.push_back(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2 +
                                 (-p0 + 3 * p1 - 3 * p2 + p3) * t3));
        }
    }
    if (!closed) out.push_back(pts.back());
    return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Drawing. Everything is drawn on a canvas `k` times the output size and reduced with INTER_AREA.
namespace {

struct Canvas {
    cv::Mat img;  // CV_8UC3 RGB, (size * k)^2
    int k = 4;
    const Projector* proj = nullptr;
    const FaceStyle* style = nullptr;

    // Output pixel coordinate -> canvas fixed point (pixel centres line up after INTER_AREA).
    cv::Point fixed(const cv::Point2d& p) const {
        const double off = (k - 1) / 2.0;
        return {static_cast<int>(std::lround((p.x * k + off) * (1 << kShift))),
                static_cast<int>(std::lround((p.y * k + off) * (1 << kShift)))};
    }
    int thickness(double units) const {
        return std::max(1, static_cast<int>(std::lround(units * proj->s * k)));
    }
    std::vector<cv::Point2d> project(const std::vector<cv::Point3d>& pts) const {
        std::vector<cv::Point2d> out;
        for (const auto& p : pts)
            out.push_back(proj->head(p));
        return out;
    }
    void fill(const std::vector<cv::Point2d>& pts, Rgb c) {
        std::vector<cv::Point> f;
        for (const auto& p : pts)
            f.push_back(fixed(p));
        cv::fillPoly(img, std::vector<std::vector<cv::Point>>{f}, cv::Scalar(c[0], c[1], c[2]),
                     cv::LINE_AA, kShift);
    }
    void line(const std::vector<cv::Point2d>& pts, Rgb c, double units, bool closed = false) {
        std::vector<cv::Point> f;
        for (const auto& p : pts)
            f.push_back(fixed(p));
        cv::polylines(img, std::vector<std::vector<cv::Point>>{f}, closed,
                      cv::Scalar(c[0], c[1], c[2]), thickness(units), cv::LINE_AA, kShift);
    }
    void disc(const cv::Point2d& centre, double radius_units, Rgb c) {
        const int r = static_cast<int>(std::lround(radius_units * proj->s * k * (1 << kShift)));
        cv::circle(img, fixed(centre), std::max(1, r), cv::Scalar(c[0], c[1], c[2]), cv::FILLED,
                   cv::LINE_AA, kShift);
    }
};

cv::Mat make_background(const FaceStyle& st, int size, int k) {
    cv::Mat small(size, size, CV_8UC3);
    Rng rng(st.texture_seed, 2);
    cv::Mat noise;
    if (st.background == BackgroundKind::Noise) {
        // Two octaves of smooth value noise.
        cv::Mat coarse(6, 6, CV_32F), fine(24, 24, CV_32F), a, b;
        for (int i = 0; i < coarse.rows * coarse.cols; ++i)
            coarse.at<float>(i) = rng.uniform();
        for (int i = 0; i < fine.rows * fine.cols; ++i)
            fine.at<float>(i) = rng.uniform();
        cv::resize(coarse, a, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
        cv::resize(fine, b, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
        noise = 0.7 * a + 0.3 * b;
    }
    const double diag = rng.uniform(-0.5, 0.5);
    for (int y = 0; y < size; ++y) {
        for (int x = 0; x < size; ++x) {
            double t = 0;
            if (st.background == BackgroundKind::Gradient) {
                t = std::clamp((y + diag * (x - size / 2.0)) / size, 0.0, 1.0);
            } else if (st.background == BackgroundKind::Noise) {
                t = std::clamp(static_cast<double>(noise.at<float>(y, x)), 0.0, 1.0);
            }
            small.at<Rgb>(y, x) = mix(st.background_a, st.background_b, t);
        }
    }
    cv::Mat big;
    cv::resize(small, big, cv::Size(size * k, size * k), 0, 0, cv::INTER_LINEAR);
    return big;
}

std::vector<cv::Point2d> face_outline(const Canvas& cv_, const Landmarks& lm) {
    const FaceStyle& st = *cv_.style;
    std::vector<cv::Point2d> jaw;
    for (int i = 0; i <= 16; ++i)
        jaw.push_back(cv_.proj->head(lm[i]));
    std::vector<cv::Point2d> out = smooth(jaw, false);
    const auto top = arc(0, 0.05, st.face_width, st.forehead + 0.05, 0.0, kPi, 24);
    for (size_t i = 1; i + 1 < top.size(); ++i)
        out.push_back(cv_.proj->head(top[i]));
    return out;
}

// Returns the neck outline, for the shadow under the jaw.
std::vector<cv::Point2d> draw_body(Canvas& c) {
    const FaceStyle& st = *c.style;
    const Projector& p = *c.proj;
    const double w = st.face_width, sw = st.shoulder_width, yn = 1.85;
    // Neck: top follows the head, bottom stays with the body.
    const std::vector<cv::Point2d> neck = {p.head({-0.48 * w, 0.9, 0}), p.head({0.48 * w, 0.9, 0}),
                                           p.body(0.5 * w, yn + 0.4), p.body(-0.5 * w, yn + 0.4)};
    c.fill(neck, scaled(st.skin, 0.86));
    std::vector<cv::Point2d> cloth = {
        p.body(-0.62 * w, yn - 0.02), p.body(-sw * 0.7, yn + 0.22), p.body(-sw, yn + 0.7),
        p.body(-sw * 1.1, 4.5),       p.body(sw * 1.1, 4.5),        p.body(sw, yn + 0.7),
        p.body(sw * 0.7, yn + 0.22),  p.body(0.62 * w, yn - 0.02),  p.body(0.25, yn + 0.3),
        p.body(0, yn + 0.45),         p.body(-0.25, yn + 0.3)};
    c.fill(smooth(cloth, true, 4), st.clothing);
    c.line({p.body(-0.62 * w, yn - 0.02), p.body(-0.25, yn + 0.3), p.body(0, yn + 0.45),
            p.body(0.25, yn + 0.3), p.body(0.62 * w, yn - 0.02)},
           scaled(st.clothing, 0.7), 0.04);
    return neck;
}

std::vector<cv::Point3d> hair_outer(const FaceStyle& st, double below) {
    const double v = st.hair_volume;
    return arc(0, 0.05, st.face_width * (1 + v), st.forehead + 0.05 + v, -below, kPi + below, 30,
               -0.2);
}

void draw_back_hair(Canvas& c) {
    const FaceStyle& st = *c.style;
    if (st.hair == HairStyle::Long) {
        auto pts = hair_outer(st, 0.1);
        const double w = st.face_width * (1 + st.hair_volume) + 0.1;
        pts.push_back({-w - 0.15, 2.1, -0.4});
        pts.push_back({-w * 0.5, 2.35, -0.4});
        pts.push_back({w * 0.5, 2.35, -0.4});
        pts.push_back({w + 0.15, 2.1, -0.4});
        c.fill(smooth(c.project(pts), true, 3), st.hair_colour);
    } else if (st.hair == HairStyle::Bun) {
        c.disc(c.proj->head({0, -(st.forehead + st.hair_volume + 0.22), -0.3}), 0.36,
               st.hair_colour);
    }
}

void draw_ears(Canvas& c) {
    const FaceStyle& st = *c.style;
    for (int side = -1; side <= 1; side += 2) {
        const double x = side * st.face_width * 0.97;
        c.fill(c.project(arc(x, 0.28, 0.14, 0.26, 0, 2 * kPi, 24, -0.2)), st.skin);
        c.fill(c.project(arc(x + side * 0.03, 0.28, 0.07, 0.16, 0, 2 * kPi, 16, -0.2)),
               scaled(st.skin, 0.8));
    }
}

// A soft directional shade over the skin drawn so far: computed coarse, applied at canvas scale.
void shade_skin(Canvas& c, const std::vector<cv::Point2d>& outline, int size) {
    const FaceStyle& st = *c.style;
    const Projector& p = *c.proj;
    cv::Mat mask = cv::Mat::zeros(size, size, CV_32F);
    std::vector<cv::Point> poly;
    for (const auto& q : outline)
        poly.push_back(cv::Point(cvRound(q.x), cvRound(q.y)));
    cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{poly}, cv::Scalar(1.0));
    cv::GaussianBlur(mask, mask, cv::Size(), std::max(1.0, 0.25 * p.s));
    const double dx = std::cos(st.light_angle), dy = std::sin(st.light_angle);
    cv::Mat factor(size, size, CV_32F);
    for (int y = 0; y < size; ++y) {
        for (int x = 0; x < size; ++x) {
            const double g =
                std::clamp(((x - p.cx) * dx + (y - p.cy) * dy) / (1.1 * p.s), -1.0, 1.0);
            const double rim = 1 - mask.at<float>(y, x);  // darker toward the outline
            factor.at<float>(y, x) = static_cast<float>(
                (1 - st.light_strength * (0.5 + 0.5 * g)) * (1 - 0.35 * rim) + 0.03);
        }
    }
    cv::Mat big;
    cv::resize(factor, big, c.img.size(), 0, 0, cv::INTER_LINEAR);
    std::vector<cv::Point> fpoly;
    for (const auto& q : outline)
        fpoly.push_back(c.fixed(q));
    const cv::Rect box = cv::Rect(0, 0, c.img.cols, c.img.rows) &
                         cv::Rect(cv::boundingRect(fpoly).tl() / (1 << kShift) - cv::Point(2, 2),
                                  cv::boundingRect(fpoly).size() / (1 << kShift) + cv::Size(5, 5));
    cv::Mat skin_mask = cv::Mat::zeros(box.size(), CV_8U);
    cv::fillPoly(skin_mask, std::vector<std::vector<cv::Point>>{fpoly}, cv::Scalar(255),
                 cv::LINE_AA, kShift, -box.tl() * (1 << kShift));
    for (int y = 0; y < box.height; ++y) {
        auto* row = c.img.ptr<Rgb>(y + box.y) + box.x;
        const auto* m = skin_mask.ptr<uchar>(y);
        const auto* f = big.ptr<float>(y + box.y) + box.x;
        for (int x = 0; x < box.width; ++x) {
            if (m[x] == 0) continue;
            const float w = 1 - (m[x] / 255.0f) * (1 - f[x]);
            for (int ch = 0; ch < 3; ++ch)
                row[x][ch] = cv::saturate_cast<uchar>(row[x][ch] * w);
        }
    }
}

double shade_at(const Canvas& c, const cv::Point2d& q) {
    const FaceStyle& st = *c.style;
    const double g = std::clamp(((q.x - c.proj->cx) * std::cos(st.light_angle) +
                                 (q.y - c.proj->cy) * std::sin(st.light_angle)) /
                                    (1.1 * c.proj->s),
                                -1.0, 1.0);
    return 1 - st.light_strength * (0.5 + 0.5 * g) + 0.03;
}

// Draws `paint` clipped to the closed outline `region` (an iris inside the eye, teeth inside the
// mouth).
template <class Paint>
void clipped(Canvas& c, const std::vector<cv::Point2d>& region, Paint paint) {
    std::vector<cv::Point> poly;
    for (const auto& q : region)
        poly.push_back(c.fixed(q));
    cv::Rect box = cv::boundingRect(poly);
    box = cv::Rect(box.x >> kShift, box.y >> kShift, (box.width >> kShift) + 3,
                   (box.height >> kShift) + 3) &
          cv::Rect(0, 0, c.img.cols, c.img.rows);
    if (box.area() == 0) return;
    cv::Mat mask = cv::Mat::zeros(box.size(), CV_8U);
    cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{poly}, cv::Scalar(255), cv::LINE_8,
                 kShift, -box.tl() * (1 << kShift));
    cv::Mat before = c.img(box).clone();
    paint();
    before.copyTo(c.img(box), ~mask);
}

void draw_eye(Canvas& c, const Landmarks& lm, int first) {
    const FaceStyle& st = *c.style;
    std::vector<cv::Point2d> outline;
    for (int i = 0; i < 6; ++i)
        outline.push_back(c.proj->head(lm[first + i]));
    // Corner order differs per eye; both are a closed loop.
    const auto loop = smooth(outline, true, 5);
    const double lit = shade_at(c, outline[0]);
    const double opening = cv::norm(outline[1] - outline[5]) + cv::norm(outline[2] - outline[4]);
    if (opening > 0.02 * c.proj->s) {
        c.fill(loop, scaled(kEyeWhite, std::min(1.0, lit + 0.05)));
        const cv::Point3d centre = 0.5 * (lm[first] + lm[first + 3]);
        const cv::Point2d iris = c.proj->head({centre.x, centre.y + 0.01, centre.z + 0.02});
        clipped(c, loop, [&] {
            c.disc(iris, st.eye_size * 0.55, st.iris);
            c.disc(iris, st.eye_size * 0.26, kPupil);
            c.disc(iris + cv::Point2d(-0.06, -0.06) * c.proj->s, st.eye_size * 0.09, kEyeWhite);
        });
    }
    const Rgb lash = safe_colour(scaled(st.brow_colour, 0.5));
    const int upper[4] = {0, 1, 2, 3};
    std::vector<cv::Point2d> lid;
    for (int i : upper)
        lid.push_back(outline[i]);
    c.line(smooth(lid, false, 5), lash, 0.028);
    c.line({outline[3], outline[4], outline[5], outline[0]}, scaled(st.skin, 0.72 * lit), 0.012);
}

void draw_brows(Canvas& c, const Landmarks& lm) {
    const FaceStyle& st = *c.style;
    for (int first : {17, 22}) {
        std::vector<cv::Point2d> top, bottom;
        for (int i = 0; i < 5; ++i) {
            const cv::Point3d p = lm[first + i];
            // Thicker at the inner end (index 21 / 22).
            const double u = first == 17 ? i / 4.0 : 1 - i / 4.0;
            const double t = st.brow_thickness * (0.55 + 0.6 * u);
            top.push_back(c.proj->head({p.x, p.y - t / 2, p.z}));
            bottom.push_back(c.proj->head({p.x, p.y + t / 2, p.z}));
        }
        std::vector<cv::Point2d> poly = smooth(top, false, 4);
        auto low = smooth(bottom, false, 4);
        poly.insert(poly.end(), low.rbegin(), low.rend());
        c.fill(poly, safe_colour(scaled(st.brow_colour, shade_at(c, top[2]))));
    }
}

void draw_nose(Canvas& c, const Landmarks& lm) {
    const FaceStyle& st = *c.style;
    const double lit = shade_at(c, c.proj->head(lm[30]));
    const Rgb line = scaled(st.skin, 0.74 * lit);
    // The ridge shadow on the side away from the light.
    const double side = std::cos(st.light_angle) >= 0 ? 1 : -1;
    c.line(smooth({c.proj->head({side * 0.09, 0.12, lm[28].z - 0.05}),
                   c.proj->head({side * 0.1, st.nose_length * 0.7, lm[29].z - 0.04}),
                   c.proj->head(lm[side > 0 ? 35 : 31])},
                  false, 4),
           scaled(st.skin, 0.86 * lit), 0.035);
    std::vector<cv::Point2d> base;
    for (int i = 31; i <= 35; ++i)
        base.push_back(c.proj->head(lm[i]));
    c.line(smooth(base, false, 4), line, 0.022);
    for (int s = -1; s <= 1; s += 2) {
        const cv::Point2d n =
            c.proj->head({s * st.nose_width * 0.45, st.nose_length + 0.045, lm[32].z - 0.02});
        c.disc(n, 0.035, scaled(st.skin, 0.45 * lit));
    }
    c.disc(c.proj->head({-0.04, st.nose_length - 0.04, lm[30].z}), 0.04,
           scaled(st.skin, std::min(1.12, 1.12 * lit)));
}

void draw_mouth(Canvas& c, const Landmarks& lm) {
    const FaceStyle& st = *c.style;
    std::vector<cv::Point2d> outer, inner, upper_inner;
    for (int i = 48; i <= 59; ++i)
        outer.push_back(c.proj->head(lm[i]));
    for (int i = 60; i <= 67; ++i)
        inner.push_back(c.proj->head(lm[i]));
    const double lit = shade_at(c, outer[9]);
    c.fill(smooth(outer, true, 6), scaled(st.lips, lit));
    // Upper lip a shade darker: outer upper edge then inner upper edge back.
    std::vector<cv::Point2d> up(outer.begin(), outer.begin() + 7);
    for (int i = 4; i >= 0; --i)
        up.push_back(inner[i]);
    c.fill(smooth(up, true, 5), scaled(st.lips, 0.88 * lit));
    // The lip line first: where the mouth is open the interior covers it.
    for (int i = 0; i <= 4; ++i)
        upper_inner.push_back(inner[i]);
    c.line(smooth(upper_inner, false, 5), scaled(st.lips, 0.55 * lit), 0.014);
    const double gap = cv::norm(inner[6] - inner[2]);
    if (gap > 0.2 / c.k) {
        const auto hole = smooth(inner, true, 6);
        c.fill(hole, kMouthDark);
        clipped(c, hole, [&] {
            // Upper teeth: a band whose height is a fixed share of the opening.
            std::vector<cv::Point2d> teeth(inner.begin(), inner.begin() + 5);
            for (int i = 4; i >= 0; --i)
                teeth.push_back(inner[i] + cv::Point2d(0, 0.15 * gap));
            c.fill(smooth(teeth, true, 4), kTeeth);
            const cv::Point2d tongue = inner[6] + cv::Point2d(0, -0.12 * gap);
            cv::ellipse(c.img, c.fixed(tongue),
                        cv::Size(static_cast<int>(0.45 * cv::norm(inner[4] - inner[0]) * c.k *
                                                  (1 << kShift)),
                                 static_cast<int>(0.3 * gap * c.k * (1 << kShift))),
                        0, 0, 360, cv::Scalar(kTongue[0], kTongue[1], kTongue[2]), cv::FILLED,
                        cv::LINE_AA, kShift);
        });
    }
}

void draw_front_hair(Canvas& c) {
    const FaceStyle& st = *c.style;
    if (st.hair == HairStyle::Bald) return;
    const double w = st.face_width, h = st.hairline;
    auto pts = hair_outer(st, 0.12);
    // The hairline from the right temple to the left one, lower on the fringe side.
    const std::vector<cv::Point3d> line = {{w * 0.99, 0.02, 0},         {w * 0.9, -0.35, 0.2},
                                           {w * 0.55, -h * 0.92, 0.5},  {0.05, -h, 0.6},
                                           {-w * 0.55, -h * 0.85, 0.5}, {-w * 0.9, -0.3, 0.2},
                                           {-w * 0.99, 0.02, 0}};
    auto front = c.project(pts);
    auto hairline = smooth(c.project(line), false, 5);
    front.insert(front.end(), hairline.rbegin(), hairline.rend());  // back from left to right
    c.fill(front, st.hair_colour);
    if (st.hair == HairStyle::Curly) {
        const auto bumps = hair_outer(st, 0.05);
        for (size_t i = 0; i < bumps.size(); i += 2)
            c.disc(c.proj->head(bumps[i]), 0.13 + 0.05 * (i % 3 == 0), st.hair_colour);
    }
}

void draw_glasses(Canvas& c) {
    const FaceStyle& st = *c.style;
    if (!st.glasses) return;
    const double rx = st.eye_size * st.glasses_size, ry = rx * 0.78, e = st.eye_spacing;
    for (int s = -1; s <= 1; s += 2) {
        const double z = surface_z(st, s * e, 0) + 0.15;
        c.line(c.project(arc(s * e, 0.0, rx, ry, 0, 2 * kPi, 32, z)), st.glasses_colour, 0.035,
               true);
        c.line(c.project({{s * (e + rx), -0.03, z}, {s * st.face_width * 0.98, 0.0, 0}}),
               st.glasses_colour, 0.03);
    }
    const double z = surface_z(st, 0, 0) + 0.15;
    c.line(smooth(c.project({{-(e - rx), -0.03, z}, {0, -0.07, z}, {e - rx, -0.03, z}}), false, 4),
           st.glasses_colour, 0.03);
}

}  // namespace

FaceRenderer::FaceRenderer(FaceStyle style, int size) : style_(style), size_(size) {
    if (size < 32 || size > 2048) throw Error("synthetic face size must be 32..2048 pixels");
    supersample_ = size <= 256 ? 4 : 2;
    background_ = make_background(style_, size_, supersample_);
}

FaceRenderer::~FaceRenderer() = default;

Keypoints FaceRenderer::keypoints(const FaceState& state) const {
    const Projector proj(style_, state, size_);
    const Landmarks lm = head_landmarks(style_, state);
    Keypoints out;
    for (int i = 0; i < 68; ++i) {
        const cv::Point2d p = proj.head(lm[i]);
        out[i] = cv::Point2f(static_cast<float>(p.x), static_cast<float>(p.y));
    }
    return out;
}

FaceFrame FaceRenderer::draw(const FaceState& state) {
    const Projector proj(style_, state, size_);
    const Landmarks lm = head_landmarks(style_, state);
    Canvas c;
    c.img = background_.clone();
    c.k = supersample_;
    c.proj = &proj;
    c.style = &style_;
    draw_back_hair(c);
    const auto neck = draw_body(c);
    draw_ears(c);
    const auto outline = face_outline(c, lm);
    // A shadow under the jaw, on the neck only.
    std::vector<cv::Point2d> shadow;
    for (const auto& q : outline)
        shadow.push_back(q + cv::Point2d(0, 0.12 * proj.s));
    clipped(c, neck, [&] { c.fill(shadow, scaled(style_.skin, 0.7)); });
    c.fill(outline, style_.skin);
    shade_skin(c, outline, size_);
    draw_nose(c, lm);
    draw_eye(c, lm, 36);
    draw_eye(c, lm, 42);
    draw_brows(c, lm);
    draw_mouth(c, lm);
    draw_front_hair(c);
    draw_glasses(c);

    FaceFrame frame;
    cv::resize(c.img, frame.rgb, cv::Size(size_, size_), 0, 0, cv::INTER_AREA);
    frame.keypoints = keypoints(state);
    return frame;
}

}  // namespace loopy::synth
