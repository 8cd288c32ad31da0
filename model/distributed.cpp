#include "model/distributed.h"

// c10d declares ProcessGroupGloo only with USE_C10D_GLOO, which LibTorch's CMake config does not
// export; the gloo headers (Debian: libgloo-dev) tell whether we can use it.
#if __has_include(<gloo/config.h>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#define LOOPY_HAVE_GLOO 1
#endif

// LibTorch 2.x defines USE_C10D_NCCL for every CUDA build, but pip's wheels carry no nccl.h.
#if defined(USE_C10D_NCCL) && __has_include(<nccl.h>)
#define LOOPY_HAVE_NCCL 1
#endif

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef LOOPY_HAVE_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef LOOPY_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cstdlib>
#include <map>
#include <utility>

#include "core/error.h"
#include "core/torch_compat.h"

namespace loopy::model {

namespace {

const char* env_or_null(const char* name) {
    const char* value = std::getenv(name);
    return value && *value ? value : nullptr;
}

int env_int(const char* name, int fallback) {
    const char* text = env_or_null(name);
    if (!text) return fallback;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (*end != '\0' || value < 0 || value > 1'000'000)
        throw Error(std::string("environment variable ") + name + "='" + text +
                    "' is not a non-negative integer");
    return static_cast<int>(value);
}

// c10::Error's what() carries a C++ backtrace; users need the message.
std::string message_of(const std::exception& e) {
    if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
    return e.what();
}

std::string where(const DistributedOptions& o) {
    return "rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size) + " (" +
           o.backend + ", master " + o.master_addr + ":" + std::to_string(o.master_port) + ")";
}

void validate(const DistributedOptions& o) {
    if (o.world_size < 1) throw Error("distributed: WORLD_SIZE must be at least 1");
    if (o.rank < 0 || o.rank >= o.world_size)
        throw Error("distributed: RANK " + std::to_string(o.rank) + " is outside 0.." +
                    std::to_string(o.world_size - 1));
    if (o.master_port <= 0 || o.master_port > 65535)
        throw Error("distributed: MASTER_PORT " + std::to_string(o.master_port) +
                    " is not a TCP port");
    if (o.timeout.count() <= 0) throw Error("distributed: the timeout must be positive");
    if (o.backend != "gloo" && o.backend != "nccl")
        throw Error("distributed: unknown backend '" + o.backend + "' (gloo or nccl)");
}

}  // namespace

DistributedOptions distributed_options_from_environment() {
    DistributedOptions o;
    o.world_size = env_int("WORLD_SIZE", 1);
    if (o.world_size <= 1) return o;
    if (!env_or_null("RANK") || !env_or_null("MASTER_ADDR") || !env_or_null("MASTER_PORT"))
        throw Error("distributed: WORLD_SIZE is " + std::to_string(o.world_size) +
                    " but RANK, MASTER_ADDR or MASTER_PORT is not set (torchrun sets all four)");
    o.rank = env_int("RANK", 0);
    o.master_addr = env_or_null("MASTER_ADDR");
    o.master_port = env_int("MASTER_PORT", 0);
    o.local_rank = env_int("LOCAL_RANK", 0);
    validate(o);
    return o;
}

bool gloo_available() {
#ifdef LOOPY_HAVE_GLOO
    return true;
#else
    return false;
#endif
}

bool nccl_available() {
#ifdef LOOPY_HAVE_NCCL
    return true;
#else
    return false;
#endif
}

// The c10d objects. ProcessGroupGloo and ProcessGroupNCCL are kept as their own types: their
// common base is c10d::ProcessGroup in LibTorch 1.13 but c10d::Backend in 2.x.
struct ProcessGroup::Backend {
    c10::intrusive_ptr<c10d::Store> store;
#ifdef LOOPY_HAVE_GLOO
    c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
#ifdef LOOPY_HAVE_NCCL
    c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
    torch::Device device = torch::kCPU;  // where buffers must be for the collectives

    // Runs `collective(group)` on whichever backend is up and waits for it to finish.
    template <class Collective>
    void run(Collective&& collective) {
#ifdef LOOPY_HAVE_GLOO
        if (gloo) return (void)collective(*gloo)->wait();
#endif
#ifdef LOOPY_HAVE_NCCL
        if (nccl) return (void)collective(*nccl)->wait();
#endif
        throw Error("distributed: no process group");
    }
};

namespace {

c10::intrusive_ptr<c10d::Store> rendezvous(const DistributedOptions& o) {
    c10d::TCPStoreOptions store;
    store.port = static_cast<std::uint16_t>(o.master_port);
    store.isServer = o.rank == 0;
    store.numWorkers = static_cast<std::size_t>(o.world_size);
    store.waitWorkers = true;  // the server returns once every rank has connected
    store.timeout = o.timeout;
#if LOOPY_TORCH_AT_LEAST(2, 4)
    // LibTorch 2.4 made the libuv backend the default, but not every build has libuv (Debian
    // trixie's 2.6 has not: every rendezvous failed). The classic backend serves a few processes.
    store.useLibUV = false;
#endif
    return c10::make_intrusive<c10d::TCPStore>(o.master_addr, store);
}

#ifdef LOOPY_HAVE_GLOO
bool is_loopback(const std::string& address) {
    return address == "localhost" || address.rfind("127.", 0) == 0 || address == "::1";
}

// The network device Gloo binds: GLOO_SOCKET_IFNAME as in PyTorch, the loopback device when the
// master is on this machine's loopback, else the address this machine's hostname resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const DistributedOptions& o) {
    if (const char* interface = env_or_null("GLOO_SOCKET_IFNAME"))
        return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
    if (is_loopback(o.master_addr))
        return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

}  // namespace

ProcessGroup::ProcessGroup(const DistributedOptions& options)
    : options_(options), backend_(std::make_unique<Backend>()) {
    validate(options_);
    if (options_.backend == "gloo" && !gloo_available())
        throw Error("distributed: this LibTorch build has no Gloo (its gloo headers are missing)");
    if (options_.backend == "nccl" && !nccl_available())
        throw Error(
            "distributed: this LibTorch build has no NCCL (a CUDA LibTorch built with NCCL is "
            "needed, with its nccl.h where the engine is compiled); use --backend gloo");
    try {
        backend_->store = rendezvous(options_);
#ifdef LOOPY_HAVE_GLOO
        if (options_.backend == "gloo") {
            auto gloo_options = c10d::ProcessGroupGloo::Options::create(options_.timeout);
            gloo_options->devices.push_back(gloo_device(options_));
            gloo_options->threads = 1;  // collectives run one at a time: one worker is enough
            backend_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
                backend_->store, options_.rank, options_.world_size, gloo_options);
        }
#endif
#ifdef LOOPY_HAVE_NCCL
        if (options_.backend == "nccl") {
            auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
            nccl_options->timeout = options_.timeout;
            backend_->device = torch::Device(torch::kCUDA, options_.local_rank);
            backend_->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
                backend_->store, options_.rank, options_.world_size, nccl_options);
        }
#endif
    } catch (const std::exception& e) {
        const auto seconds = std::to_string(options_.timeout.count() / 1000);
        throw Error("distributed rendezvous failed for " + where(options_) + " (waiting up to " +
                    seconds + " s for all " + std::to_string(options_.world_size) +
                    " processes): " + message_of(e));
    }
}

ProcessGroup::~ProcessGroup() = default;

namespace {

// Calls `collective(flat)` once per dtype on one contiguous buffer holding all tensors of that
// dtype, then copies the results back into the tensors.
template <class Collective>
void over_flat_buffers(std::vector<torch::Tensor>& tensors, const torch::Device& device,
                       Collective&& collective) {
    torch::NoGradGuard no_grad;
    std::map<c10::ScalarType, std::vector<size_t>> by_dtype;
    for (size_t i = 0; i < tensors.size(); ++i)
        by_dtype[tensors[i].scalar_type()].push_back(i);
    for (const auto& [dtype, indices] : by_dtype) {
        std::vector<torch::Tensor> parts;
        for (size_t i : indices)
            parts.push_back(tensors[i].reshape(-1).to(device));
        auto flat = torch::cat(parts);
        collective(flat);
        int64_t offset = 0;
        for (size_t i : indices) {
            auto& t = tensors[i];
            t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));
            offset += t.numel();
        }
    }
}

}  // namespace

void ProcessGroup::all_reduce_sum(std::vector<torch::Tensor>& tensors) {
    try {
        over_flat_buffers(tensors, backend_->device, [&](torch::Tensor& flat) {
            std::vector<at::Tensor> one = {flat};
            c10d::AllreduceOptions o;
            o.reduceOp = c10d::ReduceOp::SUM;
            backend_->run([&](auto& group) { return group.allreduce(one, o); });
        });
    } catch (const loopy::Error&) {
        throw;
    } catch (const std::exception& e) {
        throw Error("distributed all-reduce failed on " + where(options_) + ": " + message_of(e));
    }
}

void ProcessGroup::all_reduce_mean(std::vector<torch::Tensor>& tensors) {
    all_reduce_sum(tensors);
    torch::NoGradGuard no_grad;
    for (auto& t : tensors)
        t.div_(options_.world_size);
}

void ProcessGroup::broadcast(std::vector<torch::Tensor>& tensors, int root) {
    try {
        over_flat_buffers(tensors, backend_->device, [&](torch::Tensor& flat) {
            std::vector<at::Tensor> one = {flat};
            c10d::BroadcastOptions o;
            o.rootRank = root;
            backend_->run([&](auto& group) { return group.broadcast(one, o); });
        });
    } catch (const loopy::Error&) {
        throw;
    } catch (const std::exception& e) {
        throw Error("distributed broadcast failed on " + where(options_) + ": " + message_of(e));
    }
}

void ProcessGroup::barrier() {
    try {
        backend_->run([&](auto& group) { return group.barrier(c10d::BarrierOptions()); });
    } catch (const loopy::Error&) {
        throw;
    } catch (const std::exception& e) {
        throw Error("distributed barrier failed on " + where(options_) + ": " + message_of(e));
    }
}

}  // namespace loopy::model
