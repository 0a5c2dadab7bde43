#include "group_commit.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>

#include "detail/log.hpp"
#include "file_io.hpp"

namespace ferry::storage {
namespace fs = std::filesystem;

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
  (void)finish();
}

int group_commit::finish() {
  if (finished_) return final_error_;
  finished_ = true;
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  const int background = sync_failure_.load(std::memory_order_acquire);
  final_error_ = background != 0 ? background : final_error_;
  return final_error_;
}

commit_counters group_commit::counters() const noexcept {
  return {batches_.load(std::memory_order_relaxed), syncs_.load(std::memory_order_relaxed),
          sync_ns_.load(std::memory_order_relaxed), max_sync_ns_.load(std::memory_order_relaxed)};
}

int group_commit::timed_sync(int fd) {
  const auto t0 = std::chrono::steady_clock::now();
  const int err = sync_data(fd);
  const auto ns = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  syncs_.fetch_add(1, std::memory_order_relaxed);
  sync_ns_.fetch_add(ns, std::memory_order_relaxed);
  if (ns > max_sync_ns_.load(std::memory_order_relaxed)) max_sync_ns_.store(ns, std::memory_order_relaxed);
  return err;
}

int group_commit::sync_unsynced() {
  int first = 0;
  for (int fd : unsynced_) {
    const int err = timed_sync(fd);
    if (err != 0 && first == 0) first = err;
  }
  unsynced_.clear();
  last_sync_ = std::chrono::steady_clock::now();
  return first;
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
        (stop_ || std::chrono::steady_clock::now() - last_sync_ >= interval_)) {
      lock.unlock();
      const int err = sync_unsynced();
      lock.lock();
      if (err != 0 && sync_failure_.load(std::memory_order_relaxed) == 0) {
        detail::logger().error("background fdatasync failed: {}", errno_text(err));
        sync_failure_.store(err, std::memory_order_release);
        const std::uint64_t one = 1;
        (void)!::write(notify_fd_, &one, sizeof one);
      }
    }
    if (stop_ && !pending_) return;
  }
}

commit_result group_commit::execute(commit_batch& batch) {
  batches_.fetch_add(1, std::memory_order_relaxed);
  commit_result result;
  result.number = batch.number;
  std::vector<int> to_sync;
  std::vector<fs::path> dirs;
  for (auto& req : batch.appends) {
    auto out = req.writer->append(req.bytes);
    if (out.sync_error != 0 && result.sync_error == 0) result.sync_error = out.sync_error;
    for (int fd : out.closed_fds)
      std::erase(unsynced_, fd);  // synced before closing; the number may be reused
    for (int fd : out.touched_fds) to_sync.push_back(fd);
    if (out.new_segment) dirs.push_back(req.writer->dir());
    result.outcomes.emplace_back(req.log, std::move(out));
    result.buffers.push_back(std::move(req.bytes));
  }
  if (sync_delay_.count() > 0) std::this_thread::sleep_for(sync_delay_);
  for (int fd : batch.sync_fds) to_sync.push_back(fd);
  if (policy_ == fsync_policy::always) {
    for (int fd : to_sync) {
      const int err = timed_sync(fd);
      if (err != 0 && result.sync_error == 0) result.sync_error = err;
    }
  } else {
    for (int fd : to_sync)
      if (std::find(unsynced_.begin(), unsynced_.end(), fd) == unsynced_.end()) unsynced_.push_back(fd);
  }
  // A new segment's directory entry is synced in either mode: without it a crash can lose the whole file.
  for (const auto& dir : dirs) {
    const auto t0 = std::chrono::steady_clock::now();
    const int err = try_sync_directory(dir);
    syncs_.fetch_add(1, std::memory_order_relaxed);
    sync_ns_.fetch_add(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                      std::chrono::steady_clock::now() - t0)
                                                      .count()),
                       std::memory_order_relaxed);
    if (err != 0) {
      detail::logger().error("cannot fsync directory {}: {}", dir.string(), errno_text(err));
      if (result.sync_error == 0) result.sync_error = err;
    }
  }
  return result;
}

}  // namespace ferry::storage
