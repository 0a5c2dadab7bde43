#pragma once
/// @file Set-up and configuration errors.

#include <stdexcept>
#include <string>

namespace ferry {

/// Thrown for set-up and configuration mistakes: a bad endpoint, an address in use, an unwritable data
/// directory. The message says what to change. Hot-path sends and receives never throw this; they return a
/// status instead.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ferry
