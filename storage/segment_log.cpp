#include "segment_log.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>

#include "detail/log.hpp"
#include "ferry/error.hpp"
#include "file_io.hpp"
#include "segment_writer.hpp"

namespace ferry::storage {
namespace fs = std::filesystem;

namespace {

// Finds the next offset after `from` where a valid, live frame starts, or `size` when there is none.
std::size_t resync(const char* data, std::size_t size, std::size_t from, const live_frame& live) {
  for (std::size_t pos = from + 1; pos + record_header_size <= size;) {
    const void* hit = ::memmem(data + pos, size - pos, record_magic, sizeof record_magic);
    if (hit == nullptr) return size;
    pos = static_cast<std::size_t>(static_cast<const char*>(hit) - data);
    std::string_view body;
    std::size_t total = 0;
    if (check_frame(data + pos, size - pos, body, total) == frame_status::ok && (!live || live(body)))
      return pos;
    ++pos;
  }
  return size;
}

bool zero_header(const char* data, std::size_t available) {
  const std::size_t n = std::min(available, record_header_size);
  for (std::size_t i = 0; i < n; ++i)
    if (data[i] != 0) return false;
  return true;
}

}  // namespace

std::size_t scan_frames(const char* data, std::size_t size,
                        const std::function<void(std::string_view, std::size_t, std::size_t)>& on_record,
                        const std::function<void(std::size_t, std::size_t)>& on_corrupt,
                        const live_frame& live, scan_tail* tail) {
  std::size_t pos = 0;
  std::size_t valid_end = 0;
  scan_tail what = scan_tail::none;
  while (pos < size) {
    if (zero_header(data + pos, size - pos)) {
      what = scan_tail::unused;
      break;
    }
    std::string_view body;
    std::size_t total = 0;
    const frame_status st = check_frame(data + pos, size - pos, body, total);
    if (st == frame_status::ok) {
      if (live && !live(body)) {
        what = scan_tail::unused;
        break;
      }
      on_record(body, pos, total);
      pos += total;
      valid_end = pos;
      continue;
    }
    const std::size_t next = resync(data, size, pos, live);
    if (next >= size) {
      what = st == frame_status::incomplete ? scan_tail::torn : scan_tail::damaged;
      break;
    }
    on_corrupt(pos, next - pos);
    pos = next;
  }
  if (tail != nullptr) *tail = what;
  return valid_end;
}

std::size_t scan_file(const fs::path& file, bool repair_tail, recovery_report& report,
                      const std::function<void(std::string_view, std::size_t, std::size_t)>& on_record,
                      const live_frame& live, bool keep_unused, std::uint64_t durable) {
  const int fd = ::open(file.c_str(), repair_tail ? O_RDWR | O_CLOEXEC : O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw error(fmt::format("cannot open {}: {}", file.string(), errno_text(errno)));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw error(fmt::format("cannot stat {}: {}", file.string(), errno_text(err)));
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  std::size_t valid_end = 0;
  scan_tail tail = scan_tail::none;
  if (size > 0) {
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw error(fmt::format("cannot map {}: {}", file.string(), errno_text(err)));
    }
    ::madvise(map, size, MADV_SEQUENTIAL);
    valid_end = scan_frames(
        static_cast<const char*>(map), size, on_record,
        [&](std::size_t offset, std::size_t length) {
          ++report.corrupt_regions;
          report.corrupt_bytes += length;
          report.problems.push_back(
              fmt::format("{}: {} damaged bytes at offset {} skipped (checksum or framing)", file.string(),
                          length, offset));
        },
        live, &tail);
    ::munmap(map, size);
  }
  if (tail == scan_tail::unused && !keep_unused && repair_tail && valid_end < size) {
    if (::ftruncate(fd, static_cast<off_t>(valid_end)) != 0 || sync_data(fd) != 0) {
      const int err = errno;
      ::close(fd);
      throw error(fmt::format("cannot truncate the unused tail of {}: {}", file.string(), errno_text(err)));
    }
    report.truncated_bytes += size - valid_end;
    report.problems.push_back(fmt::format("{}: {} zero or stale bytes at offset {} truncated", file.string(),
                                          size - valid_end, valid_end));
  }
  if (tail == scan_tail::torn || tail == scan_tail::damaged) {
    const std::size_t bad = size - valid_end;
    std::string what;
    if (valid_end < durable) {
      // Synced and confirmed before: no crash can have torn it. The records there are lost.
      report.lost_durable_bytes += std::min<std::uint64_t>(durable, size) - valid_end;
      what = fmt::format(
          "{}: CORRUPTION: the record at offset {} fails its checksum although the log was durable up to "
          "offset {} (confirmed messages there are lost; check the disk)",
          file.string(), valid_end, durable);
      report.corruption.push_back(what);
    } else if (tail == scan_tail::torn) {
      what = fmt::format(
          "{}: torn tail of {} bytes at offset {} (a write cut short by a crash, never "
          "confirmed)",
          file.string(), bad, valid_end);
    } else {
      what = fmt::format(
          "{}: damaged tail of {} bytes at offset {}: a complete record that fails its checksum after the "
          "log's "
          "last durable point{} (a torn write, or corruption of messages confirmed just before a crash)",
          file.string(), bad, valid_end, durable > 0 ? fmt::format(" (offset {})", durable) : std::string());
    }
    if (repair_tail) {
      int err = ::ftruncate(fd, static_cast<off_t>(valid_end)) != 0 ? errno : 0;
      if (err == 0) err = sync_data(fd);
      if (err != 0) {
        ::close(fd);
        throw error(
            fmt::format("cannot truncate the damaged tail of {}: {}", file.string(), errno_text(err)));
      }
      report.truncated_bytes += bad;
      report.problems.push_back(what + "; truncated");
    } else {
      report.corrupt_regions += 1;
      report.corrupt_bytes += bad;
      report.problems.push_back(what + "; left in place");
    }
  }
  ::close(fd);
  return valid_end;
}

std::string segment_file_name(std::uint64_t base) {
  return fmt::format("{:020}.seg", base);
}

segment_log::segment_log(fs::path dir) : dir_(std::move(dir)) {}

segment_log::~segment_log() {
  for (auto& [base, s] : segments_)
    if (s.fd >= 0) ::close(s.fd);
}

void segment_log::open_for_reading(segment_info& s) {
  if (s.fd >= 0) return;
  const fs::path path = dir_ / segment_file_name(s.base);
  s.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (s.fd < 0) throw error(fmt::format("cannot open {}: {}", path.string(), errno_text(errno)));
}

void segment_log::recover(recovery_report& report, const visitor& visit,
                          const std::optional<log_end_record>& durable_end) {
  std::vector<std::uint64_t> bases;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 24 || name.substr(20) != ".seg") continue;
    bases.push_back(std::stoull(name.substr(0, 20)));
  }
  std::sort(bases.begin(), bases.end());
  std::uint64_t last_seq = 0;
  for (std::size_t i = 0; i < bases.size(); ++i) {
    segment_info info;
    info.base = bases[i];
    const bool is_last = i + 1 == bases.size();
    const fs::path path = dir_ / segment_file_name(info.base);
    std::uint64_t durable = 0;
    if (durable_end && info.base < durable_end->segment) durable = ~std::uint64_t{0};  // synced before a roll
    if (durable_end && info.base == durable_end->segment) durable = durable_end->durable;
    info.committed = scan_file(
        path, is_last, report,
        [&](std::string_view body, std::size_t offset, std::size_t total) {
          const auto rec = parse_message(body);
          if (!rec) {
            ++report.corrupt_regions;
            report.problems.push_back(fmt::format("{}: record at offset {} is not a message record; skipped",
                                                  path.string(), offset));
            return;
          }
          if (rec->seq <= last_seq) {
            report.problems.push_back(fmt::format("{}: record at offset {} repeats sequence {}; skipped",
                                                  path.string(), offset, rec->seq));
            return;
          }
          last_seq = rec->seq;
          ++info.records;
          info.last_seq = rec->seq;
          info.last_stored_at_us = rec->stored_at_us;
          ++report.records;
          visit(*rec, record_location{info.base, offset, static_cast<std::uint32_t>(total)});
        },
        // A recycled segment holds older records after the live ones: they have lower sequence numbers.
        [&](std::string_view body) {
          const auto rec = parse_message(body);
          return rec && rec->seq >= info.base && rec->seq > info.last_seq;
        },
        true, durable);
    report.bytes += info.committed;
    ++report.segments;
    auto& s = segments_.emplace(info.base, info).first->second;
    open_for_reading(s);
  }
}

void segment_log::committed(std::uint64_t base, std::uint64_t bytes, std::uint64_t new_records,
                            std::uint64_t last_seq, std::int64_t last_stored_at_us) {
  auto& s = segments_[base];
  s.base = base;
  s.committed = bytes;
  s.records += new_records;
  s.last_seq = last_seq;
  s.last_stored_at_us = last_stored_at_us;
  open_for_reading(s);
}

bool segment_log::read(const record_location& where, std::string& buffer, message_record& out) const {
  const auto it = segments_.find(where.segment);
  if (it == segments_.end() || it->second.fd < 0 || where.offset + where.size > it->second.committed)
    return false;
  buffer.resize(where.size);
  std::size_t done = 0;
  while (done < where.size) {
    const ssize_t n = ::pread(it->second.fd, buffer.data() + done, where.size - done,
                              static_cast<off_t>(where.offset + done));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      detail::logger().error("cannot read {} at {}: {}", segment_file_name(where.segment), where.offset,
                             n < 0 ? errno_text(errno) : "unexpected end of file");
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  std::string_view body;
  std::size_t total = 0;
  if (check_frame(buffer.data(), buffer.size(), body, total) != frame_status::ok) {
    detail::logger().error("record in {} at offset {} no longer matches its checksum",
                           segment_file_name(where.segment), where.offset);
    return false;
  }
  const auto rec = parse_message(body);
  if (!rec) return false;
  out = *rec;
  return true;
}

std::size_t segment_log::read_chunk(std::uint64_t base, std::uint64_t offset, std::size_t max_bytes,
                                    std::string& buffer) const {
  const auto it = segments_.find(base);
  if (it == segments_.end() || it->second.fd < 0 || offset >= it->second.committed) return 0;
  const std::size_t want =
      static_cast<std::size_t>(std::min<std::uint64_t>(max_bytes, it->second.committed - offset));
  const std::size_t at = buffer.size();
  buffer.resize(at + want);
  std::size_t done = 0;
  while (done < want) {
    const ssize_t n =
        ::pread(it->second.fd, buffer.data() + at + done, want - done, static_cast<off_t>(offset + done));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  buffer.resize(at + done);
  return done;
}

std::uint64_t segment_log::next_valid_frame(std::uint64_t base, std::uint64_t from) const {
  const auto it = segments_.find(base);
  if (it == segments_.end()) return from;
  const std::uint64_t end = it->second.committed;
  constexpr std::size_t chunk = 1 << 20;
  std::string buf;
  std::string record;
  for (std::uint64_t off = from + 1; off + record_header_size <= end;) {
    buf.clear();
    const std::size_t n = read_chunk(base, off, chunk, buf);
    if (n == 0) break;
    for (std::size_t i = 0;;) {
      const void* hit = ::memmem(buf.data() + i, buf.size() - i, record_magic, sizeof record_magic);
      if (hit == nullptr) break;
      const std::size_t pos = static_cast<std::size_t>(static_cast<const char*>(hit) - buf.data());
      const std::uint64_t candidate = off + pos;
      // Verify the whole frame, reading it again when it runs past this chunk.
      std::string_view body;
      std::size_t total = 0;
      frame_status st = check_frame(buf.data() + pos, buf.size() - pos, body, total);
      if (st == frame_status::incomplete && pos + record_header_size <= buf.size()) {
        std::uint32_t len = 0;
        std::memcpy(&len, buf.data() + pos + 4, 4);  // little-endian on the platforms ferryd runs on
        if (candidate + record_header_size + len <= end) {
          record.clear();
          read_chunk(base, candidate, record_header_size + len, record);
          st = check_frame(record.data(), record.size(), body, total);
        }
      }
      if (st == frame_status::ok) return candidate;
      i = pos + 1;
    }
    // Overlap by a header so a magic split across chunks is still found.
    off += n > record_header_size ? n - record_header_size : n;
  }
  return end;
}

segment_info* segment_log::segment_for(std::uint64_t seq) {
  auto it = segments_.upper_bound(seq);
  if (it == segments_.begin()) return nullptr;
  --it;
  return &it->second;
}

std::uint64_t segment_log::remove(std::uint64_t base, spare_segments* spares) {
  const auto it = segments_.find(base);
  if (it == segments_.end()) return 0;
  const std::uint64_t freed = it->second.committed;
  if (it->second.fd >= 0) ::close(it->second.fd);
  const fs::path path = dir_ / segment_file_name(base);
  if (spares != nullptr && spares->has_room()) {
    const fs::path spare = dir_ / spare_file_name(base);
    if (::rename(path.c_str(), spare.c_str()) == 0) {
      spares->add(spare);
      segments_.erase(it);
      return freed;
    }
    detail::logger().warn("cannot keep settled segment {} for reuse: {}; deleting it", path.string(),
                          errno_text(errno));
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT)
    detail::logger().warn("cannot delete settled segment {}: {}", path.string(), errno_text(errno));
  segments_.erase(it);
  return freed;
}

std::uint64_t segment_log::bytes() const noexcept {
  std::uint64_t total = 0;
  for (const auto& [base, s] : segments_) total += s.committed;
  return total;
}

}  // namespace ferry::storage
