#pragma once
// Data-parallel training over several processes with PyTorch's c10d process groups (Gloo on the
// CPU, NCCL on CUDA when LibTorch has it). The processes meet through a c10d::TCPStore that rank 0
// serves at MASTER_ADDR:MASTER_PORT, the variables torchrun sets (torchrun itself is not needed).
// See docs/training.md, "Distributed training".
//
// c10d's headers stay in distributed.cpp: Gloo's need USE_C10D_GLOO and the gloo headers, which
// nothing else should have to know about.
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace loopy::model {

struct DistributedOptions {
    int rank = 0;
    int world_size = 1;
    std::string master_addr = "127.0.0.1";
    int master_port = 29500;
    std::string backend = "gloo";  // "gloo" (CPU tensors) or "nccl" (CUDA)
    int local_rank = 0;            // NCCL: this process's CUDA device
    // Rendezvous and every collective give up after this long (a missing or dead peer).
    std::chrono::milliseconds timeout = std::chrono::minutes(5);

    bool distributed() const { return world_size > 1; }
};

// RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT and LOCAL_RANK as torchrun sets them. No WORLD_SIZE
// (or 1) means a single process. Throws loopy::Error on malformed or inconsistent values.
DistributedOptions distributed_options_from_environment();

// Whether this LibTorch build was compiled with each backend.
bool gloo_available();
bool nccl_available();

// One process's membership in a group of world_size processes. Every collective must be called by
// every rank in the same order (as with any c10d process group).
class ProcessGroup {
  public:
    // Rendezvous: rank 0 serves the TCPStore, the others connect to it, then the backend connects
    // every pair. Throws loopy::Error (port in use, a peer missing after the timeout, a backend
    // this build lacks).
    explicit ProcessGroup(const DistributedOptions& options);
    ~ProcessGroup();
    ProcessGroup(const ProcessGroup&) = delete;
    ProcessGroup& operator=(const ProcessGroup&) = delete;

    int rank() const { return options_.rank; }
    int world_size() const { return options_.world_size; }
    bool is_main() const { return options_.rank == 0; }
    const DistributedOptions& options() const { return options_; }

    // In place, element-wise over all ranks. Tensors of one dtype travel as one flat buffer (one
    // collective per dtype rather than per tensor).
    void all_reduce_sum(std::vector<torch::Tensor>& tensors);
    void all_reduce_mean(std::vector<torch::Tensor>& tensors);  // floating-point tensors only
    // Overwrites every rank's tensors with rank `root`'s (same shapes and dtypes everywhere).
    void broadcast(std::vector<torch::Tensor>& tensors, int root = 0);
    void barrier();

  private:
    struct Backend;
    DistributedOptions options_;
    std::unique_ptr<Backend> backend_;
};

}  // namespace loopy::model
