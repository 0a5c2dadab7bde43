#pragma once
// The append-only, segmented message log of one queue (docs/storage.md).
//
// A log directory holds segment files named by the sequence number of their first record
// (00000000000000000001.seg, ...). Records are framed by record.hpp. The owner's thread (ferryd's loop)
// owns a segment_log: it recovers the files at start-up, keeps per-segment counts, reads records back for
// delivery and deletes segments nobody needs any more. Appending is done by the commit thread through
// segment_writer, which reports back what became durable.
//
// Thread safety: one thread (the owner's).

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "file_io.hpp"
#include "record.hpp"

namespace ferry::storage {

class spare_segments;

/// Where a record lives.
struct record_location {
  std::uint64_t segment = 0;  // base seq of the segment
  std::uint64_t offset = 0;   // of the record header
  std::uint32_t size = 0;     // header + body
};

/// What recovery found in one directory.
struct recovery_report {
  std::uint64_t segments = 0;
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;
  std::uint64_t truncated_bytes = 0;  // torn tail cut off the last file
  std::uint64_t corrupt_regions = 0;  // damaged regions skipped in the middle
  std::uint64_t corrupt_bytes = 0;
  std::uint64_t lost_durable_bytes = 0;  // damage in data that was synced and confirmed (not a torn write)
  std::vector<std::string> problems;     // one line each, for the log
  std::vector<std::string> corruption;   // the subset about confirmed data: logged as errors
};

/// What follows the last valid frame of a scan.
enum class scan_tail {
  none,     ///< nothing: the data ends there
  unused,   ///< zeros, or a valid frame that belongs to the file's earlier life (a recycled segment)
  torn,     ///< a frame whose declared length runs past the data, with nothing live after it: a short write
  damaged,  ///< a complete frame that fails its checksum or framing, with nothing live after it
};

/// Says whether a valid frame belongs to the data being scanned. A frame that does not (`false`) ends the
/// scan: what follows is left over from the file's earlier life (a recycled segment holds older records).
using live_frame = std::function<bool(std::string_view body)>;

/// Walks the frames in `data`. Calls `on_record(body, offset, total)` for each valid, live frame and
/// `on_corrupt(offset, length)` for each damaged region followed by a live frame. Returns the offset just
/// past the last live frame; `tail` (when given) says what follows it. Zeros where a frame header should be
/// end the scan (unused space). Without `live` every valid frame is live.
std::size_t scan_frames(
    const char* data, std::size_t size,
    const std::function<void(std::string_view body, std::size_t offset, std::size_t total)>& on_record,
    const std::function<void(std::size_t offset, std::size_t length)>& on_corrupt,
    const live_frame& live = {}, scan_tail* tail = nullptr);

/// Reads a whole file through a memory-mapped view and scans it. A torn or damaged tail is truncated when
/// `repair_tail` (and reported either way). Unused space after the last live frame is left as it is for a
/// file written at explicit offsets (a segment, `keep_unused`), and truncated (when `repair_tail`) for one
/// that is appended to, where it would hide what comes after it.
///
/// `durable` is how many bytes of the file are known to have been synced and confirmed (0: unknown). A tail
/// that is damaged before that point is not a torn write: it is corruption of confirmed data, reported in
/// `report.corruption` (and `lost_durable_bytes`).
/// Throws ferry::error when the file cannot be read.
std::size_t scan_file(
    const std::filesystem::path& file, bool repair_tail, recovery_report& report,
    const std::function<void(std::string_view body, std::size_t offset, std::size_t total)>& on_record,
    const live_frame& live = {}, bool keep_unused = false, std::uint64_t durable = 0);

std::string segment_file_name(std::uint64_t base);

struct segment_info {
  std::uint64_t base = 0;
  std::uint64_t committed = 0;  // bytes durable and readable
  std::uint64_t records = 0;
  std::uint64_t last_seq = 0;
  std::int64_t last_stored_at_us = 0;
  int fd = -1;  // read-only descriptor
};

class segment_log {
 public:
  explicit segment_log(std::filesystem::path dir);
  ~segment_log();
  segment_log(const segment_log&) = delete;
  segment_log& operator=(const segment_log&) = delete;

  using visitor = std::function<void(const message_record&, const record_location&)>;
  /// Scans every segment in order, repairs a torn tail of the last one, and calls `visit` for every valid
  /// message record. Damage in the middle is skipped and reported, never silently. `durable_end` (when
  /// known) is the last checkpoint of the log's durable end: every segment before its `segment` is durable
  /// whole, that one up to `durable` bytes; damage there is reported as corruption of confirmed data.
  void recover(recovery_report& report, const visitor& visit,
               const std::optional<log_end_record>& durable_end = {});

  /// Records that `base` now holds `committed` durable bytes (a new segment is opened for reading).
  void committed(std::uint64_t base, std::uint64_t committed, std::uint64_t new_records,
                 std::uint64_t last_seq, std::int64_t last_stored_at_us);

  /// Reads one record. Returns false (and logs) when it cannot be read or is damaged.
  bool read(const record_location& where, std::string& buffer, message_record& out) const;
  /// Reads up to `max_bytes` of committed bytes of segment `base` starting at `offset` into `buffer`.
  /// Returns the number of bytes read (0 at the end of the committed part).
  std::size_t read_chunk(std::uint64_t base, std::uint64_t offset, std::size_t max_bytes,
                         std::string& buffer) const;

  /// The offset of the first valid frame in segment `base` after `from`, or the segment's committed size
  /// when there is none. Used to step over damage found while reading.
  [[nodiscard]] std::uint64_t next_valid_frame(std::uint64_t base, std::uint64_t from) const;

  /// The segment holding `seq`, or nullptr.
  segment_info* segment_for(std::uint64_t seq);
  [[nodiscard]] std::map<std::uint64_t, segment_info>& segments() noexcept { return segments_; }
  [[nodiscard]] const std::map<std::uint64_t, segment_info>& segments() const noexcept { return segments_; }
  /// Deletes segment `base`: closes it and unlinks the file, or renames it to a spare when `spares` has
  /// room. The directory entry changes durably with the next sync_directory. Returns the bytes freed.
  std::uint64_t remove(std::uint64_t base, spare_segments* spares = nullptr);

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }
  [[nodiscard]] std::uint64_t bytes() const noexcept;

 private:
  void open_for_reading(segment_info& s);
  std::filesystem::path dir_;
  std::map<std::uint64_t, segment_info> segments_;
};

}  // namespace ferry::storage
