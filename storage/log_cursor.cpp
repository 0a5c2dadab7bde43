#include "log_cursor.hpp"

#include <algorithm>
#include <cstring>

#include "detail/log.hpp"

namespace ferry::storage {
namespace {
constexpr std::size_t read_ahead = 1 << 20;
}  // namespace

void log_cursor::reset(std::uint64_t base, std::uint64_t offset) {
  segment_ = base;
  offset_ = offset;
  buffer_.clear();
  pos_ = 0;
  last_total_ = 0;
}

void log_cursor::seek(std::uint64_t base, std::uint64_t offset) {
  reset(base, offset);
}

bool log_cursor::peek(entry& out) {
  const auto& segs = log_->segments();
  if (segs.empty()) return false;
  if (segment_ == 0 || segs.find(segment_) == segs.end()) {
    // First use, or the segment under the cursor was removed: start at the first segment still present.
    const auto first = segs.lower_bound(segment_);
    if (first == segs.end()) return false;
    reset(first->first, 0);
  }
  for (;;) {
    if (pos_ < buffer_.size()) {
      std::string_view body;
      std::size_t total = 0;
      const frame_status st = check_frame(buffer_.data() + pos_, buffer_.size() - pos_, body, total);
      if (st == frame_status::ok) {
        if (const auto rec = parse_message(body)) {
          out.record = *rec;
          out.where = {segment_, offset_ + pos_, static_cast<std::uint32_t>(total)};
          last_total_ = total;
          return true;
        }
        pos_ += total;  // not a message record: skip
        continue;
      }
      // A frame that is damaged, or that claims to run past what is committed, is stepped over to the
      // next valid one (recovery reported the damage already; this also covers damage found later).
      bool damaged = st == frame_status::bad;
      if (st == frame_status::incomplete && buffer_.size() - pos_ >= record_header_size) {
        std::uint32_t len = 0;
        std::memcpy(&len, buffer_.data() + pos_ + 4, 4);
        damaged = offset_ + pos_ + record_header_size + len > segs.at(segment_).committed;
      }
      if (damaged) {
        const std::uint64_t at = offset_ + pos_;
        const std::uint64_t next = log_->next_valid_frame(segment_, at);
        detail::logger().warn("{}: damaged record in segment {} at offset {}: {} bytes skipped",
                              log_->dir().string(), segment_file_name(segment_), at, next - at);
        reset(segment_, next);
        continue;
      }
    }
    // Refill from where parsing stopped.
    offset_ += pos_;
    buffer_.erase(0, pos_);
    pos_ = 0;
    const std::size_t got = log_->read_chunk(segment_, offset_ + buffer_.size(),
                                             std::max(read_ahead, buffer_.size() + 64), buffer_);
    if (got > 0) continue;
    // Nothing more committed here: move on only when a newer segment exists (the writer moved on).
    const auto next = segs.upper_bound(segment_);
    if (next == segs.end()) return false;
    reset(next->first, 0);
  }
}

bool log_cursor::has_more() const noexcept {
  const auto& segs = log_->segments();
  if (segs.empty()) return false;
  const auto& last = *segs.rbegin();
  if (segment_ < last.first) return true;
  return offset_ + pos_ < last.second.committed;
}

}  // namespace ferry::storage
