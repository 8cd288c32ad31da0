#pragma once
// The ReferenceNet's motion features, computed once per generated frame.
//
// With uniform sampling every motion frame of the temporal segment module is one frame of the
// history, and a frame stays in the history for 124 frames: later clips sample it again at
// other motion positions. The ReferenceNet sees each motion frame alone (timestep 0, the null
// context, no temporal layers), so a frame's features depend on that frame only. Encoding just
// the frames not seen before and assembling the bank from the stored features gives what
// ReferenceNet::encode_motion gives for the whole set (up to BLAS's order of summation).
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <vector>

#include "model/loopy_unet.h"
#include "model/temporal_segment.h"

namespace loopy::model {

// Which generated frame each motion frame is for the clip starting at `first_frame` (frames
// counted from 0) when every clip is pushed to the MotionHistory whole, so that history index h
// holds frame first_frame - H + h; ids below 0 are frames that do not exist (masked). Empty
// unless the sampling is uniform: a mean or a random pick is not one frame.
std::vector<int64_t> motion_frame_ids(const TemporalSegmentOptions& options, int64_t first_frame);

class MotionFeatureCache {
  public:
    // The motion bank of one video: latents [1, M, C, h, w], mask bool [1, M] (true where the
    // frame exists), frame_ids [M]: which generated frame each motion frame is
    // (motion_frame_ids; read only where the mask is true).
    MotionBank encode(ReferenceNetImpl& net, const torch::Tensor& latents,
                      const torch::Tensor& mask, const std::vector<int64_t>& frame_ids);

    // Forgets the frames no later clip samples, for clips of `clip_frames` frames from
    // `next_first_frame` on: a frame at history index p then is sampled again only where a
    // source index c <= p has p - c a multiple of clip_frames (39 of the 124 for the defaults
    // and 12-frame clips). What it keeps matters for large models: 24 MB a frame for SD 1.5 at
    // 512 px in half precision.
    void forget_unneeded(const TemporalSegmentOptions& options, int64_t next_first_frame,
                         int64_t clip_frames);

    int64_t stored_frames() const { return static_cast<int64_t>(frames_.size()); }
    // Frames run through the ReferenceNet so far (each once).
    int64_t encoded_frames() const { return encoded_; }

  private:
    std::map<int64_t, std::vector<torch::Tensor>> frames_;  // id -> per layer site [C, h, w]
    int64_t encoded_ = 0;
};

}  // namespace loopy::model
