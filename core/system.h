#pragma once
// Threading and a description of the machine the engine runs on.
#include <cstdint>
#include <string>

namespace loopy {

// Sets LibTorch's intra-op thread count; n <= 0 means "all cores". Returns the count in effect.
// LibTorch's own default was 1 on a 2-core machine, so the engine always sets it.
// OpenBLAS's own pool is set to 1 thread (LOOPY_BLAS_THREADS overrides it): see system.cpp.
int set_num_threads(int n);

// OpenBLAS's thread count (0 when another BLAS is loaded); set_blas_threads returns the old one.
int set_blas_threads(int n);
int blas_threads();

// Keeps freed memory in the heap for the next tensor (glibc: fixed mmap and trim thresholds).
// With the defaults every op's output above the adaptive mmap threshold came fresh from the
// kernel (page faults, zeroing) and went back on free: half of a 128 px denoising step.
void reuse_freed_memory();

struct SystemInfo {
    std::string loopy_version;
    std::string torch_version;
    bool cuda_available = false;
    int cuda_devices = 0;
    std::string gpu_name;    // device 0's, when this LibTorch has CUDA
    int threads = 0;         // intra-op threads in effect
    int blas_threads = 0;    // OpenBLAS's own pool (0: another BLAS)
    int hardware_cores = 0;  // std::thread::hardware_concurrency
    std::string blas;        // the BLAS library actually loaded (from /proc/self/maps)
    std::string cpu_capability;
};

// The CUDA caching allocator's peaks on one GPU since the last reset, in bytes: what tensors held
// and what the allocator took from the device. -1 when this LibTorch has no CUDA.
struct GpuMemoryPeak {
    std::int64_t allocated = -1;
    std::int64_t reserved = -1;
};
GpuMemoryPeak gpu_memory_peak(int device = 0);
void reset_gpu_memory_peak(int device = 0);

SystemInfo system_info();
std::string describe(const SystemInfo& info);

}  // namespace loopy
