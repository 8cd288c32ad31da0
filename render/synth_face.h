#pragma once
// Procedurally drawn frontal portraits for the synthetic talking-face data (no Qt, no LibTorch).
//
// A FaceStyle (drawn from a seed) fixes who is drawn: face shape, skin, hair, eyes, brows, nose,
// lips, glasses, clothing, background and light. A FaceState fixes one frame: head pose, jaw,
// lips, blink and brows. draw() returns the RGB image together with the 68 iBUG 300-W keypoints
// computed from the very geometry that was drawn, so the keypoints are exact ground truth.
//
// The mouth interior is the only thing ever drawn in the colour range of is_mouth_interior(), so
// mouth opening can be measured from pixels (loopy::eval::mouth_opening). See
// docs/synthetic-data.md.
#include <array>
#include <cstdint>

#include <opencv2/core.hpp>

namespace loopy::synth {

// Mouth-interior colour range (RGB, 8 bit). A pixel is "mouth interior" when
//   90 <= R <= 170, G <= 45, 50 <= B <= 125, R - G >= 60 and B - G >= 30.
// Every other colour of the palette is kept out of it (see safe_colour() in synth_face.cpp).
bool is_mouth_interior(int r, int g, int b);

enum class HairStyle { Bald, Short, Long, Bun, Curly };
enum class BackgroundKind { Flat, Gradient, Noise };
const char* to_string(HairStyle style);
const char* to_string(BackgroundKind kind);

using Rgb = cv::Vec3b;  // R, G, B

// Who is drawn. Lengths are in head units: the face's half-width at the cheeks is about 1 and the
// eye line is y = 0 (y grows downward, x to the image right).
struct FaceStyle {
    double face_width = 0.95;      // half-width at the cheeks
    double chin_y = 1.55;          // chin below the eye line
    double jaw_squareness = 0.4;   // 0: round jaw .. 1: square jaw
    double chin_taper = 0.15;      // narrowing toward the chin
    double forehead = 1.2;         // top of the skull above the eye line
    double head_scale = 1.0;       // overall size in the frame
    double eye_spacing = 0.42;     // eye centre distance from the midline
    double eye_size = 0.19;        // eye half-width
    double brow_height = 0.32;     // brow above the eye line
    double brow_thickness = 0.06;  // brow thickness
    double brow_arch = 0.05;
    double nose_length = 0.56;  // nose tip below the eye line
    double nose_width = 0.2;
    double mouth_y = 0.92;  // mouth centre below the eye line
    double mouth_width = 0.37;
    double lip_thickness = 0.09;
    HairStyle hair = HairStyle::Short;
    double hair_volume = 0.1;  // hair thickness beyond the skull
    double hairline = 0.8;     // hairline height above the eye line
    bool glasses = false;
    double glasses_size = 1.4;  // lens radius relative to the eye half-width
    double shoulder_width = 2.6;
    BackgroundKind background = BackgroundKind::Gradient;
    double light_angle = 0.0;     // radians; the side the light comes from (0: image left)
    double light_strength = 0.2;  // 0 flat .. 0.35 strongly lit from one side
    std::uint64_t texture_seed = 0;

    Rgb skin{220, 175, 145};
    Rgb hair_colour{60, 50, 45};
    Rgb brow_colour{55, 45, 40};
    Rgb iris{90, 65, 50};
    Rgb lips{185, 100, 105};
    Rgb glasses_colour{40, 40, 45};
    Rgb clothing{70, 90, 130};
    Rgb background_a{150, 160, 170};
    Rgb background_b{110, 120, 135};
};

// A style drawn from `seed`: the same seed gives the same style everywhere.
FaceStyle random_face_style(std::uint64_t seed);

// One frame's expression and pose.
struct FaceState {
    double yaw = 0, pitch = 0, roll = 0;  // degrees; yaw > 0 turns the face toward image right,
                                          // pitch > 0 lifts the chin, roll > 0 is clockwise
    double tx = 0, ty = 0;                // head translation, fraction of the image size
    double scale = 1.0;                   // head size multiplier
    double jaw_open = 0;                  // 0 closed .. 1 wide open
    double lip_width = 0;                 // 0 neutral .. 1 spread (as in "ee")
    double lip_round = 0;                 // 0 neutral .. 1 rounded (as in "oo")
    double blink = 0;                     // 0 open .. 1 closed
    double brow_raise = 0;                // 0 rest .. 1 raised
};

using Keypoints = std::array<cv::Point2f, 68>;  // iBUG 300-W order, image pixels

struct FaceFrame {
    cv::Mat rgb;  // CV_8UC3, RGB order, size x size
    Keypoints keypoints;
};

// Draws frames of one style at one size; caches what does not change between frames (the
// background). Not thread-safe; use one per thread.
class FaceRenderer {
  public:
    FaceRenderer(FaceStyle style, int size);
    ~FaceRenderer();
    FaceRenderer(const FaceRenderer&) = delete;
    FaceRenderer& operator=(const FaceRenderer&) = delete;

    FaceFrame draw(const FaceState& state);
    Keypoints keypoints(const FaceState& state) const;
    const FaceStyle& style() const { return style_; }
    int size() const { return size_; }

  private:
    FaceStyle style_;
    int size_;
    int supersample_;
    cv::Mat background_;  // at the drawing scale
};

}  // namespace loopy::synth
