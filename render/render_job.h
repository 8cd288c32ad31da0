#pragma once
// Offline rendering: portrait + audio file -> MP4 (and optionally PNG frames) with a Loopy model.
// What `loopy render` and the GUI's export run. Frames are written as they are generated, so a
// 10-minute file needs no more memory than a short one.
//
// Nothing is left behind on failure: the MP4 is written under a temporary name and renamed at the
// end; an error, a cancel or a kill leaves no half-written output.
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/engine.h"
#include "render/portrait.h"

namespace loopy::render {

struct RenderJob {
    std::string portrait;  // image file
    std::string audio;     // any FFmpeg-readable file with an audio stream
    std::string out;       // .mp4
    GenerationSettings settings;
    std::optional<CropRect> crop;  // manual square crop (source pixels)
    bool overwrite = false;        // replace an existing `out`
    std::string frames_dir;        // also write frame_000000.png ... here ("" : none)
    int crf = 18;
    std::string x264_preset = "medium";
};

struct RenderResult {
    std::int64_t frames = 0;
    double video_seconds = 0;
    double wall_seconds = 0;
    double real_time_factor() const { return wall_seconds > 0 ? video_seconds / wall_seconds : 0; }
    bool face_found = false;
    SessionStats stats;
};

struct RenderCallbacks {
    ProgressCallback on_progress;
    FrameCallback on_frame;                     // after the frame was written
    const std::atomic<bool>* cancel = nullptr;  // checked between DDIM steps and clips
};

// Checks that `out` may be written (not existing unless overwrite; its folder exists and is
// writable) before any heavy work. Throws loopy::Error.
void check_output_path(const std::string& out, bool overwrite);

// Throws loopy::Error (Cancelled after a cancel) and leaves no output file in that case.
RenderResult render_video(const std::shared_ptr<Model>& model, const RenderJob& job,
                          const RenderCallbacks& callbacks = {});

}  // namespace loopy::render
