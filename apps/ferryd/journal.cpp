#include "journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>

#include "ferry/error.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;

journal::journal(fs::path file) : file_(std::move(file)) {}

journal::~journal() {
  if (fd_ >= 0) {
    (void)flush();
    ::close(fd_);
  }
}

void journal::open_append() {
  fd_ = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) throw error(fmt::format("cannot open journal {}: {}", file_.string(), std::strerror(errno)));
  file_bytes_ = static_cast<std::uint64_t>(::lseek(fd_, 0, SEEK_END));
}

void journal::recover(recovery_report& report, const std::function<void(const journal_record&)>& visit) {
  if (fs::exists(file_)) {
    scan_file(file_, true, report, [&](std::string_view body, std::size_t offset, std::size_t) {
      const auto r = parse_journal(body);
      if (!r) {
        report.problems.push_back(
            fmt::format("{}: record at offset {} is not a journal record; skipped", file_.string(), offset));
        return;
      }
      visit(*r);
    });
  }
  const bool created = !fs::exists(file_);
  open_append();
  if (created) sync_directory(file_.parent_path());
}

int journal::flush() noexcept {
  std::size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      buffer_.erase(0, done);
      file_bytes_ += done;
      return err;
    }
    done += static_cast<std::size_t>(n);
  }
  file_bytes_ += done;
  buffer_.clear();
  return 0;
}

int journal::sync() noexcept {
  return ::fdatasync(fd_) == 0 ? 0 : errno;
}

void journal::rewrite(const std::string& snapshot) {
  const fs::path tmp = file_.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw error(fmt::format("cannot create {}: {}", tmp.string(), std::strerror(errno)));
  std::size_t done = 0;
  while (done < snapshot.size()) {
    const ssize_t n = ::write(fd, snapshot.data() + done, snapshot.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw error(fmt::format("cannot write {}: {}", tmp.string(), std::strerror(err)));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fdatasync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw error(fmt::format("cannot sync {}: {}", tmp.string(), std::strerror(err)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), file_.c_str()) != 0)
    throw error(fmt::format("cannot rename {}: {}", tmp.string(), std::strerror(errno)));
  sync_directory(file_.parent_path());
  if (fd_ >= 0) ::close(fd_);
  buffer_.clear();  // the snapshot already holds what was buffered
  open_append();
}

}  // namespace ferry::ferryd
