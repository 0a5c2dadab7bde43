#pragma once
// Group commit: the thread that makes messages durable, so disk syncs never stall the event loop.
//
// The loop gathers the records of every producer into one batch per log while the previous batch is
// being written. When the commit thread is idle it takes the whole batch, writes each log's records
// (rolling to a new segment file when the active one is full), fdatasyncs every file it touched and the
// directory of any new file, and reports back. One fsync thus confirms everything that arrived meanwhile.
//
// Every sync result is checked. A failed fdatasync means the kernel may have dropped the dirty pages:
// retrying could report success for data that never reached the disk, so a failure is reported (in the
// batch's result, or through sync_failure() for the interval mode's background syncs) and the caller
// must confirm nothing more.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "segment_writer.hpp"

namespace ferry::storage {

enum class fsync_policy {
  always,    // confirm after fdatasync (default)
  interval,  // confirm after write(); fdatasync every interval (a machine crash loses up to that much)
};

/// One log's share of a batch.
struct append_request {
  std::shared_ptr<segment_writer> writer;
  std::uint32_t log = 0;  // the caller's index for the log
  std::string bytes;      // framed message records, in sequence order
};

struct commit_batch {
  std::uint64_t number = 0;
  std::vector<append_request> appends;
  std::vector<int> sync_fds;  // further files to fdatasync (journals)
};

struct commit_result {
  std::uint64_t number = 0;
  std::vector<std::pair<std::uint32_t, segment_writer::outcome>> outcomes;  // per request, same order
  std::vector<std::string> buffers;  // the requests' byte buffers, handed back for reuse (same order)
  int sync_error = 0;                // a sync failed: nothing in this batch may be called durable
};

/// Counters of the commit thread (monotonic; readable from any thread).
struct commit_counters {
  std::uint64_t batches = 0;
  std::uint64_t syncs = 0;        // fdatasync and directory fsync calls
  std::uint64_t sync_ns = 0;      // time spent in them
  std::uint64_t max_sync_ns = 0;  // the longest one
};

/// Thread safety: submit(), busy(), take(), wait() and finish() are called by one (the loop) thread;
/// counters() and sync_failure() from any thread. `notify_fd` (an eventfd) is written when a result is
/// ready or a background sync failed.
class group_commit {
 public:
  /// `sync_delay` (tests only) makes each batch wait before its sync, to show confirms wait for it.
  group_commit(fsync_policy policy, std::chrono::milliseconds interval, int notify_fd,
               std::chrono::milliseconds sync_delay = std::chrono::milliseconds(0));
  /// Calls finish() if it was not called.
  ~group_commit();
  group_commit(const group_commit&) = delete;
  group_commit& operator=(const group_commit&) = delete;

  [[nodiscard]] bool busy() const noexcept { return busy_.load(std::memory_order_acquire); }
  /// Hands a batch over. Only when !busy().
  void submit(commit_batch&& batch);
  /// The finished batch, if any (clears busy).
  std::optional<commit_result> take();
  /// Waits for the batch in progress, if any, and returns its result.
  std::optional<commit_result> wait();
  /// Stops the thread after the batch in progress; in interval mode syncs what is still unsynced.
  /// Returns 0 or the errno of the first sync that failed in the background or at this last sync.
  int finish();

  /// errno of a failed background sync (interval mode), 0 while none failed.
  [[nodiscard]] int sync_failure() const noexcept { return sync_failure_.load(std::memory_order_acquire); }
  [[nodiscard]] commit_counters counters() const noexcept;

 private:
  void run();
  commit_result execute(commit_batch& batch);
  int timed_sync(int fd);  // sync_data with the counters
  int sync_unsynced();     // interval mode: syncs every file written since the last sync

  fsync_policy policy_;
  std::chrono::milliseconds interval_;
  int notify_fd_;
  std::chrono::milliseconds sync_delay_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<commit_batch> pending_;
  std::optional<commit_result> done_;
  std::atomic<bool> busy_{false};
  bool stop_ = false;
  bool finished_ = false;
  int final_error_ = 0;
  std::atomic<int> sync_failure_{0};
  std::atomic<std::uint64_t> batches_{0}, syncs_{0}, sync_ns_{0}, max_sync_ns_{0};
  std::vector<int> unsynced_;  // interval mode: files written since the last sync
  std::chrono::steady_clock::time_point last_sync_;
  std::thread thread_;
};

}  // namespace ferry::storage
