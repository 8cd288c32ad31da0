#pragma once
// The engine reports every failure as a loopy::Error; it never exits the process.
#include <stdexcept>
#include <string>

namespace loopy {

class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

}  // namespace loopy
