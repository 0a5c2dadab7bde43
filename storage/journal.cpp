#include "journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>

#include "ferry/error.hpp"
#include "file_io.hpp"

namespace ferry::storage {
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
  if (fd_ < 0) throw error(fmt::format("cannot open journal {}: {}", file_.string(), errno_text(errno)));
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
  const int err = append_all(fd_, buffer_.data(), buffer_.size(), done);
  buffer_.erase(0, done);
  file_bytes_ += done;
  return err;
}

int journal::sync() noexcept {
  return sync_data(fd_);
}

void journal::rewrite(const std::string& snapshot) {
  const fs::path tmp = file_.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw error(fmt::format("cannot create {}: {}", tmp.string(), errno_text(errno)));
  std::size_t done = 0;
  while (done < snapshot.size()) {
    const ssize_t n = ::write(fd, snapshot.data() + done, snapshot.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw error(fmt::format("cannot write {}: {}", tmp.string(), errno_text(err)));
    }
    done += static_cast<std::size_t>(n);
  }
  if (const int err = sync_data(fd); err != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw error(fmt::format("cannot sync {}: {}", tmp.string(), errno_text(err)));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), file_.c_str()) != 0)
    throw error(fmt::format("cannot rename {}: {}", tmp.string(), errno_text(errno)));
  sync_directory(file_.parent_path());
  if (fd_ >= 0) ::close(fd_);
  buffer_.clear();  // the snapshot already holds what was buffered
  open_append();
}

}  // namespace ferry::storage
