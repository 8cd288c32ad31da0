// libFuzzer entry: the parser must either accept an input or reject it with loopy::Error; any
// other exception, crash, leak or undefined behaviour is a finding.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    try {
        const auto header = loopy::safetensors::parse(data, size, "fuzz");
        // Accepted: every tensor's bytes must lie inside the input.
        for (const auto& t : header.tensors)
            if (header.data_start + t.end > size) __builtin_trap();
    } catch (const loopy::Error&) {
    }
    return 0;
}
