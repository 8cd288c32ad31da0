#include "core/decode_worker.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace loopy {
namespace {

// LibTorch's CPU threads for the calling thread only. LibTorch sets each thread's OpenMP count up
// lazily on its first parallel op (from the global count), which would undo an earlier change:
// that set-up runs first. Without OpenMP the count is global and left alone.
void set_this_threads_intra_op_threads(int n) {
    if (n <= 0) return;
    (void)at::get_num_threads();
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

}  // namespace

DecodeWorker::DecodeWorker(Session& session, FrameCallback on_frame, int threads)
    : session_(session),
      on_frame_(std::move(on_frame)),
      threads_(threads),
      thread_([this] { run(); }) {}

DecodeWorker::~DecodeWorker() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        closing_ = true;
        waiting_.reset();
    }
    changed_.notify_all();
    thread_.join();
}

void DecodeWorker::rethrow_locked() {
    if (error_) std::rethrow_exception(error_);
}

void DecodeWorker::submit(DenoisedClip clip) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !waiting_ || error_; });
    rethrow_locked();
    waiting_ = std::move(clip);
    lock.unlock();
    changed_.notify_all();
}

void DecodeWorker::finish() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return (!waiting_ && !busy_) || error_; });
    rethrow_locked();
}

std::int64_t DecodeWorker::frames_emitted() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return frames_;
}

void DecodeWorker::run() {
    set_this_threads_intra_op_threads(threads_);
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
        changed_.wait(lock, [&] { return closing_ || waiting_; });
        if (closing_) return;
        auto clip = std::move(*waiting_);
        waiting_.reset();
        busy_ = true;
        lock.unlock();
        changed_.notify_all();     // a submit() waiting for room
        std::int64_t emitted = 0;  // delivered, also when a later frame fails
        std::exception_ptr error;
        try {
            session_.decode_clip(clip, [&](const Frame& frame) {
                if (on_frame_) on_frame_(frame);
                ++emitted;
            });
        } catch (...) {
            error = std::current_exception();
        }
        lock.lock();
        busy_ = false;
        frames_ += emitted;
        if (error && !error_) {
            error_ = error;
            waiting_.reset();  // a later clip would have a gap before it
        }
        changed_.notify_all();
    }
}

}  // namespace loopy
