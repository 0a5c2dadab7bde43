#include "stream.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <vector>

#include "detail/log.hpp"
#include "ferry/error.hpp"
#include "file_io.hpp"
#include "record.hpp"

namespace ferry::storage {
namespace fs = std::filesystem;

stream::stream(fs::path dir, stream_config config)
    : dir_(std::move(dir)),
      config_(config),
      log_(dir_),
      spares_(config_.spare_segments > 0 ? std::make_shared<spare_segments>(config_.spare_segments)
                                         : nullptr),
      writer_(std::make_shared<segment_writer>(dir_, config_.segment_bytes, spares_)),
      dedup_(config_.dedup) {}

stream::~stream() {
  if (log_end_fd_ >= 0) ::close(log_end_fd_);
}

void stream::create_on_disk() {
  if (on_disk_) return;
  create_directories_durably(dir_);
  on_disk_ = true;
}

void stream::recover(recovery_report& report, std::int64_t now_us, const segment_log::visitor& visit) {
  std::error_code ec;
  if (!fs::exists(dir_, ec)) return;
  on_disk_ = true;
  // Spare files left from the last run are reused (as many as configured; the rest are deleted).
  for (const auto& entry : fs::directory_iterator(dir_)) {
    if (entry.path().extension() != ".spare") continue;
    if (spares_ && spares_->has_room()) {
      spares_->add(entry.path());
    } else {
      fs::remove(entry.path(), ec);
    }
  }
  const auto now = clock::now();
  const std::int64_t window_us =
      std::chrono::duration_cast<std::chrono::microseconds>(config_.dedup.max_age).count();
  // The last checkpoint of the durable end, when it is there and whole.
  std::optional<log_end_record> durable_end;
  {
    const fs::path file = dir_ / "log_end";
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      char buf[64];
      const long n = read_at(fd, buf, sizeof buf, 0);
      ::close(fd);
      std::string_view body;
      std::size_t total = 0;
      if (n > 0 && check_frame(buf, static_cast<std::size_t>(n), body, total) == frame_status::ok)
        durable_end = parse_log_end(body);
    }
  }
  if (durable_end) checkpointed_ = *durable_end;
  log_.recover(
      report,
      [&](const message_record& rec, const record_location& where) {
        next_seq_ = std::max(next_seq_, rec.seq + 1);
        if (const std::int64_t age_us = stored_age_us(now_us, rec.stored_at_us); age_us < window_us)
          dedup_.check_and_insert(rec.id, now - std::chrono::microseconds(age_us), rec.seq);
        visit(rec, where);
      },
      durable_end);
  committed_through_ = next_seq_ - 1;
  auto& segs = log_.segments();
  if (!segs.empty()) {
    const auto& last = segs.rbegin()->second;
    writer_->resume(last.base, last.committed);
  }
}

void stream::continue_at(std::uint64_t seq) noexcept {
  if (seq > next_seq_) {
    next_seq_ = seq;
    committed_through_ = next_seq_ - 1;
  }
}

std::optional<std::uint64_t> stream::admit(const message_id& id, clock::time_point now) {
  std::uint64_t first = 0;
  if (dedup_.check_and_insert(id, now, next_seq_, &first)) return first;
  return std::nullopt;
}

void stream::readmit(const message_id& id, clock::time_point now) {
  dedup_.erase(id);
  (void)admit(id, now);
}

std::uint64_t stream::append(const message_id& id, std::uint64_t key_hash, std::string_view envelope,
                             std::string_view payload, std::int64_t stored_at_us, std::uint8_t flags) {
  create_on_disk();
  const std::uint64_t seq = next_seq_++;
  append_message_record(pending_, seq, stored_at_us, id, key_hash, envelope, payload, flags);
  ++pending_count_;
  return seq;
}

std::string stream::take_pending() {
  committing_through_ = next_seq_ - 1;
  committing_count_ = pending_count_;
  committing_bytes_ = pending_.size();
  pending_count_ = 0;
  std::string batch = std::move(pending_);
  pending_ = std::move(spare_);
  pending_.clear();
  spare_ = std::string();
  return batch;
}

void stream::recycle(std::string&& buffer) {
  buffer.clear();
  if (buffer.capacity() > spare_.capacity()) spare_ = std::move(buffer);
}

void stream::committed(const segment_writer::outcome& out) {
  committing_count_ = 0;
  committing_bytes_ = 0;
  committed_through_ = committing_through_;
  for (const auto& u : out.segments)
    log_.committed(u.base, u.committed, u.records, u.last_seq, u.last_stored_at_us);
}

int stream::checkpoint() {
  const auto& segs = log_.segments();
  if (!on_disk_ || segs.empty()) return -1;
  const segment_info& newest = segs.rbegin()->second;
  if (newest.base == checkpointed_.segment && newest.committed == checkpointed_.durable) return -1;
  if (log_end_fd_ < 0) {
    const fs::path file = dir_ / "log_end";
    const bool fresh = !fs::exists(file);
    log_end_fd_ = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (log_end_fd_ < 0 || (fresh && try_sync_directory(dir_) != 0)) {
      if (!checkpoint_failed_)
        detail::logger().warn(
            "{}: cannot write its log_end checkpoint: {} (recovery will report damage at the "
            "end less precisely)",
            dir_.string(), errno_text(errno));
      checkpoint_failed_ = true;
      if (log_end_fd_ >= 0) ::close(log_end_fd_);
      log_end_fd_ = -1;
      return -1;
    }
  }
  std::string frame;
  const log_end_record r{newest.base, newest.committed};
  append_log_end_record(frame, r);
  if (write_all(log_end_fd_, frame.data(), frame.size(), 0) != 0) return -1;
  checkpointed_ = r;
  return log_end_fd_;
}

void stream::remove_segments(std::int64_t now_us, const std::function<bool(const segment_info&)>& unneeded) {
  auto& segs = log_.segments();
  if (segs.size() <= 1) return;
  const std::int64_t window_us =
      std::chrono::duration_cast<std::chrono::microseconds>(config_.dedup.max_age).count();
  // Newest first: the newest unneeded segments are kept a while so a restart can rebuild the dedup window.
  std::vector<std::uint64_t> doomed;
  std::uint64_t kept_bytes = 0;
  const std::uint64_t active = segs.rbegin()->first;
  for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
    const segment_info& s = it->second;
    if (s.base == active || !unneeded(s)) continue;
    const bool recent = stored_age_us(now_us, s.last_stored_at_us) < window_us;
    if (recent && kept_bytes + s.committed <= config_.dedup_retain_bytes) {
      kept_bytes += s.committed;
      continue;
    }
    doomed.push_back(s.base);
  }
  for (const std::uint64_t base : doomed) log_.remove(base, spares_.get());
}

void stream::remove_segment(std::uint64_t base) {
  auto& segs = log_.segments();
  if (segs.empty() || base == segs.rbegin()->first || segs.count(base) == 0) return;
  log_.remove(base, spares_.get());
}

}  // namespace ferry::storage
