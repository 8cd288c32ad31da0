#pragma once
// Counts LibTorch's operator calls and the engine's RECORD_FUNCTION scopes by name, on this thread
// and while it lives: for tests that check which path a computation took.
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace loopy::test {

class OperatorCalls {
  public:
    // with_inputs: also note each operator's widest first input (boxing every call's inputs
    // makes the run slower).
    explicit OperatorCalls(bool with_inputs = false) : previous_(active()) {
        active() = this;
        auto callback = at::RecordFunctionCallback(&OperatorCalls::record)
                            .needsInputs(with_inputs)
                            .scopes({at::RecordScope::FUNCTION});
        handle_ = at::addThreadLocalCallback(std::move(callback));
    }
    ~OperatorCalls() {
        at::removeCallback(handle_);
        active() = previous_;
    }
    OperatorCalls(const OperatorCalls&) = delete;
    OperatorCalls& operator=(const OperatorCalls&) = delete;

    int64_t count(const std::string& name) const {
        const auto it = calls_.find(name);
        return it == calls_.end() ? 0 : it->second;
    }
    // The largest size(0) of `name`'s first tensor input so far (with_inputs only).
    int64_t widest_first_input(const std::string& name) const {
        const auto it = widest_.find(name);
        return it == widest_.end() ? 0 : it->second;
    }
    void reset() {
        calls_.clear();
        widest_.clear();
    }

  private:
    static OperatorCalls*& active() {
        thread_local OperatorCalls* current = nullptr;
        return current;
    }
    static std::unique_ptr<at::ObserverContext> record(const at::RecordFunction& fn) {
        OperatorCalls* self = active();
        if (!self) return nullptr;
        const std::string name = fn.name();
        ++self->calls_[name];
        if (fn.needsInputs()) {
            const auto inputs = fn.inputs();
            if (!inputs.empty() && inputs[0].isTensor() && inputs[0].toTensor().dim() > 0) {
                auto& widest = self->widest_[name];
                widest = std::max(widest, inputs[0].toTensor().size(0));
            }
        }
        return nullptr;
    }

    OperatorCalls* previous_;
    at::CallbackHandle handle_ = 0;
    std::map<std::string, int64_t> calls_;
    std::map<std::string, int64_t> widest_;
};

}  // namespace loopy::test
