#pragma once
// The data directory's lock, held for the life of the process (flock on DIR/ferryd.lock).

#include <filesystem>

#include "exit_codes.hpp"

namespace ferry::ferryd {

/// Thread safety: constructed and destroyed by one thread.
class data_dir_lock {
 public:
  /// Checks the directory (exists, is a directory, writable) and takes the lock.
  /// Throws startup_error (exit_data_dir or exit_locked) with advice.
  explicit data_dir_lock(const std::filesystem::path& dir);
  ~data_dir_lock();
  data_dir_lock(const data_dir_lock&) = delete;
  data_dir_lock& operator=(const data_dir_lock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace ferry::ferryd
