#pragma once
// Small helpers shared by the tests.
#include <functional>
#include <string>

#include "core/error.h"

namespace loopy::test {

// The loopy::Error message `f` throws, or "" if it throws nothing.
inline std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const loopy::Error& e) {
        return e.what();
    }
    return {};
}

inline bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

}  // namespace loopy::test
