#include "core/system.h"

#include "model/cpu_dispatch.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <malloc.h>
#include <torch/torch.h>
#include <torch/version.h>
#ifdef LOOPY_WITH_CUDA  // set by CMake when LibTorch links c10_cuda
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "loopy/version.h"

namespace loopy {

namespace {

// OpenBLAS's own thread pool, looked up at run time (absent with MKL or the reference BLAS).
using BlasSetThreads = void (*)(int);
using BlasGetThreads = int (*)();
BlasSetThreads blas_setter() {
    return reinterpret_cast<BlasSetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
}
BlasGetThreads blas_getter() {  // looked up once: model/cpu_linear.cpp asks on every layer
    static const auto getter =
        reinterpret_cast<BlasGetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    return getter;
}

// OpenBLAS threads while the engine runs. LibTorch parallelises with OpenMP; OpenBLAS (Debian's
// pthread build) has a second pool, and the two spin against each other: with 2 of each on
// this 2-core machine the demo model's denoising step took 517 ms instead of 168 ms with
// OpenBLAS at 1 (matrix products 219 ms -> 52 ms); a random sd15 at 64 px 14.2 s -> 10.5 s.
// LOOPY_BLAS_THREADS overrides it for machines where big products gain more than that costs.
int engine_blas_threads() {
    if (const char* env = std::getenv("LOOPY_BLAS_THREADS")) {
        const int n = std::atoi(env);
        if (n > 0) return n;
    }
    return 1;
}

}  // namespace

void reuse_freed_memory() {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 256 << 20);  // a fixed threshold also stops glibc adapting it
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
}

int set_num_threads(int n) {
    if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    at::set_num_threads(n);
    set_blas_threads(engine_blas_threads());
    return at::get_num_threads();
}

int blas_threads() {
    const auto get = blas_getter();
    return get ? get() : 0;
}

int set_blas_threads(int n) {
    const int before = blas_threads();
    if (const auto set = blas_setter(); set && n > 0) set(n);
    return before;
}

namespace {

// OpenBLAS picks its kernels by CPU model at load time and falls back to an older family's for
// CPUs newer than its release: Debian's 0.3.21 ran its AVX2 ("Haswell") kernel on a 2-core AMD
// EPYC (Zen 5) VM, where OPENBLAS_CORETYPE=SkylakeX doubled the matmul figure (209 -> 392
// GFLOP/s; bench/results/README.md, session 20). Says which kernel runs, and so what "% of
// matmul" is measured against.
std::string openblas_kernel_note() {
    using CoreName = char* (*)();
    const auto core_name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
    const char* name = core_name ? core_name() : nullptr;
    if (!name) return {};
    const std::string core = name;
    std::string note = " (OpenBLAS kernel " + core + ")";
    // OpenBLAS's names for its AVX-512 kernels (openblas_get_corename; 0.3.21 has the first two).
    const bool avx512_kernel =
        core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids";
    if (!avx512_kernel && model::cpu_has_avx512f())
        note +=
            "  [the CPU has AVX-512: OPENBLAS_CORETYPE=SkylakeX selects OpenBLAS's AVX-512 kernel]";
    return note;
}

// Debian's LibTorch links the generic libblas.so.3, which the alternatives system points to
// OpenBLAS (fast) or the reference BLAS (~45x slower). Report the real file.
std::string loaded_blas() {
    // Touch BLAS so the library is certainly loaded.
    (void)torch::mm(torch::ones({2, 2}), torch::ones({2, 2}));
    std::ifstream maps("/proc/self/maps");
    std::set<std::string> found;
    std::string line;
    while (std::getline(maps, line)) {
        const auto slash = line.find('/');
        if (slash == std::string::npos) continue;
        const std::string path = line.substr(slash);
        const std::string name = std::filesystem::path(path).filename().string();
        const bool cpu_blas = name.find("blas") != std::string::npos &&
                              name.find("cublas") == std::string::npos;  // cuBLAS: the GPU's
        if (cpu_blas || name.find("mkl_rt") != std::string::npos) {
            std::error_code ec;
            const auto real = std::filesystem::canonical(path, ec);
            found.insert(ec ? path : real.string());
        }
    }
    std::string out;
    for (const auto& f : found)
        out += (out.empty() ? "" : ", ") + f;
    if (out.empty()) return "none found (statically linked or MKL)";
    if (out.find("openblas") == std::string::npos && out.find("mkl") == std::string::npos)
        out += "  [reference BLAS: install libopenblas0-pthread for ~45x faster matmul]";
    return out + openblas_kernel_note();
}

}  // namespace

// Both ask the CUDA allocator, which throws until CUDA has started: then there is nothing to say.
GpuMemoryPeak gpu_memory_peak(int device) {
    GpuMemoryPeak peak;
#ifdef LOOPY_WITH_CUDA
    try {
        const auto stats =
            c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
        peak.allocated = stats.allocated_bytes[0].peak;  // [0]: all pools together (AGGREGATE)
        peak.reserved = stats.reserved_bytes[0].peak;
    } catch (const c10::Error&) {
    }
#else
    (void)device;
#endif
    return peak;
}

void reset_gpu_memory_peak(int device) {
#ifdef LOOPY_WITH_CUDA
    try {
        c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
    } catch (const c10::Error&) {
    }
#else
    (void)device;
#endif
}

SystemInfo system_info() {
    SystemInfo info;
    info.loopy_version = LOOPY_VERSION_STRING;
    info.torch_version = TORCH_VERSION;
    info.cuda_available = torch::cuda::is_available();
    info.cuda_devices = info.cuda_available ? static_cast<int>(torch::cuda::device_count()) : 0;
#ifdef LOOPY_WITH_CUDA
    if (info.cuda_available) info.gpu_name = at::cuda::getDeviceProperties(0)->name;
#endif
    info.threads = at::get_num_threads();
    info.blas_threads = blas_threads();
    info.hardware_cores = static_cast<int>(std::thread::hardware_concurrency());
    info.blas = loaded_blas();
    const std::string config = at::show_config();
    const auto pos = config.find("CPU capability usage: ");
    if (pos != std::string::npos) {
        const auto start = pos + std::string("CPU capability usage: ").size();
        info.cpu_capability = config.substr(start, config.find('\n', start) - start);
    }
    return info;
}

std::string describe(const SystemInfo& info) {
    std::ostringstream os;
    os << "Loopy Studio   " << info.loopy_version << "\n"
       << "LibTorch       " << info.torch_version << "\n"
       << "CUDA           "
       << (info.cuda_available ? "available, " + std::to_string(info.cuda_devices) + " device(s)"
                               : std::string("not available"))
       << (info.gpu_name.empty() ? "" : ", the first: " + info.gpu_name) << "\n"
       << "Threads        " << info.threads << " intra-op (" << info.hardware_cores
       << " hardware threads), OpenBLAS pool " << info.blas_threads << "\n"
       << "CPU kernels    " << (info.cpu_capability.empty() ? "?" : info.cpu_capability)
       << " (LibTorch's); the engine's own loops "
       << (model::cpu_avx512_active()  ? "AVX-512"
           : model::cpu_has_avx2_fma() ? "AVX2"
                                       : "portable")
       << "\n"
       << "BLAS           " << info.blas << "\n";
    return os.str();
}

}  // namespace loopy
