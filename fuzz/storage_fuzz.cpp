// Fuzzes log recovery (storage/): the input becomes a queue's files, as ferryd's queue::recover reads them:
// two segment files, the consumer journal and the log_end checkpoint, written into a fresh directory, then
// the journal replayed, the log recovered and every record read back with a log_cursor.
//
// Input: frames (fuzz_support.hpp's split_frames) 0 control, 1 first segment (base 1), 2 second segment,
// 3 journal, 4 log_end. Control byte 0 bit 0: seal every frame (recompute checksums, so mutated bodies
// reach the record parsers); bytes 1-2: the second segment's base minus 1.
//
// Checks: nothing crashes and only ferry::error escapes (how storage reports an unreadable file); every
// record recovery or the cursor returns is a frame of the written bytes whose XXH3 checksum verifies and
// whose fields are the bytes it was parsed from; recovery returns increasing sequence numbers; and
// recovering the repaired files again returns the same records.
#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "consumer_store.hpp"
#include "ferry/error.hpp"
#include "ferry/log.hpp"
#include "fuzz_support.hpp"
#include "log_cursor.hpp"
#include "record.hpp"
#include "segment_log.hpp"
#include "stream.hpp"

namespace {

namespace fs = std::filesystem;
namespace storage = ferry::storage;
using ferry::fuzz::require;

std::uint64_t le(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Rewrites the checksum of every frame whose magic and length fit in `bytes`.
void seal(std::string& bytes) {
  for (std::size_t at = 0; at + storage::record_header_size <= bytes.size();) {
    if (std::memcmp(bytes.data() + at, storage::record_magic, 4) != 0) {
      ++at;
      continue;
    }
    const std::uint64_t n = le(bytes.data() + at + 4, 4);
    if (n == 0 || n > bytes.size() - at - storage::record_header_size) {
      ++at;
      continue;
    }
    const std::uint64_t h = XXH3_64bits(bytes.data() + at + storage::record_header_size, n);
    for (int i = 0; i < 8; ++i) bytes[at + 8 + i] = static_cast<char>(h >> (8 * i));
    at += storage::record_header_size + n;
  }
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  require(out.good(), "the fuzz target wrote its input file");
}

struct seen_record {
  std::uint64_t seq, segment, offset, size;
  bool operator==(const seen_record&) const = default;
};

// `rec` at `where` must be a whole, checksummed frame of what was written to that segment.
void check_record(const std::map<std::uint64_t, std::string>& written, const storage::message_record& rec,
                  const storage::record_location& where) {
  const auto it = written.find(where.segment);
  require(it != written.end(), "a record comes from a segment that was written");
  const std::string& file = it->second;
  require(where.size >= storage::record_header_size + storage::message_fixed_size &&
              where.offset <= file.size() && where.size <= file.size() - where.offset,
          "a record lies inside its segment's bytes");
  const char* frame = file.data() + where.offset;
  require(std::memcmp(frame, storage::record_magic, 4) == 0, "a record starts with the magic");
  const std::uint64_t body_size = le(frame + 4, 4);
  require(body_size == where.size - storage::record_header_size, "a record's size is its header's length");
  const char* body = frame + storage::record_header_size;
  require(XXH3_64bits(body, body_size) == le(frame + 8, 8), "a recovered record's checksum verifies");
  require(body[0] == static_cast<char>(storage::record_type::message), "a recovered record is a message");
  const std::uint64_t envelope = le(body + 4, 4);
  require(rec.seq == le(body + 8, 8) && rec.stored_at_us == static_cast<std::int64_t>(le(body + 16, 8)) &&
              std::memcmp(rec.id.bytes().data(), body + 24, 16) == 0 && rec.key_hash == le(body + 40, 8),
          "a record's fields are the bytes it was read from");
  require(envelope <= body_size - storage::message_fixed_size && rec.envelope.size() == envelope &&
              std::memcmp(rec.envelope.data(), body + storage::message_fixed_size, envelope) == 0 &&
              rec.payload.size() == body_size - storage::message_fixed_size - envelope &&
              std::memcmp(rec.payload.data(), body + storage::message_fixed_size + envelope,
                          rec.payload.size()) == 0,
          "a record's envelope and payload are the bytes it was read from");
}

// One recovery as queue::recover does it; returns the records in the order recovery gave them.
std::vector<seen_record> recover(const fs::path& dir, const std::map<std::uint64_t, std::string>& written) {
  storage::stream_config config;
  config.spare_segments = 0;
  storage::consumer_store store(dir / "journal");
  storage::stream log(dir, config);
  storage::recovery_report journal_report, log_report;
  store.replay(journal_report);
  std::vector<seen_record> seen;
  log.recover(log_report, now_us(),
              [&](const storage::message_record& rec, const storage::record_location& where) {
                check_record(written, rec, where);
                require(seen.empty() || rec.seq > seen.back().seq, "recovery returns increasing seqs");
                seen.push_back({rec.seq, where.segment, where.offset, where.size});
                (void)store.recovered(rec, where);
              });
  require(log_report.records == seen.size(), "the report counts the records recovery returned");
  log.continue_at(store.finish_recovery(log.next_seq()));
  require(seen.empty() || log.next_seq() > seen.back().seq, "the next seq follows every recovered one");
  // Delivery reads the log back from the start, stepping over damage.
  storage::log_cursor cursor(log.log());
  storage::log_cursor::entry e;
  for (std::size_t n = 0; cursor.peek(e); ++n) {
    require(n <= 2 * written.size() * 65536, "the cursor ends");
    check_record(written, e.record, e.where);
    cursor.advance();
  }
  return seen;
}

void fuzz_recovery(std::string_view input) {
  const auto frames = ferry::fuzz::split_frames(input, 5);
  if (frames.empty()) return;
  const std::string_view control = frames[0];
  const bool sealed = !control.empty() && (control[0] & 1) != 0;
  const std::uint64_t second_base = 1 + (control.size() >= 3 ? le(control.data() + 1, 2) : 1);
  auto part = [&](std::size_t i) {
    std::string bytes(i < frames.size() ? frames[i] : std::string_view());
    if (sealed) seal(bytes);
    return bytes;
  };
  ferry::fuzz::temp_dir dir("ferry-fuzz-storage");
  std::map<std::uint64_t, std::string> written;
  written[1] = part(1);
  if (frames.size() > 2 && second_base != 1) written[second_base] = part(2);
  for (const auto& [base, bytes] : written) write_file(dir.path() / storage::segment_file_name(base), bytes);
  if (frames.size() > 3) write_file(dir.path() / "journal", part(3));
  if (frames.size() > 4) write_file(dir.path() / "log_end", part(4));
  const std::vector<seen_record> first = recover(dir.path(), written);
  // Recovery cut torn tails: what it returned is still there, and recovering again returns the same.
  for (auto& [base, bytes] : written) {
    const fs::path file = dir.path() / storage::segment_file_name(base);
    require(fs::file_size(file) <= bytes.size(), "recovery never grows a segment");
    bytes.resize(fs::file_size(file));
  }
  require(recover(dir.path(), written) == first, "recovering the repaired files returns the same records");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (std::getenv("FERRY_LOG_LEVEL") == nullptr) ferry::set_log_level(ferry::log_level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    fuzz_recovery(ferry::fuzz::bytes_of(data, size));
  } catch (const ferry::error&) {
    // How the storage layer reports a file it cannot read or repair.
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ferry fuzz: exception other than ferry::error escaped recovery: %s\n", e.what());
    std::abort();
  }
  return 0;
}
