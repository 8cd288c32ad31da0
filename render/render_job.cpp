#include "render/render_job.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "audio/audio_decoder.h"
#include "core/error.h"
#include "core/log.h"
#include "render/png.h"
#include "render/video_writer.h"

namespace loopy::render {

namespace fs = std::filesystem;

void check_output_path(const std::string& out, bool overwrite) {
    if (out.empty()) throw Error("no output file given");
    const fs::path path(out);
    std::error_code ec;
    if (fs::exists(path, ec) && !overwrite)
        throw Error(out + ": the file exists (use --force to replace it)");
    if (fs::is_directory(path, ec)) throw Error(out + ": is a folder, not a file");
    const auto folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
    if (!fs::is_directory(folder, ec)) throw Error(out + ": the folder does not exist");
    if (::access(folder.c_str(), W_OK) != 0) throw Error(out + ": the folder is not writable");
}

namespace {

std::string frame_png_path(const std::string& dir, std::int64_t index) {
    char name[32];
    std::snprintf(name, sizeof name, "frame_%06lld.png", static_cast<long long>(index));
    return (fs::path(dir) / name).string();
}

}  // namespace

RenderResult render_video(const std::shared_ptr<Model>& model, const RenderJob& job,
                          const RenderCallbacks& callbacks) {
    const auto start = std::chrono::steady_clock::now();
    check_output_path(job.out, job.overwrite);
    if (!job.frames_dir.empty()) fs::create_directories(job.frames_dir);
    job.settings.validate();

    audio::AudioFileReader audio(job.audio, model::kAudioSampleRate);
    PortraitOptions portrait_options;
    portrait_options.size = model->resolution();
    portrait_options.crop = job.crop;
    const auto portrait = load_portrait(job.portrait, portrait_options);

    VideoWriterOptions video;
    video.width = video.height = model->resolution();
    video.fps = model::kVideoFps;
    video.crf = job.crf;
    video.preset = job.x264_preset;
    video.overwrite = job.overwrite;
    video.audio_sample_rate = model::kAudioSampleRate;
    VideoWriter writer(job.out, video);

    Session session(model, portrait.rgb.data(), portrait.width, portrait.height, job.settings);
    const FrameCallback on_frame = [&](const Frame& frame) {
        writer.add_frame(frame.rgb.data());
        if (!job.frames_dir.empty())
            write_png(frame_png_path(job.frames_dir, frame.index), frame.rgb.data(), frame.width,
                      frame.height);
        if (callbacks.on_frame) callbacks.on_frame(frame);
    };
    const ProgressCallback on_progress = [&](const Progress& progress) {
        if (callbacks.cancel && callbacks.cancel->load()) session.cancel();
        if (callbacks.on_progress) callbacks.on_progress(progress);
    };

    std::vector<float> chunk;
    std::int64_t samples = 0;
    while (audio.read(chunk, model::kAudioSampleRate)) {
        samples += static_cast<std::int64_t>(chunk.size());
        writer.add_audio(chunk.data(), chunk.size(), model::kAudioSampleRate);
        session.push_audio(chunk.data(), chunk.size());
        session.generate(on_frame, on_progress);
    }
    if (samples == 0) throw Error(job.audio + ": the audio stream holds no samples");
    session.end_audio();
    session.generate(on_frame, on_progress);
    writer.finish();

    RenderResult result;
    result.frames = writer.frame_count();
    result.video_seconds = static_cast<double>(result.frames) / model::kVideoFps;
    result.wall_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.face_found = portrait.face_found;
    result.stats = session.stats();
    if (audio.damaged())
        logger()->warn("{}: the audio is damaged; the video covers its readable part", job.audio);
    return result;
}

}  // namespace loopy::render
