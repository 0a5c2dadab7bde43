#pragma once
// The writing end of one log: appends framed message records to the active segment file and rolls to a
// new segment (named by its first sequence number) when the active one is full. Used by the commit thread
// only (group_commit); the loop thread learns what became durable from the outcome it reports.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ferry::storage {

/// Thread safety: once handed to group_commit, touched only by the commit thread.
class segment_writer {
 public:
  segment_writer(std::filesystem::path dir, std::uint64_t segment_bytes);
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
  int open_segment(std::uint64_t base, int& err);
  std::filesystem::path dir_;
  std::uint64_t segment_bytes_;
  int fd_ = -1;
  std::uint64_t base_ = 0;
  std::uint64_t size_ = 0;
};

}  // namespace ferry::storage
