#pragma once
// Training data for `loopy train` (docs/training.md): clip folders in the synthetic data set's
// format (video.mp4 at 25 fps, audio.wav at 16 kHz, truth.json with per-frame keypoints) read into
// TrainClips (render/train_dataset.h holds them and makes the samples). FFmpeg; no Qt, no OpenCV.
#include <string>
#include <vector>

#include "render/train_dataset.h"

namespace loopy::render {

// The clip folders under `dir` (sub-folders holding video.mp4, audio.wav and truth.json), sorted
// by name. Throws loopy::Error when there are none.
std::vector<std::string> find_train_clips(const std::string& dir);

// Reads a clip folder; frames are resized (area when shrinking, bilinear when growing) to
// resolution x resolution.
TrainClip read_train_clip(const std::string& folder, int64_t resolution);

}  // namespace loopy::render
