#include "segment_writer.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>

#include "detail/log.hpp"
#include "ferry/error.hpp"
#include "file_io.hpp"
#include "record.hpp"
#include "segment_log.hpp"

namespace ferry::storage {
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

}  // namespace

std::string spare_file_name(std::uint64_t base) {
  return fmt::format("{:020}.spare", base);
}

segment_writer::segment_writer(fs::path dir, std::uint64_t segment_bytes,
                               std::shared_ptr<spare_segments> spares)
    : dir_(std::move(dir)), segment_bytes_(segment_bytes), spares_(std::move(spares)) {}

segment_writer::~segment_writer() {
  if (fd_ >= 0) ::close(fd_);
}

void segment_writer::resume(std::uint64_t base, std::uint64_t size) {
  int err = 0;
  fd_ = open_segment(base, err, false);
  if (fd_ < 0)
    throw error(fmt::format("cannot reopen segment {} of {}: {}", segment_file_name(base), dir_.string(),
                            errno_text(err)));
  base_ = base;
  size_ = size;
}

int segment_writer::open_segment(std::uint64_t base, int& err, bool fresh) {
  const fs::path path = dir_ / segment_file_name(base);
  // A new segment reuses a spare file when there is one: its older records stay behind the live ones until
  // they are overwritten, and recovery tells them apart by their sequence numbers.
  if (fresh && spares_) {
    while (const auto spare = spares_->take()) {
      if (::rename(spare->c_str(), path.c_str()) == 0) break;
      detail::logger().warn("cannot reuse spare segment {}: {}; deleting it", spare->string(),
                            errno_text(errno));
      ::unlink(spare->c_str());
    }
  }
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
        // The old segment is complete: make it durable before letting go of it. A failed sync means
        // nothing written to it since the last good sync may be on disk: the caller must not confirm.
        if (const int err = sync_data(fd_); err != 0) {
          out.sync_error = err;
          break;
        }
        std::erase(out.touched_fds, fd_);
        out.closed_fds.push_back(fd_);
        ::close(fd_);
        fd_ = -1;
      }
      int err = 0;
      const std::uint64_t base = record_seq(data + pos);
      fd_ = open_segment(base, err, true);
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
                               segment_file_name(base_), size_, errno_text(errno));
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

}  // namespace ferry::storage
