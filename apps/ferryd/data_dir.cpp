// The data directory: checked, locked (flock on DIR/ferryd.lock) and probed for writes at start-up.
#include "data_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>

#include "detail/log.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;
using detail::logger;

data_dir_lock::data_dir_lock(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec))
    throw startup_error(exit_data_dir, fmt::format("data directory {} does not exist (create it first, e.g. "
                                                   "mkdir -p {})",
                                                   dir.string(), dir.string()));
  if (!fs::is_directory(dir, ec))
    throw startup_error(exit_data_dir, fmt::format("data directory {} is not a directory", dir.string()));
  const fs::path lock_path = dir / "ferryd.lock";
  fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw startup_error(exit_data_dir, fmt::format("data directory {} is not writable: cannot create {}: {}",
                                                   dir.string(), lock_path.string(), std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    throw startup_error(
        exit_locked, fmt::format("another ferryd (pid {}) is using data directory {}; stop it "
                                 "or pick another --data-dir",
                                 n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?", dir.string()));
  }
  // A full disk is no reason not to start: consumers draining the backlog is what frees space, and
  // producers are refused with disk_full meanwhile. Anything else that stops a write is.
  auto fatal = [](int err) { return err != ENOSPC && err != EDQUOT; };
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 ||
      ::pwrite(fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    if (fatal(errno))
      throw startup_error(exit_data_dir, fmt::format("data directory {} is not writable: {}", dir.string(),
                                                     std::strerror(errno)));
  }
  // A probe write: catches a directory we may lock but not fill (a read-only mount).
  const fs::path probe = dir / ".ferryd-probe";
  const int pfd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (pfd < 0 || ::write(pfd, "ok", 2) != 2) {
    const int err = errno;
    if (pfd >= 0) ::close(pfd);
    ::unlink(probe.c_str());
    if (fatal(err))
      throw startup_error(exit_data_dir, fmt::format("data directory {} is not writable: {}", dir.string(),
                                                     std::strerror(err)));
    logger().warn(
        "data directory {} is full: starting anyway; producers are refused (disk_full) until "
        "consumers or an operator free space",
        dir.string());
    return;
  }
  ::close(pfd);
  ::unlink(probe.c_str());
}

data_dir_lock::~data_dir_lock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

}  // namespace ferry::ferryd
