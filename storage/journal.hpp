#pragma once
// A queue's state journal: which messages are settled and how often each was delivered
// (docs/storage.md). The loop thread appends small records and writes them to the file at the end of
// every loop iteration (a write(), so a killed process loses nothing); the commit thread fdatasyncs it
// with the first group commit after 200 ms have passed, so a machine crash loses at most the records of
// about that long (settlements come back as redeliveries, attempt counts as repeats).
// The journal is rewritten compactly (temporary file, fsync, rename, fsync of the directory) when it
// grows, so its size follows the number of unsettled messages, not the history.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "record.hpp"
#include "segment_log.hpp"

namespace ferry::storage {

class journal {
 public:
  explicit journal(std::filesystem::path file);
  ~journal();
  journal(const journal&) = delete;
  journal& operator=(const journal&) = delete;

  /// Reads every valid record in order (repairing a torn tail), then opens the file for appending.
  void recover(recovery_report& report, const std::function<void(const journal_record&)>& visit);

  void append(const journal_record& r) {
    append_journal_record(buffer_, r);
    ++appended_;
  }
  /// Writes buffered records to the file. Returns 0 or an errno value (the records stay buffered).
  int flush() noexcept;
  /// fdatasync. Returns 0 or an errno value.
  int sync() noexcept;
  /// Replaces the file by `snapshot` (records encoded with append_journal_record): temporary file, fsync,
  /// rename, fsync of the directory. Throws ferry::error when that fails (the old journal stays valid).
  void rewrite(const std::string& snapshot);

  [[nodiscard]] std::uint64_t file_bytes() const noexcept { return file_bytes_; }
  [[nodiscard]] bool has_buffered() const noexcept { return !buffer_.empty(); }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return file_; }
  /// False until recover() opened the file (a queue that never stored anything has none).
  [[nodiscard]] bool is_open() const noexcept { return fd_ >= 0; }

 private:
  void open_append();
  std::filesystem::path file_;
  int fd_ = -1;
  std::string buffer_;
  std::uint64_t file_bytes_ = 0;
  std::uint64_t appended_ = 0;
};

}  // namespace ferry::storage
