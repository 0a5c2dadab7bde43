#pragma once
// The writing end of one log: appends framed message records to the active segment file and rolls to a
// new segment (named by its first sequence number) when the active one is full. Used by the commit thread
// only (group_commit); the loop thread learns what became durable from the outcome it reports.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace ferry::storage {

/// Settled segment files kept for reuse instead of being deleted: writing over pages the kernel already
/// caches costs a fraction of filling new ones (docs/storage.md, "Recycling"). A stream adds them (its
/// thread); its writer takes one when it rolls to a new segment (the commit thread).
///
/// Thread safety: every call is safe from any thread.
class spare_segments {
 public:
  explicit spare_segments(std::size_t max) : max_(max) {}
  [[nodiscard]] bool has_room() const {
    std::lock_guard lock(mutex_);
    return files_.size() < max_;
  }
  void add(std::filesystem::path file) {
    std::lock_guard lock(mutex_);
    files_.push_back(std::move(file));
  }
  [[nodiscard]] std::optional<std::filesystem::path> take() {
    std::lock_guard lock(mutex_);
    if (files_.empty()) return std::nullopt;
    auto f = std::move(files_.back());
    files_.pop_back();
    return f;
  }
  [[nodiscard]] std::size_t size() const {
    std::lock_guard lock(mutex_);
    return files_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::filesystem::path> files_;
  std::size_t max_;
};

/// The file name of a spare segment (it keeps the base of its last life: unique in its directory).
std::string spare_file_name(std::uint64_t base);

/// Thread safety: once handed to group_commit, touched only by the commit thread.
class segment_writer {
 public:
  /// `spares` (optional) are files to reuse when rolling to a new segment.
  segment_writer(std::filesystem::path dir, std::uint64_t segment_bytes,
                 std::shared_ptr<spare_segments> spares = {});
  ~segment_writer();
  segment_writer(const segment_writer&) = delete;
  segment_writer& operator=(const segment_writer&) = delete;

  /// Continues appending to an existing segment (after recovery). Throws ferry::error.
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
    int error = 0;                      // errno of a failed write: the records after durable_through
    int sync_error = 0;                 // errno of a failed sync of a finished segment: nothing is durable
    std::vector<segment_update> segments;
    std::vector<int> touched_fds;  // files written, to be synced by the caller
    std::vector<int> closed_fds;   // segments finished (synced and closed) during this append
    bool new_segment = false;      // a file was created: the directory needs a sync
  };
  /// Writes the framed message records in `bytes` (pwrite; no sync of the active segment). Stops at the
  /// first failure and cuts the file back so no partial record remains. A segment that fills up is synced
  /// before it is closed; if that sync fails, outcome.sync_error says so.
  outcome append(const std::string& bytes);

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }

 private:
  int open_segment(std::uint64_t base, int& err, bool fresh);
  std::filesystem::path dir_;
  std::uint64_t segment_bytes_;
  std::shared_ptr<spare_segments> spares_;
  int fd_ = -1;
  std::uint64_t base_ = 0;
  std::uint64_t size_ = 0;
};

}  // namespace ferry::storage
