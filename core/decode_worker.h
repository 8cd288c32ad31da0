#pragma once
// Decodes a Session's denoised clips on a thread of its own, so that clip n's frames are made
// while clip n+1 is denoised. That pays only where the denoiser leaves cores idle: on the 2-core
// CPU it cost ~4 % of the live frames/s (docs/architecture.md), so the live loop uses it only when
// asked (LiveOptions::overlap_decode).
//
//   DecodeWorker decoder(session, on_frame);
//   while (auto clip = session.denoise_clip()) decoder.submit(std::move(*clip));
//   decoder.finish();
//
// The queue holds one clip: submit() waits while one is already waiting, and nothing is dropped
// (its latents are paid for; a live caller drops audio before denoising instead). Frames reach
// on_frame on the worker thread, in order, one at a time.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "core/engine.h"

namespace loopy {

class DecodeWorker {
  public:
    // threads: LibTorch intra-op threads of the worker thread alone (OpenMP keeps the count per
    // thread); 0 keeps the engine's count. 1 leaves the other cores to the denoiser.
    DecodeWorker(Session& session, FrameCallback on_frame, int threads = 1);
    ~DecodeWorker();  // discards clips still waiting; waits for the one being decoded
    DecodeWorker(const DecodeWorker&) = delete;
    DecodeWorker& operator=(const DecodeWorker&) = delete;

    // Queues a clip, waiting while another one waits. Rethrows the error of an earlier clip
    // (on_frame's included), and then queues nothing more.
    void submit(DenoisedClip clip);
    // Returns once every queued clip is decoded; rethrows the first error.
    void finish();
    std::int64_t frames_emitted() const;

  private:
    void run();
    void rethrow_locked();

    Session& session_;
    FrameCallback on_frame_;
    int threads_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::optional<DenoisedClip> waiting_;  // the queue: one clip
    bool busy_ = false;                    // the worker holds a clip
    bool closing_ = false;
    std::exception_ptr error_;
    std::int64_t frames_ = 0;
    std::thread thread_;  // last: starts after everything it reads
};

}  // namespace loopy
