#include "file_io.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "ferry/error.hpp"

namespace ferry::storage {
namespace fs = std::filesystem;

namespace {
std::atomic<sync_hook> hook_{nullptr};

int hooked(int fd) noexcept {
  const sync_hook h = hook_.load(std::memory_order_acquire);
  return h == nullptr ? 0 : h(fd);
}
}  // namespace

void set_sync_hook(sync_hook hook) noexcept {
  hook_.store(hook, std::memory_order_release);
}

int sync_data(int fd) noexcept {
  if (const int err = hooked(fd); err != 0) return err;
  while (::fdatasync(fd) != 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

int try_sync_directory(const fs::path& dir) noexcept {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = hooked(fd);
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  ::close(fd);
  return err;
}

void sync_directory(const fs::path& dir) {
  if (const int err = try_sync_directory(dir); err != 0)
    throw error(fmt::format("cannot fsync directory {}: {}", dir.string(), errno_text(err)));
}

void create_directories_durably(const fs::path& dir) {
  // The directories that do not exist yet, outermost first.
  std::vector<fs::path> missing;
  std::error_code ec;
  for (fs::path p = dir; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    missing.push_back(p);
    if (p == p.parent_path()) break;
  }
  if (missing.empty()) return;
  fs::create_directories(dir, ec);
  if (ec) throw error(fmt::format("cannot create directory {}: {}", dir.string(), ec.message()));
  // Each new entry is made durable by syncing the directory that holds it, innermost first so a parent's
  // entry never outlives a child's; then the new directories themselves (their "." and "..").
  for (const auto& p : missing) sync_directory(p.parent_path().empty() ? fs::path(".") : p.parent_path());
  sync_directory(dir);
}

int write_all(int fd, const char* data, std::size_t size, std::uint64_t offset) noexcept {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return ENOSPC;
    done += static_cast<std::size_t>(n);
  }
  return 0;
}

int append_all(int fd, const char* data, std::size_t size, std::size_t& written) noexcept {
  written = 0;
  while (written < size) {
    const ssize_t n = ::write(fd, data + written, size - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return ENOSPC;
    written += static_cast<std::size_t>(n);
  }
  return 0;
}

long read_at(int fd, char* data, std::size_t size, std::uint64_t offset) noexcept {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  return static_cast<long>(done);
}

std::string errno_text(int err) {
  char buf[128];
  return ::strerror_r(err, buf, sizeof buf);
}

}  // namespace ferry::storage
