#pragma once
// Group commit: the thread that makes messages durable, so disk syncs never stall the event loop.
//
// The loop gathers the records of every producer into one batch per queue while the previous batch is
// being written. When the commit thread is idle it takes the whole batch, writes each queue's records
// (rolling to a new segment file when the active one is full), fdatasyncs every file it touched and the
// directory of any new file, and reports back. One fsync thus confirms everything that arrived meanwhile.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace ferry::ferryd {

enum class fsync_policy {
  always,    // confirm after fdatasync (default)
  interval,  // confirm after write(); fdatasync every interval (a machine crash loses up to that much)
};

/// Writer-side state of one queue's log: touched only by the commit thread once created.
class segment_writer {
 public:
  segment_writer(std::filesystem::path dir, std::uint64_t segment_bytes);
  ~segment_writer();
  segment_writer(const segment_writer&) = delete;
  segment_writer& operator=(const segment_writer&) = delete;
  /// Continues appending to an existing segment (after recovery).
  void resume(std::uint64_t base, std::uint64_t size);

  /// One segment's change in a batch.
  struct segment_update {
    std::uint64_t base = 0;
    std::uint64_t committed = 0;  // new durable size
    std::uint64_t records = 0;    // records added
    std::uint64_t last_seq = 0;
    std::int64_t last_stored_at_us = 0;
  };
  struct outcome {
    std::uint64_t durable_through = 0;  // last seq written (0: none)
    int error = 0;                      // errno for the records after durable_through
    std::vector<segment_update> segments;
    std::vector<int> touched_fds;
    std::vector<int> closed_fds;  // segments finished (synced and closed) during this append
    bool new_segment = false;
  };
  /// Writes the framed message records in `bytes` (pwrite; no sync). Stops at the first failure and cuts
  /// the file back so no partial record remains.
  outcome append(const std::string& bytes);

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }

 private:
  int open_segment(std::uint64_t base, int& err);
  std::filesystem::path dir_;
  std::uint64_t segment_bytes_;
  int fd_ = -1;
  std::uint64_t base_ = 0;
  std::uint64_t size_ = 0;
};

/// One queue's share of a batch.
struct append_request {
  std::shared_ptr<segment_writer> writer;
  std::uint32_t queue = 0;  // the loop's index for the queue
  std::string bytes;        // framed message records, in sequence order
};

struct commit_batch {
  std::uint64_t number = 0;
  std::vector<append_request> appends;
  std::vector<int> sync_fds;  // further files to fdatasync (journals) in `always` mode
};

struct commit_result {
  std::uint64_t number = 0;
  std::vector<std::pair<std::uint32_t, segment_writer::outcome>> outcomes;  // per request, same order
  std::vector<std::string> buffers;  // the requests' byte buffers, handed back for reuse (same order)
  int sync_error = 0;                // fdatasync failed: nothing in this batch may be called durable
};

/// Thread safety: submit(), busy() and take() are called by the loop thread; the rest runs on the commit
/// thread. `notify_fd` (an eventfd) is written when a result is ready.
class group_commit {
 public:
  /// `sync_delay` (tests only) makes each batch wait before its sync, to show confirms wait for it.
  group_commit(fsync_policy policy, std::chrono::milliseconds interval, int notify_fd,
               std::chrono::milliseconds sync_delay = std::chrono::milliseconds(0));
  ~group_commit();

  [[nodiscard]] bool busy() const noexcept { return busy_.load(std::memory_order_acquire); }
  /// Hands a batch over. Only when !busy().
  void submit(commit_batch&& batch);
  /// The finished batch, if any (clears busy).
  std::optional<commit_result> take();
  /// Waits for the batch in progress, if any, and returns its result.
  std::optional<commit_result> wait();

 private:
  void run();
  commit_result execute(commit_batch& batch);

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
  std::vector<int> unsynced_;  // interval mode: files written since the last sync
  std::chrono::steady_clock::time_point last_sync_;
  std::thread thread_;
};

}  // namespace ferry::ferryd
