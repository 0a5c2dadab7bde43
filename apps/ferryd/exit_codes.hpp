#pragma once
// ferryd's exit codes (docs/operations.md) and the start-up failure that carries one.

#include <string>

#include "ferry/error.hpp"

namespace ferry::ferryd {

enum exit_code : int {
  exit_ok = 0,
  exit_runtime = 1,
  exit_usage = 2,
  exit_data_dir = 3,
  exit_endpoint = 4,
  exit_locked = 5,
};

/// A start-up failure with the exit code it maps to.
class startup_error : public ferry::error {
 public:
  startup_error(int code, const std::string& what) : ferry::error(what), code_(code) {}
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

}  // namespace ferry::ferryd
