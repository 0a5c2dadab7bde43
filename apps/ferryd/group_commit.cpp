#include "group_commit.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "detail/log.hpp"
#include "record.hpp"
#include "segment_log.hpp"

namespace ferry::ferryd {
namespace fs = std::filesystem;

namespace {

std::uint32_t frame_size(const char* p) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<unsigned char>(p[4 + i])} << (8 * i);
  return static_cast<std::uint32_t>(record_header_size) + v;
}

std::uint64_t frame_u64(const char* p, std::size_t at) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t{static_cast<unsigned char>(p[at + i])} << (8 * i);
  return v;
}

// Sequence and stored-at time of the message record starting at p (see record.hpp).
std::uint64_t record_seq(const char* p) {
  return frame_u64(p, record_header_size + 8);
}
std::int64_t record_stored_at(const char* p) {
  return static_cast<std::int64_t>(frame_u64(p, record_header_size + 16));
}

int write_all(int fd, const char* data, std::size_t size, std::uint64_t offset) {
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

}  // namespace

segment_writer::segment_writer(fs::path dir, std::uint64_t segment_bytes)
    : dir_(std::move(dir)), segment_bytes_(segment_bytes) {}

segment_writer::~segment_writer() {
  if (fd_ >= 0) ::close(fd_);
}

void segment_writer::resume(std::uint64_t base, std::uint64_t size) {
  int err = 0;
  fd_ = open_segment(base, err);
  if (fd_ < 0)
    throw std::runtime_error(fmt::format("cannot reopen segment {}: {}", base, std::strerror(err)));
  base_ = base;
  size_ = size;
}

int segment_writer::open_segment(std::uint64_t base, int& err) {
  const fs::path path = dir_ / segment_file_name(base);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) err = errno;
  return fd;
}

segment_writer::outcome segment_writer::append(const std::string& bytes) {
  outcome out;
  const char* data = bytes.data();
  std::size_t pos = 0;
  while (pos < bytes.size() && out.error == 0) {
    // Take as many whole records as fit in the active segment (at least one: a segment is never empty).
    if (fd_ < 0 || (size_ > 0 && size_ + frame_size(data + pos) > segment_bytes_)) {
      if (fd_ >= 0) {
        if (std::find(out.touched_fds.begin(), out.touched_fds.end(), fd_) == out.touched_fds.end()) {
          ::fdatasync(fd_);  // the old segment is complete: make it durable before letting go of it
        } else if (::fdatasync(fd_) != 0) {
          out.error = errno;
          break;
        }
        std::erase(out.touched_fds, fd_);
        out.closed_fds.push_back(fd_);
        ::close(fd_);
        fd_ = -1;
      }
      int err = 0;
      const std::uint64_t base = record_seq(data + pos);
      fd_ = open_segment(base, err);
      if (fd_ < 0) {
        out.error = err;
        break;
      }
      base_ = base;
      size_ = 0;
      out.new_segment = true;
    }
    std::size_t end = pos;
    segment_update update{base_, size_, 0, 0, 0};
    while (end < bytes.size()) {
      const std::uint32_t n = frame_size(data + end);
      if (update.records > 0 && size_ + (end - pos) + n > segment_bytes_) break;
      update.last_seq = record_seq(data + end);
      update.last_stored_at_us = record_stored_at(data + end);
      ++update.records;
      end += n;
    }
    const int err = write_all(fd_, data + pos, end - pos, size_);
    if (err != 0) {
      // Leave no partial record behind; recovery would cut it anyway, but a later append must not
      // land after garbage.
      if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0)
        detail::logger().error("cannot cut {} back to {} bytes after a failed write: {}",
                               segment_file_name(base_), size_, std::strerror(errno));
      out.error = err;
      break;
    }
    size_ += end - pos;
    update.committed = size_;
    out.durable_through = update.last_seq;
    out.segments.push_back(update);
    if (std::find(out.touched_fds.begin(), out.touched_fds.end(), fd_) == out.touched_fds.end())
      out.touched_fds.push_back(fd_);
    pos = end;
  }
  return out;
}

group_commit::group_commit(fsync_policy policy, std::chrono::milliseconds interval, int notify_fd,
                           std::chrono::milliseconds sync_delay)
    : policy_(policy),
      interval_(interval),
      notify_fd_(notify_fd),
      sync_delay_(sync_delay),
      last_sync_(std::chrono::steady_clock::now()) {
  thread_ = std::thread([this] { run(); });
}

group_commit::~group_commit() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void group_commit::submit(commit_batch&& batch) {
  {
    std::lock_guard lock(mutex_);
    pending_ = std::move(batch);
    busy_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

std::optional<commit_result> group_commit::take() {
  std::lock_guard lock(mutex_);
  if (!done_) return std::nullopt;
  auto r = std::move(done_);
  done_.reset();
  busy_.store(false, std::memory_order_release);
  return r;
}

std::optional<commit_result> group_commit::wait() {
  std::unique_lock lock(mutex_);
  if (!busy_.load(std::memory_order_acquire)) return std::nullopt;
  cv_.wait(lock, [&] { return done_.has_value(); });
  auto r = std::move(done_);
  done_.reset();
  busy_.store(false, std::memory_order_release);
  return r;
}

void group_commit::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (policy_ == fsync_policy::interval) {
      cv_.wait_for(lock, interval_, [&] { return stop_ || pending_.has_value(); });
    } else {
      cv_.wait(lock, [&] { return stop_ || pending_.has_value(); });
    }
    if (pending_) {
      commit_batch batch = std::move(*pending_);
      pending_.reset();
      lock.unlock();
      commit_result result = execute(batch);
      lock.lock();
      done_ = std::move(result);
      lock.unlock();
      cv_.notify_all();
      const std::uint64_t one = 1;
      (void)!::write(notify_fd_, &one, sizeof one);
      lock.lock();
    }
    if (policy_ == fsync_policy::interval && !unsynced_.empty() &&
        std::chrono::steady_clock::now() - last_sync_ >= interval_) {
      for (int fd : unsynced_) ::fdatasync(fd);
      unsynced_.clear();
      last_sync_ = std::chrono::steady_clock::now();
    }
    if (stop_ && !pending_) {
      for (int fd : unsynced_) ::fdatasync(fd);
      return;
    }
  }
}

commit_result group_commit::execute(commit_batch& batch) {
  commit_result result;
  result.number = batch.number;
  std::vector<int> to_sync;
  std::vector<fs::path> dirs;
  for (auto& req : batch.appends) {
    auto out = req.writer->append(req.bytes);
    for (int fd : out.closed_fds)
      std::erase(unsynced_, fd);  // synced before closing; the number may be reused
    for (int fd : out.touched_fds) to_sync.push_back(fd);
    if (out.new_segment) dirs.push_back(req.writer->dir());
    result.outcomes.emplace_back(req.queue, std::move(out));
    result.buffers.push_back(std::move(req.bytes));
  }
  if (sync_delay_.count() > 0) std::this_thread::sleep_for(sync_delay_);
  if (policy_ == fsync_policy::always) {
    for (int fd : batch.sync_fds) to_sync.push_back(fd);
    for (int fd : to_sync) {
      if (::fdatasync(fd) != 0 && result.sync_error == 0) result.sync_error = errno;
    }
  } else {
    for (int fd : batch.sync_fds) to_sync.push_back(fd);
    for (int fd : to_sync)
      if (std::find(unsynced_.begin(), unsynced_.end(), fd) == unsynced_.end()) unsynced_.push_back(fd);
  }
  for (const auto& dir : dirs) {
    try {
      sync_directory(dir);
    } catch (const std::exception& e) {
      if (result.sync_error == 0) result.sync_error = EIO;
      detail::logger().error("{}", e.what());
    }
  }
  return result;
}

}  // namespace ferry::ferryd
