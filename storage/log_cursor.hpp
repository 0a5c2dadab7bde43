#pragma once
// A reader that walks the committed records of a log in order, in chunks of about 1 MiB, so memory does not
// grow with the backlog. It steps over damaged frames (logging each, once) and moves on to the next segment
// once the writer has: a durable queue has one, a durable topic one per subscription.
//
// Thread safety: the log's thread only.

#include <cstdint>
#include <string>

#include "record.hpp"
#include "segment_log.hpp"

namespace ferry::storage {

class log_cursor {
 public:
  explicit log_cursor(const segment_log& log) : log_(&log) {}

  /// Places the cursor at `offset` of segment `base` (0: the first segment present).
  void seek(std::uint64_t base, std::uint64_t offset);

  struct entry {
    message_record record;  // views into the cursor's buffer: valid until the cursor moves
    record_location where;
  };
  /// The next committed message record, without moving past it. False when there is none yet.
  bool peek(entry& out);
  /// Moves past the record the last successful peek() returned.
  void advance() noexcept { pos_ += last_total_; }

  /// True when committed records lie ahead (cheap; does not read).
  [[nodiscard]] bool has_more() const noexcept;
  /// The segment under the cursor (0 before the first seek onto a segment).
  [[nodiscard]] std::uint64_t segment() const noexcept { return segment_; }
  /// The file offset of the next record in segment().
  [[nodiscard]] std::uint64_t offset() const noexcept { return offset_ + pos_; }

 private:
  void reset(std::uint64_t base, std::uint64_t offset);

  const segment_log* log_;
  std::uint64_t segment_ = 0;  // base of the segment being read (0: none yet)
  std::uint64_t offset_ = 0;   // file offset of buffer_[0]
  std::string buffer_;
  std::size_t pos_ = 0;  // parse position in buffer_
  std::size_t last_total_ = 0;
};

}  // namespace ferry::storage
